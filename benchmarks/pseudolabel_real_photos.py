"""Real-photo protocol for the pseudo-label rules, built only from the demo's own photos.

    .venv/bin/python benchmarks/pseudolabel_real_photos.py [--cache EMBEDDINGS.npz]

Teacher: the offline EfficientNet-Lite0 (the default teacher), same decode and resize as
the embed stage; embeddings are cached in --cache (computed on the first run, ~1-2 min).
Labeled set: the demo CamSDD's 43 training photos (19 classes, most with fewer than K=4
images). Candidates with known truth (pipeline/demo_data/candidates/truth.csv):
  pool A: the 62 crawled candidates (on-topic, near-duplicates of labeled photos,
          off-topic photos of no CamSDD class);
  pool B: pool A plus the 24 held-out validation and test photos (their labels known).
Rules as in benchmarks/pseudolabel_synthetic.py: (a) argmax, (b) one global threshold
(default: the pooled OOF threshold; curve: every threshold), classic (c) (the named
baseline, before issue 16) and (c) (noise-aware, open-set, few-shot; its two-knob curve).
Areas over precision 0.90-0.995 and the c >= b check as there.
"""

from __future__ import annotations

import argparse
import collections
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core import classes, images, open_set, pseudolabel  # noqa: E402
from pipeline.core import pseudolabel_eval as ev  # noqa: E402
from pipeline.demo_data import CAMSDD_ROOT, CANDIDATES_DIR  # noqa: E402


def photos() -> list[dict]:
    rows = []
    for split in ("training", "validation", "test"):
        for folder in sorted((CAMSDD_ROOT / split).iterdir()):
            if folder.is_dir():
                for f in sorted(p for p in folder.iterdir() if p.suffix.lower() == ".jpg"):
                    c = classes.class_index(folder.name)
                    rows.append(dict(split=split, path=str(f), label=c, query=-1, kind="labeled"))
    with open(CANDIDATES_DIR / "truth.csv", newline="") as handle:
        truth = {r["file"]: r for r in csv.DictReader(handle)}
    with open(CANDIDATES_DIR / "candidates.csv", newline="") as handle:
        for r in csv.DictReader(handle):
            t = truth[r["file"]]
            rows.append(
                dict(
                    split="pool",
                    path=str(CANDIDATES_DIR / r["file"]),
                    label=classes.class_index(t["true_class"]) if t["true_class"] else -1,
                    query=classes.class_index(r["label"]) if r["label"] else -1,
                    kind=t["kind"],
                )
            )
    return rows


def embed(rows: list[dict], cache: Path) -> np.ndarray:
    if cache.exists():
        data = np.load(cache)
        if list(data["path"]) == [r["path"] for r in rows]:
            return data["x"]
    from pipeline.models import teacher

    model = teacher.build_teacher()
    out = []
    for i in range(0, len(rows), 16):
        batch = []
        for r in rows[i : i + 16]:
            im = images.to_rgb(images.open_image(Path(r["path"]).read_bytes()))
            if im.size != images.TARGET_SIZE:
                im = images.fit_to_size(im)
            batch.append(np.asarray(im, np.uint8))
        out.append(np.asarray(model(np.stack(batch), training=False)))
    x = np.concatenate(out).astype(np.float32)
    np.savez(cache, x=x, path=np.array([r["path"] for r in rows]))
    return x


def evaluate(name, x, y, kfold, single, cand, truth, query, kinds) -> None:
    config = pseudolabel.DEFAULT_CONFIG
    on = truth >= 0
    p1 = single.predict_proba(cand)
    classic = pseudolabel.calibrate_thresholds(kfold.oof, y, config)
    b_tau = max(classic.pooled if classic.pooled is not None else np.inf, config.threshold_floor)
    b_kept = p1.max(1) >= b_tau
    d_old = pseudolabel.decide(kfold.predict_proba(cand), classic.tau, query, config)
    rule, noise = open_set.fit_rule(x, y, kfold, cand, query, config)
    d = rule.score(cand, query)
    rows = {
        "(a) argmax, no filter": (p1.argmax(1), np.ones(len(truth), bool)),
        f"(b) global threshold {b_tau:.3f} (default)": (p1.argmax(1), b_kept),
        "(c, classic) K-fold rule, default (baseline)": (d_old.label, d_old.kept),
        "(c) K-fold rule, default": (d.label, d.kept),
    }
    print(f"== pool {name}: {len(truth)} candidates, {int(on.sum())} with a class")
    model = rule.model
    print(
        f"   OOF top-1 {pseudolabel.top_k_accuracy(kfold.oof, y):.3f}; few-shot classes "
        f"{int(model.thresholds.few_shot.sum())}; cleanlab modeled {int(noise.modeled.sum())} "
        f"classes, flagged {int(noise.issue.sum())}; δ={model.ood.delta:.2f}, held-out loss "
        f"{model.ood.id_loss:.3f}, proxies rejected "
        + ", ".join(f"{k} {v:.2f}" for k, v in model.ood.proxy_rejected.items())
    )
    for label, (pred, kept) in rows.items():
        r = pseudolabel.precision_coverage(pred, truth, kept, on)
        print(
            f"   {label:<46} kept {r['kept']:>3}, right {r['correct']:>3}, precision "
            f"{r['precision']:.3f}, coverage {r['coverage']:.3f}"
        )
    c_def = pseudolabel.precision_coverage(d.label, truth, d.kept, on)
    b_points = ev.threshold_sweep(p1.argmax(1), p1.max(1), truth, on)
    path = open_set.tau_path(kfold.oof, y, noise, model, config)
    c_points = [
        *ev.rule_c_points(d.label, d.confidence, d.reason, truth, on, path, query),
        *ev.relaxed_points(rule, cand, query, truth, on, path),
        (c_def["precision"], c_def["coverage"]),
    ]
    cb, cc = ev.envelope(b_points), ev.envelope(c_points)
    diff = cc - cb
    best_b = max((c for p, c in b_points if p >= c_def["precision"] - 1e-12), default=0.0)
    print(f"   (b) best coverage at precision >= (c) default: {best_b:.3f}")
    print(
        f"   areas 0.90-0.995: b {ev.area(cb):.3f}, c {ev.area(cc):.3f}; c >= b everywhere: "
        f"{bool((diff >= -1e-12).all())} (min {diff.min():+.3f} at p={ev.P_GRID[diff.argmin()]})"
    )
    reasons = collections.Counter(r for r in d.reason if r is not None)
    print(f"   (c) drops: {dict(reasons)}")
    for kind in ("on_topic", "near_duplicate", "labeled_split", "off_topic"):
        m = kinds == kind
        if m.any():
            right = d.kept & (d.label == truth)
            b_right = b_kept & (p1.argmax(1) == truth)
            print(
                f"     {kind:<15} n={int(m.sum()):>2}: (c) kept {int(d.kept[m].sum()):>2} "
                f"(right {int(right[m].sum()):>2}), out_of_distribution "
                f"{int((d.reason[m] == pseudolabel.OUT_OF_DISTRIBUTION).sum()):>2}; (b) kept "
                f"{int(b_kept[m].sum()):>2} (right {int(b_right[m].sum())})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default="/tmp/camsdd-demo-photo-embeddings.npz")
    args = parser.parse_args()
    rows = photos()
    x_all = embed(rows, Path(args.cache))
    split = np.array([r["split"] for r in rows])
    label = np.array([r["label"] for r in rows], np.int64)
    query = np.array([r["query"] for r in rows], np.int64)
    kind = np.array([r["kind"] for r in rows])
    train = split == "training"
    x, y = x_all[train], label[train]
    kfold = pseudolabel.train_kfold(x, y)
    single = pseudolabel.fit_head(x, y)
    pool = split == "pool"
    held = np.isin(split, ["validation", "test"])
    for name, m in (
        ("A (crawled pool)", pool),
        ("B (crawled pool + validation/test)", pool | held),
    ):
        kinds = np.where(held[m], "labeled_split", kind[m])
        evaluate(name, x, y, kfold, single, x_all[m], label[m], query[m], kinds)


if __name__ == "__main__":
    main()
