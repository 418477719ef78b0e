"""Cost of fetch → embed → dedup → pseudolabel as the pool grows: is it linear?

    .venv/bin/python benchmarks/bench_scale.py [--sizes 10000,30000,100000] [--workers 2]

For each size N, a synthetic pool of N distinct small JPEGs (300×200: a class colour
under a per-image random low-frequency luminance pattern and fine grain; 1% of them
re-encoded near-copies of another, planted for dedup) is served by
``python -m http.server`` on loopback, listed in a URL CSV with each image's class,
and run through the real CLI, one process per stage as a user runs it:
``camsdd crawl --source urls``, ``fetch --allow-private-addresses``,
``embed --reference``, ``dedup --reference``, ``pseudolabel --labeled``, each on the
DirectRunner with ``--direct_num_workers W`` (multi_processing).

The teacher is a small deterministic ``.keras`` model (``--teacher F.keras``, a 32×48
view → 8×12 average pool → Dense + ReLU to 128-d), so embed runs its real Beam
RunInference path. Like a real backbone's pooled ReLU features its vectors are
non-negative with a large shared mean and cluster by class: what fills the buckets of
random-hyperplane LSH unless the vectors are centred. The labeled set is a
CamSDD-shaped folder from the same generator (30 classes × 20/3/3 images).

Per stage: wall seconds, items/s and peak RSS of the stage's whole process tree
(psutil, polled every 0.2 s). The cost ratio is total seconds at the largest size
over the smallest, against the size ratio (linear: 100k/10k ≤ 11).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core.classes import CLASS_FOLDERS  # noqa: E402

CAMSDD = Path(sys.executable).parent / "camsdd"
WIDTH, HEIGHT = 300, 200
TEACHER_INPUT = "32x48"
STAGES = ["fetch", "embed", "dedup", "pseudolabel"]
LABELED_SPLITS = {"training": 20, "validation": 3, "test": 3}


def class_colours(seed: int = 7) -> np.ndarray:
    """(30, 3) mean RGB of each class."""
    return np.random.default_rng(seed).uniform(30, 225, (len(CLASS_FOLDERS), 3))


def synthetic_image(label: int, seed: int, colours: np.ndarray) -> Image.Image:
    """A distinct image of class ``label``: its colour, a random luminance pattern, grain."""
    rng = np.random.default_rng(seed)
    pattern = rng.normal(0, 30, (8, 12)).astype(np.float32)
    low = np.asarray(Image.fromarray(pattern, "F").resize((WIDTH, HEIGHT), Image.BICUBIC))
    tint = colours[label] + rng.normal(0, 8, 3)
    pixels = tint[None, None, :] + low[..., None] + rng.normal(0, 5, (HEIGHT, WIDTH, 1))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def write_pool(folder: Path, n: int, colours: np.ndarray, port: int, url_csv: Path) -> int:
    """N JPEGs in ``folder`` and their URL list; returns how many are planted near-copies."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    labels = rng.integers(0, len(CLASS_FOLDERS), n)
    copies = set(rng.choice(n, n // 100, replace=False).tolist())
    rows = []
    for i in range(n):
        source = i if i not in copies else int(rng.integers(0, n))
        path = folder / f"p{i:06d}.jpg"
        if not path.exists():
            image = synthetic_image(int(labels[source]), 1_000_000 + source, colours)
            if source != i:  # a near-copy: a little brighter, encoded at another quality
                image = Image.eval(image, lambda v: min(255, v + 4))
            image.save(path, "JPEG", quality=85 if source != i else 70)
        rows.append((f"http://127.0.0.1:{port}/{path.name}", CLASS_FOLDERS[labels[source]]))
    with open(url_csv, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["url", "label"])
        writer.writerows(rows)
    return len(copies)


def write_labeled(root: Path, colours: np.ndarray) -> None:
    """A CamSDD-shaped folder of synthetic images (seeds apart from any pool's)."""
    seed = 0
    for split, per_class in LABELED_SPLITS.items():
        for label, name in enumerate(CLASS_FOLDERS):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(per_class):
                seed += 1
                synthetic_image(label, seed, colours).save(folder / f"{j}.jpg", "JPEG", quality=90)


def write_teacher(path: Path, dim: int = 64, seed: int = 3) -> None:
    """A deterministic tiny backbone as a ``.keras`` file: (h, w, 3) 0..255 → 2·``dim`` ReLU.

    Half the features see the mean colour (the class), half the luminance pattern through
    a zero-sum convolution (the image); positive biases give every vector the large
    shared mean that pooled ReLU features have.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    from keras import layers

    height, width = (int(v) for v in TEACHER_INPUT.split("x"))
    inputs = keras.Input((height, width, 3))
    x = layers.AveragePooling2D(4)(layers.Rescaling(1 / 64.0)(inputs))  # 8×12×3
    colour_dense, pattern_conv, pattern_dense = (
        layers.Dense(dim, activation="relu"),
        layers.Conv2D(4, 3, padding="valid"),
        layers.Dense(dim, activation="relu"),
    )
    colour = colour_dense(layers.GlobalAveragePooling2D()(x))
    pattern = layers.Flatten()(pattern_conv(x))
    outputs = layers.Concatenate()([colour, pattern_dense(pattern)])
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    kernel = rng.normal(0, 1, (3, 3, 3, 4))
    kernel -= kernel.mean(axis=(0, 1), keepdims=True)  # blind to a constant colour
    fan_in = int(pattern.shape[-1])
    colour_dense.set_weights(
        [rng.normal(0, 2.5, (3, dim)).astype(np.float32), rng.uniform(0, 1, dim).astype(np.float32)]
    )
    pattern_conv.set_weights([kernel.astype(np.float32), np.zeros(4, np.float32)])
    pattern_dense.set_weights(
        [
            rng.normal(0, 6 / np.sqrt(fan_in), (fan_in, dim)).astype(np.float32),
            rng.uniform(1, 3, dim).astype(np.float32),
        ]
    )
    model.save(path)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_stage(args: list[str], log: Path) -> tuple[float, int]:
    """Runs ``camsdd ARGS``; (wall seconds, peak RSS in bytes of its process tree)."""
    started = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen([str(CAMSDD), *args], stdout=out, stderr=subprocess.STDOUT)
        parent = psutil.Process(process.pid)
        peak = 0
        while process.poll() is None:
            try:
                tree = [parent, *parent.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.2)
    seconds = time.perf_counter() - started
    if process.returncode:
        raise SystemExit(
            f"camsdd {' '.join(args[:3])} failed; see {log}:\n{log.read_text()[-3000:]}"
        )
    return seconds, peak


def outcome(work: Path, stage: str, log: Path) -> str:
    """What the stage reports: its kept count, or its summary line (embed)."""
    report = work / stage / "report.json"
    if report.exists() and "kept" in (data := json.loads(report.read_text())):
        return f"kept {data['kept']:,}"
    lines = [line for line in log.read_text().splitlines() if line.startswith(stage)]
    return lines[-1][:140] if lines else ""


def run_size(n: int, base: Path, labeled: Path, teacher: Path, workers: int) -> dict:
    pool = base / f"pool-{n}"
    work = base / f"work-{n}"
    urls = base / f"urls-{n}.csv"
    shutil.rmtree(work, ignore_errors=True)  # every stage runs from scratch
    port = free_port()
    started = time.perf_counter()
    planted = write_pool(pool, n, class_colours(), port, urls)
    print(f"N={n:,}: pool written in {time.perf_counter() - started:.0f} s", flush=True)
    beam = ["--direct_num_workers", str(workers)] if workers > 1 else []
    teacher_args = ["--teacher", str(teacher), "--teacher-input", TEACHER_INPUT]
    commands = {
        "fetch": ["fetch", "--work", str(work), "--allow-private-addresses", *beam],
        "embed": ["embed", "--work", str(work), "--reference", str(labeled), *teacher_args, *beam],
        "dedup": ["dedup", "--work", str(work), "--reference", str(labeled), *teacher_args, *beam],
        "pseudolabel": [
            "pseudolabel",
            "--work",
            str(work),
            "--labeled",
            str(labeled),
            *teacher_args,
            *beam,
        ],
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "http.server",
            str(port),
            "--bind",
            "127.0.0.1",
            "--directory",
            str(pool),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows = {}
    try:
        time.sleep(1.0)
        seconds, peak = run_stage(
            ["crawl", "--work", str(work), "--source", "urls", "--urls", str(urls)],
            base / f"crawl-{n}.log",
        )
        print(f"  crawl {seconds:7.1f} s", flush=True)
        for stage in STAGES:
            seconds, peak = run_stage(commands[stage], base / f"{stage}-{n}.log")
            rows[stage] = {"seconds": seconds, "per_second": n / seconds, "peak_rss": peak}
            print(
                f"  {stage:<11} {seconds:7.1f} s {n / seconds:8.1f} items/s "
                f"peak {peak / 2**20:6.0f} MiB  {outcome(work, stage, base / f'{stage}-{n}.log')}",
                flush=True,
            )
    finally:
        server.terminate()
        server.wait()
    rows["planted"] = planted
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,30000,100000")
    parser.add_argument("--workers", type=int, default=2, help="--direct_num_workers per stage")
    parser.add_argument("--keep", help="folder to keep pools and work dirs in (else a temp dir)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as temporary:
        base = Path(args.keep or temporary)
        base.mkdir(parents=True, exist_ok=True)
        labeled = base / "labeled"
        if not labeled.exists():
            write_labeled(labeled, class_colours())
        teacher = base / "fake_teacher.keras"
        if not teacher.exists():
            write_teacher(teacher)
        print(
            f"sizes {sizes}, {args.workers} Beam worker(s), load average "
            f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}",
            flush=True,
        )
        results = {n: run_size(n, base, labeled, teacher, args.workers) for n in sizes}
        print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("\n| stage | " + " | ".join(f"{n:,}: s, items/s, peak MiB" for n in sizes) + " |")
    print("| --- |" + " ---: |" * len(sizes))
    for stage in STAGES:
        cells = [
            f"{results[n][stage]['seconds']:.1f}, {results[n][stage]['per_second']:.0f}, "
            f"{results[n][stage]['peak_rss'] / 2**20:.0f}"
            for n in sizes
        ]
        print(f"| {stage} | " + " | ".join(cells) + " |")
    totals = {n: sum(results[n][s]["seconds"] for s in STAGES) for n in sizes}
    print("| **total** | " + " | ".join(f"{totals[n]:.1f}" for n in sizes) + " |")
    small, large = sizes[0], sizes[-1]
    for stage in STAGES:
        ratio = results[large][stage]["seconds"] / results[small][stage]["seconds"]
        print(f"{stage}: {large:,}/{small:,} cost ratio {ratio:.2f} (size ratio {large / small:g})")
    print(
        f"total cost ratio {large:,}/{small:,}: {totals[large] / totals[small]:.2f} "
        f"(size ratio {large / small:g}; linear means at most about that)"
    )


if __name__ == "__main__":
    main()
