"""Precision–coverage of rules (a), (b), (c) on controlled synthetic embeddings, by label noise.

    .venv/bin/python benchmarks/pseudolabel_synthetic.py [--noise 0 0.05 0.15]
        [--scenario original balanced open] [--seed 0] [--out FIGURE.png]

Like cleanlab's tests: Gaussian classes with known truth. Labeled set: 30 classes ×
60 embeddings (64-d) with a label-noise level (each flip goes to another class). Candidates:
3,000 in-distribution (truth known); 600 *off-class* (searched for one class, showing
another: truth is what they show); 900 *out-of-distribution* (scenes of none of the 30
classes, truth none), half far away, half between two classes. A kept label is right when
it equals the truth; coverage = right kept labels / candidates that have a class.

Scenarios: *original* = the generator this benchmark used before issue 16 (5% noise,
flips may land on the same class); *balanced* = the same recipe with an exact noise level;
*open* = balanced, but class 29 has no labeled image, class 28 one, class 27 three (< K)
and class 26 six (their candidates still come).

Rules and their curves (every operating point a rule reaches by its own knobs):
  (a) one head on all labeled data, argmax on everything: one point;
  (b) that head with one global threshold, every distinct threshold swept; its default
      is the pooled OOF-calibrated threshold;
  (c) the K-fold rule (noise-aware τ_c, open-set, few-shot): target precision 0.30→0.995
      with no floor, then the floor 0→1 at target 0.98 (the default lies on it);
  classic (c), the named baseline: the K-fold rule before issue 16, same two knobs.
cov_r(p) = the most coverage rule r keeps at precision ≥ p; area = mean of cov_r(p) over
p in [0.90, 0.995]; "c ≥ b" = cov_c(p) ≥ cov_b(p) at every grid p (the shortfall is also
given in candidates).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core import open_set, pseudolabel  # noqa: E402
from pipeline.core import pseudolabel_eval as ev  # noqa: E402

KIND_ID, KIND_OFF, KIND_FAR, KIND_BETWEEN = 0, 1, 2, 3
OPEN = {29: 0, 28: 1, 27: 3, 26: 6}
CLASSIC_TARGETS = np.r_[np.linspace(0.30, 0.99, 70), 0.995, 1.0]
FLOORS = np.r_[np.linspace(0.0, 0.95, 96), np.linspace(0.951, 1.0, 50)]


def original(seed: int = 0, dim: int = 64):
    """The generator used before issue 16 (5% noise; a flip may keep the class)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((30, dim)) * 1.6
    y = np.repeat(np.arange(30), 60)
    x = centers[y] + rng.standard_normal((len(y), dim))
    noisy = np.where(rng.random(len(y)) < 0.05, rng.integers(0, 30, len(y)), y)
    shows = rng.integers(0, 30, 3600)
    cand = centers[shows] + rng.standard_normal((3600, dim))
    query = shows.copy()
    query[3000:] = (shows[3000:] + rng.integers(1, 30, 600)) % 30  # off-class: wrong query
    far = rng.standard_normal((450, dim)) * 1.6 + rng.standard_normal(dim) * 1.6
    a, b = rng.integers(0, 30, 450), rng.integers(0, 30, 450)
    between = (centers[a] + centers[b]) / 2 + rng.standard_normal((450, dim))
    cand = np.concatenate([cand, far, between]).astype(np.float32)
    truth = np.concatenate([shows, np.full(900, -1)])
    query = np.concatenate([query, rng.integers(0, 30, 900)])
    kind = np.r_[np.zeros(3000, int), np.ones(600, int), np.full(450, 2), np.full(450, 3)]
    return x.astype(np.float32), noisy, y, cand, truth, query, kind


def synthetic(seed: int = 0, noise: float = 0.05, support: dict | None = None, dim: int = 64):
    """x, noisy labels, true labels, candidates, truth, query, kind; exact noise level.

    A flipped label takes the class of another labeled image (redrawn until it
    differs): uniform over classes when they are balanced, and a one-image class is
    not flooded with wrong labels.
    """
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((30, dim)) * 1.6
    counts = np.full(30, 60)
    for c, n in (support or {}).items():
        counts[c] = n
    y = np.repeat(np.arange(30), counts)
    x = centers[y] + rng.standard_normal((len(y), dim))
    flip = rng.random(len(y)) < noise
    other = y[rng.integers(0, len(y), len(y))]
    while (same := flip & (other == y)).any():
        other[same] = y[rng.integers(0, len(y), same.sum())]
    noisy = np.where(flip, other, y)
    shows = rng.integers(0, 30, 3600)
    cand = centers[shows] + rng.standard_normal((3600, dim))
    query = shows.copy()
    query[3000:] = (shows[3000:] + rng.integers(1, 30, 600)) % 30
    far = rng.standard_normal((450, dim)) * 1.6 + rng.standard_normal(dim) * 1.6
    a = rng.integers(0, 30, 450)
    b = (a + rng.integers(1, 30, 450)) % 30
    between = (centers[a] + centers[b]) / 2 + rng.standard_normal((450, dim))
    cand = np.concatenate([cand, far, between]).astype(np.float32)
    truth = np.concatenate([shows, np.full(900, -1)])
    query = np.concatenate([query, rng.integers(0, 30, 900)])
    kind = np.r_[np.zeros(3000, int), np.ones(600, int), np.full(450, 2), np.full(450, 3)]
    return x.astype(np.float32), noisy, y, cand, truth, query, kind


def point(label, truth, kept, on_topic) -> tuple[float, float]:
    r = pseudolabel.precision_coverage(label, truth, kept, on_topic)
    return r["precision"], r["coverage"]


def run(scenario: str, noise: float, seed: int = 0) -> dict:
    if scenario == "original":
        x, y, ytrue, cand, truth, query, kind = original(seed)
    else:
        support = OPEN if scenario == "open" else None
        x, y, ytrue, cand, truth, query, kind = synthetic(seed, noise, support)
    on = truth >= 0
    config = pseudolabel.DEFAULT_CONFIG
    started = time.perf_counter()
    single = pseudolabel.fit_head(x, y)
    p1 = single.predict_proba(cand)
    kfold = pseudolabel.train_kfold(x, y, config)
    head_probs = kfold.predict_proba(cand)
    heads_s = time.perf_counter() - started

    # (a), (b)
    a = point(p1.argmax(1), truth, np.ones(len(truth), bool), on)
    b_points = ev.threshold_sweep(p1.argmax(1), p1.max(1), truth, on)
    classic = pseudolabel.calibrate_thresholds(kfold.oof, y, config)
    b_tau = max(classic.pooled if classic.pooled is not None else np.inf, config.threshold_floor)
    b_def = point(p1.argmax(1), truth, p1.max(1) >= b_tau, on)

    # classic (c): its default, target swept (floor 0), then floor swept at 0.98
    d_old = pseudolabel.decide(head_probs, classic.tau, query, config)
    old_def = point(d_old.label, truth, d_old.kept, on)
    old_points = []
    for target in CLASSIC_TARGETS:
        cfg = pseudolabel.PseudolabelConfig(target_precision=float(target), threshold_floor=0.0)
        tau = pseudolabel.calibrate_thresholds(kfold.oof, y, cfg).tau
        d = pseudolabel.decide(head_probs, tau, query, cfg)
        old_points.append(point(d.label, truth, d.kept, on))
    tau0 = pseudolabel.calibrate_thresholds(
        kfold.oof, y, pseudolabel.PseudolabelConfig(threshold_floor=0.0)
    ).tau
    agree = pseudolabel.decide(head_probs, np.zeros(30), query, config).agree
    old_points += [
        point(
            d_old.label, truth, agree & (d_old.confidence >= np.maximum(tau0[d_old.label], f)), on
        )
        for f in FLOORS
    ]

    # (c): calibrated with the candidates as the pool (all of them: fewer than 10k)
    started = time.perf_counter()
    rule, noise_est = open_set.fit_rule(x, y, kfold, cand, query, config)
    fit_s = time.perf_counter() - started
    d = rule.score(cand, query)
    c_def = point(d.label, truth, d.kept, on)
    path = open_set.tau_path(kfold.oof, y, noise_est, rule.model, config)
    c_points = [
        *ev.rule_c_points(d.label, d.confidence, d.reason, truth, on, path, query),
        *ev.relaxed_points(rule, cand, query, truth, on, path),
        c_def,
    ]

    curves = {
        "a": ev.envelope([a]),
        "b": ev.envelope(b_points),
        "c": ev.envelope(c_points),
        "c_classic": ev.envelope(old_points),
    }
    diff = curves["c"] - curves["b"]
    b_at_c = max((cov for prec, cov in b_points if prec >= c_def[0] - 1e-12), default=0.0)
    flipped = y != ytrue
    out = {
        "scenario": scenario,
        "noise": noise,
        "a": a,
        "b_def": b_def,
        "b_tau": b_tau,
        "old_def": old_def,
        "c_def": c_def,
        "c_kept": int(d.kept.sum()),
        "b_at_c_precision": b_at_c,
        "curves": curves,
        "points": {"b": b_points, "c": c_points, "c_classic": old_points},
        "areas": {k: ev.area(v) for k, v in curves.items()},
        "c_ge_b": bool((diff >= -1e-12).all()),
        "worst": (float(diff.min()), float(ev.P_GRID[int(np.argmin(diff))])),
        "worst_n": int(round(-min(float(diff.min()), 0.0) * on.sum())),
        "ood": rule.model.ood,
        "reasons": {r: int((d.reason == r).sum()) for r in pseudolabel.REASONS},
        "kept_by_kind": np.bincount(kind[d.kept], minlength=4).tolist(),
        "wrong_by_kind": np.bincount(kind[d.kept & (d.label != truth)], minlength=4).tolist(),
        "flag_precision": float(flipped[noise_est.issue].mean()) if noise_est.issue.any() else None,
        "flag_recall": float(noise_est.issue[flipped].mean()) if flipped.any() else None,
        "heads_s": heads_s,
        "fit_s": fit_s,
    }
    if scenario == "open":
        out["few_shot"] = {
            c: (
                int((d.kept & (truth == c) & (d.label == c)).sum()),
                int((truth == c).sum()),
                int((d.kept & (d.label == c) & (truth != c)).sum()),
            )
            for c in OPEN
        }
    return out


def fmt(p: tuple[float, float]) -> str:
    return f"P {p[0]:.3f} cov {p[1]:.3f}"


def report(r: dict) -> str:
    o = r["ood"]
    lines = [
        f"== {r['scenario']}, label noise {r['noise']:.0%}",
        f"  (a) argmax, no filter              {fmt(r['a'])}",
        f"  (b) global τ={r['b_tau']:.3f} (pooled OOF)     {fmt(r['b_def'])}",
        f"  (c, classic) K-fold rule, default  {fmt(r['old_def'])}",
        f"  (c) K-fold rule, default           {fmt(r['c_def'])} ({r['c_kept']} kept); "
        f"(b) at >= that precision: cov {r['b_at_c_precision']:.3f}",
        f"  OOD δ={o.delta:.2f}; held-out labeled rejected {o.id_loss:.3f}; proxies rejected "
        + ", ".join(f"{k} {v:.3f}" for k, v in o.proxy_rejected.items()),
        f"  cleanlab flags: precision {r['flag_precision']}, recall {r['flag_recall']}",
        "  areas (mean coverage, precision 0.90-0.995): "
        + ", ".join(f"{k} {v:.3f}" for k, v in r["areas"].items()),
        f"  c >= b at every precision: {r['c_ge_b']} (min cov_c - cov_b {r['worst'][0]:+.4f} "
        f"at p={r['worst'][1]}" + (f" = {r['worst_n']} candidate(s))" if r["worst_n"] else ")"),
    ]
    grid = ev.P_GRID
    for p in (0.90, 0.95, 0.98, 0.99, 0.995):
        i = int(np.argmin(np.abs(grid - p)))
        lines.append(
            f"    cov at p>={p:.3f}: "
            + "  ".join(f"{k} {v[i]:.3f}" for k, v in r["curves"].items() if k != "a")
        )
    reasons = {k: v for k, v in r["reasons"].items() if v}
    lines.append(
        f"  (c) drops: {reasons}; kept by kind id/off/far/between {r['kept_by_kind']}, "
        f"wrong {r['wrong_by_kind']}"
    )
    if "few_shot" in r:
        lines.append(
            "  classes with 6/3/1/0 labeled images (kept right / candidates / kept wrong): "
            + ", ".join(f"{c}: {v}" for c, v in r["few_shot"].items())
        )
    lines.append(
        f"  time: heads {r['heads_s']:.1f} s, cleanlab + prototypes + δ {r['fit_s']:.1f} s"
    )
    return "\n".join(lines)


def figure(results: list[dict], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(results))
    rows = -(-len(results) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.0 * rows), squeeze=False)
    for ax in axes.flat[len(results) :]:
        ax.axis("off")
    for ax, r in zip(axes.flat, results, strict=False):
        for key, color, name in (
            ("b", "tab:blue", "(b) global threshold"),
            ("c_classic", "tab:gray", "classic (c)"),
            ("c", "tab:red", "(c) K-fold rule"),
        ):
            ax.step(
                r["curves"][key],
                ev.P_GRID,
                where="post",
                color=color,
                label=f"{name}, area {r['areas'][key]:.3f}",
            )
        ax.plot([r["c_def"][1]], [r["c_def"][0]], "rD", label="(c) default")
        ax.plot([r["b_def"][1]], [r["b_def"][0]], "bo", label="(b) default")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0.895, 1.0)
        ax.set_title(f"{r['scenario']}, noise {r['noise']:.0%}", fontsize=9)
        ax.set_xlabel("coverage")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower left")
    for row in axes:
        row[0].set_ylabel("precision of kept labels")
    fig.suptitle("Synthetic: coverage reached at each precision (0.90-0.995)")
    fig.tight_layout()
    fig.savefig(out, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.05, 0.15])
    parser.add_argument("--scenario", nargs="+", default=["original", "balanced", "open"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", default=str(Path(__file__).with_name("pseudolabel_precision_coverage.png"))
    )
    args = parser.parse_args()
    results = []
    for scenario in args.scenario:
        for noise in [0.05] if scenario == "original" else args.noise:
            r = run(scenario, noise, args.seed)
            print(report(r), flush=True)
            results.append(r)
    print("\nsummary (areas over precision 0.90-0.995; default (c) vs (b) at its precision)")
    print(
        "| scenario | noise | (c) default P / cov | (b) cov at that P | classic (c) default "
        "P / cov | area a | area b | area c | area classic c | c >= b everywhere |"
    )
    print("| --- | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | --- |")
    for r in results:
        verdict = "yes" if r["c_ge_b"] else f"no ({r['worst_n']} cand. at p={r['worst'][1]})"
        print(
            f"| {r['scenario']} | {r['noise']:.0%} | {r['c_def'][0]:.3f} / {r['c_def'][1]:.3f} | "
            f"{r['b_at_c_precision']:.3f} | {r['old_def'][0]:.3f} / {r['old_def'][1]:.3f} | "
            f"{r['areas']['a']:.3f} | {r['areas']['b']:.3f} | {r['areas']['c']:.3f} | "
            f"{r['areas']['c_classic']:.3f} | {verdict} |"
        )
    ok = [r["c_ge_b"] for r in results]
    print(
        f"c >= b at every precision in {sum(ok)} of {len(ok)} settings; default precision "
        f">= 0.95 in {sum(r['c_def'][0] >= 0.95 for r in results)} of {len(results)}; default "
        f"coverage >= (b) at that precision in "
        f"{sum(r['c_def'][1] >= r['b_at_c_precision'] - 1e-12 for r in results)} of "
        f"{len(results)}"
    )
    figure(results, args.out)
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
