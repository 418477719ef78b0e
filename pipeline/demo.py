"""``camsdd demo``: every stage that exists, run for real on the embedded demo data.

Today that is: check the demo CamSDD tree, build it with ``tfds build camsdd``
(Beam), print the build report, then load it back with ``tfds.load``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from etils import epath

from pipeline import beam_options, camsdd_layout, classes
from pipeline.demo_data import CAMSDD_ROOT, DEMO_DIR


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run every stage on the embedded demo data",
        description="Builds the demo CamSDD (real photos, 19 of 30 classes) with "
        "`tfds build camsdd` on a local Beam runner, prints the split counts and the "
        "build report, and loads the result with tfds.load.",
    )
    parser.add_argument(
        "--work",
        default="camsdd-demo",
        help="work directory shared by all stages (default: ./camsdd-demo); the "
        "TFDS data goes to WORK/tfds",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="local Beam worker processes (default 1: in process; more were slower in "
        "benchmarks/README.md, each imports TensorFlow)",
    )
    parser.set_defaults(func=run)


def _step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def tfds_build_command(manual_dir: str, data_dir: str, workers: int = 1) -> list[str]:
    """The ``tfds build`` call a user would type, run with this interpreter."""
    return [
        sys.executable,
        "-m",
        "tensorflow_datasets.scripts.cli.main",
        "build",
        "camsdd",
        "--imports",
        "tfds_camsdd",
        "--manual_dir",
        manual_dir,
        "--data_dir",
        data_dir,
        "--overwrite",
        f"--beam_pipeline_options={beam_options.local_options(workers)}",
    ]


def run(args: argparse.Namespace) -> int:
    data_dir = epath.Path(args.work) / "tfds"
    started = time.monotonic()

    _step(f"1/3 Check the demo CamSDD tree ({CAMSDD_ROOT})")
    scan = camsdd_layout.scan_camsdd(CAMSDD_ROOT)
    print(scan.summary())
    covered = [c for c in classes.CLASS_FOLDERS if scan.splits["train"].class_counts()[c]]
    print(f"  classes with training images: {len(covered)} of {classes.NUM_CLASSES}")
    print("  (a mini CamSDD: fewer images than the official 9,897/600/600, as the build says)")

    _step("2/3 Build it: tfds build camsdd (Apache Beam, local runner)")
    command = tfds_build_command(os.fspath(DEMO_DIR), os.fspath(data_dir), args.workers)
    print("$ tfds " + " ".join(command[3:]), flush=True)  # what a user would type
    env = {"TF_CPP_MIN_LOG_LEVEL": "2", **os.environ}
    result = subprocess.run(command, env=env, stdout=subprocess.DEVNULL)
    if result.returncode:
        print(
            f"error: tfds build failed (exit {result.returncode}); see its messages above.",
            file=sys.stderr,
        )
        return result.returncode

    _step("3/3 Load it back: tfds.load('camsdd', ...)")
    import tensorflow_datasets as tfds

    import tfds_camsdd  # noqa: F401  (registers the builder)
    from tfds_camsdd.camsdd import build_report

    builder = tfds.builder("camsdd", data_dir=os.fspath(data_dir))
    print(build_report.render_text(build_report.load(builder.data_dir)))
    print(
        "  split counts:",
        ", ".join(
            f"{name}={info.num_examples}" for name, info in sorted(builder.info.splits.items())
        ),
    )
    label_names = builder.info.features["label"].names
    for split in ("train", "validation", "test"):
        dataset = tfds.load("camsdd", split=split, data_dir=os.fspath(data_dir))
        count = 0
        for example in dataset.as_numpy_iterator():
            image = example["image"]
            if image.dtype.name != "uint8" or image.shape != (384, 576, 3):
                print(
                    f"error: {example['id'].decode()} loaded as {image.dtype} {image.shape}",
                    file=sys.stderr,
                )
                return 1
            if count == 0:
                first = example
            count += 1
        print(
            f"  {split:<10} {count:>3} examples, each uint8 {image.shape}; first: "
            f"{first['id'].decode()} -> label {first['label']} ({label_names[first['label']]})"
        )

    print(
        f"\nDone in {time.monotonic() - started:.0f} s. Use it from Python:\n"
        "  import tensorflow_datasets as tfds, tfds_camsdd\n"
        f"  ds = tfds.load('camsdd', split='train', data_dir='{data_dir}')"
    )
    return 0
