"""Build throughput of the camsdd builder against tfds.folder_dataset.ImageFolder.

    .venv/bin/python benchmarks/bench_build.py [--images 1200] [--repeats 3]

Makes one CamSDD-shaped folder of real 576x384 JPEGs (the demo photos, copied
under new names until there are --images files; 83% train, the rest split
evenly between validation and test), then times, in this one process:

  camsdd, 1 process     tfds build of our Beam builder, in-process FnApiRunner
  camsdd, 2 processes   the same with direct_running_mode=multi_processing
  ImageFolder->TFRecord tfds.ImageFolder(folder) written with
                        tfds.dataset_builders.store_as_tfds_dataset: the same
                        job (folder in, TFRecord dataset out) done the ImageFolder way
  ImageFolder read pass one decoding pass over ImageFolder.as_dataset: what
                        ImageFolder does instead of a build, on every epoch

Each row is the median of --repeats runs, examples per second of wall time
(TensorFlow and Beam are imported before any timing starts).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import apache_beam as beam  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402
from absl import logging  # noqa: E402

from pipeline.demo_data import CAMSDD_ROOT  # noqa: E402
from pipeline.stages import options as beam_options  # noqa: E402
from tfds_camsdd.camsdd import camsdd_dataset_builder  # noqa: E402


def make_folder(root: Path, total: int) -> dict[str, int]:
    """Copies demo photos into root/{training,validation,test}/<class>/."""
    counts = {"training": round(total * 0.83)}
    counts["validation"] = (total - counts["training"]) // 2
    counts["test"] = total - counts["training"] - counts["validation"]
    for split, count in counts.items():
        sources = sorted((CAMSDD_ROOT / split).rglob("*.jpg"))
        for i in range(count):
            source = sources[i % len(sources)]
            target = root / split / source.parent.name / f"{i:05d}_{source.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    return counts


def build_camsdd(manual_dir: Path, data_dir: Path, workers: int) -> None:
    options = beam.options.pipeline_options.PipelineOptions(
        ["--" + o for o in beam_options.local_options(workers).split(",")]
    )
    builder = camsdd_dataset_builder.Builder(data_dir=str(data_dir))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=str(manual_dir), beam_options=options
        )
    )


def build_image_folder(manual_dir: Path, data_dir: Path) -> None:
    folder = tfds.ImageFolder(str(manual_dir / "CamSDD"))
    tfds.dataset_builders.store_as_tfds_dataset(
        name="camsdd_image_folder",
        version="1.0.0",
        features=folder.info.features,
        split_datasets={s: folder.as_dataset(split=s) for s in folder.info.splits},
        data_dir=str(data_dir),
    )


def read_image_folder(manual_dir: Path, data_dir: Path) -> None:
    del data_dir  # nothing is written
    folder = tfds.ImageFolder(str(manual_dir / "CamSDD"))
    for split in folder.info.splits:
        for _ in folder.as_dataset(split=split).prefetch(8):
            pass


def timed(fn, manual_dir: Path, scratch: Path, repeats: int) -> float:
    seconds = []
    for i in range(repeats):
        data_dir = scratch / f"out-{fn.__name__}-{i}"
        start = time.perf_counter()
        fn(manual_dir, data_dir)
        seconds.append(time.perf_counter() - start)
        shutil.rmtree(data_dir, ignore_errors=True)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1200, help="images in the folder")
    parser.add_argument("--repeats", type=int, default=3, help="runs per method (median)")
    args = parser.parse_args()
    logging.set_verbosity(logging.ERROR)  # the mini folder's count warnings are expected

    with tempfile.TemporaryDirectory(prefix="camsdd-bench-") as tmp:
        scratch = Path(tmp)
        manual_dir = scratch / "manual"
        counts = make_folder(manual_dir / "CamSDD", args.images)
        print(f"folder: {args.images} real 576x384 JPEGs {counts}, {os.cpu_count()} CPUs")
        rows = [
            ("camsdd, 1 process", lambda m, d: build_camsdd(m, d, 1)),
            ("camsdd, 2 processes", lambda m, d: build_camsdd(m, d, 2)),
            ("ImageFolder->TFRecord", build_image_folder),
            ("ImageFolder read pass", read_image_folder),
        ]
        rates = {}
        for name, fn in rows:
            fn.__name__ = name.split(",")[0].replace(" ", "_").replace(">", "")
            seconds = timed(fn, manual_dir, scratch, args.repeats)
            rates[name] = args.images / seconds
            print(f"  {name:<24} {seconds:7.2f} s  {rates[name]:8.1f} examples/s", flush=True)

    baseline = rates["ImageFolder->TFRecord"]
    best = max(rates["camsdd, 1 process"], rates["camsdd, 2 processes"])
    print(f"ratio camsdd (best) / ImageFolder->TFRecord: {best / baseline:.2f}x")
    print(
        "ratio camsdd (1 process) / ImageFolder->TFRecord: "
        f"{rates['camsdd, 1 process'] / baseline:.2f}x"
    )
    print(
        f"ratio camsdd (best) / ImageFolder read pass: {best / rates['ImageFolder read pass']:.2f}x"
    )


if __name__ == "__main__":
    main()
