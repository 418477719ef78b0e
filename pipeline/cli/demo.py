"""``camsdd demo``: every stage that exists, run for real on the embedded demo data.

Today that is: check the demo CamSDD tree; crawl the demo candidate pool as a
URL list served over loopback HTTP and fetch it with the Beam fetch pipeline;
embed, dedup and pseudo-label the candidates (measuring the pseudo-labels against
the pool's truth file); build both configs with ``tfds build camsdd`` (Beam),
print the build report, then load them back with ``tfds.load``; finally train the
mobile student with and without extra_pseudo, quantize both to full-INT8 TFLite and
evaluate them (``camsdd ablate``).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import http.server
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from etils import epath

from pipeline.cli import run as run_cli
from pipeline.cli import run_config
from pipeline.core import classes, pseudolabel_eval
from pipeline.core.errors import UserError
from pipeline.demo_data import CAMSDD_ROOT, CANDIDATES_DIR, DEMO_DIR
from pipeline.models import student
from pipeline.stages import options as beam_options
from pipeline.store import camsdd_layout

STEPS = 10
# The demo student: the offline-weights MobileNetV2 with a frozen backbone (43 training
# photos are too few to fine-tune it), trained long enough to fit them. DEMO_STUDENT is
# what DEMO_TRAINING's flags build (tests and benchmarks use it directly).
DEMO_STUDENT = student.StudentSpec("mobilenetv2", 1.0, (128, 192), "offline", True, 0.2)
DEMO_TRAINING = [
    "--freeze-backbone",
    "--epochs",
    "12",
    "--batch-size",
    "16",
    "--learning-rate",
    "3e-3",
    "--latency-runs",
    "10",
]


DEMO_CONFIG = DEMO_DIR / "demo.toml"
#: Where the demo config serves its candidate pool ([demo] port; candidates/urls.csv names it).
DEMO_URL_BASE = "http://127.0.0.1:8471"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        description="`camsdd run` on the demo config (pipeline/demo_data/demo.toml): crawls "
        "the demo candidate pool (62 real photos) as a URL list served on 127.0.0.1 and "
        "fetches it with the Beam fetch pipeline; embeds, dedups and pseudo-labels the "
        "candidates (printing the pseudo-labels' precision and coverage against the pool's "
        "truth file); builds the demo CamSDD (real photos, 19 of 30 classes) in both "
        "configs with `tfds build camsdd`; trains the mobile student with and without "
        "extra_pseudo, quantizes both to full-INT8 TFLite and evaluates them (camsdd "
        "ablate); builds the FiftyOne review dataset; writes WORK/report.html. A re-run "
        "skips what is up to date.",
    )
    run_cli.add_run_arguments(parser)
    parser.set_defaults(func=run, work="camsdd-demo")


def _step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def build_demo_tfds(data_dir: str, configs: tuple[str, ...] = ("official",)) -> None:
    """Builds the demo CamSDD in-process with the builder API on the local Beam runner.

    (The demo itself runs the ``tfds build`` command a user types; tests and benchmarks
    build in-process.) ``pseudo`` reads ``CAMSDD_EXTRA_MANIFEST`` as usual.
    """
    import apache_beam
    import tensorflow_datasets as tfds

    from tfds_camsdd.camsdd import camsdd_dataset_builder

    for config in configs:
        camsdd_dataset_builder.Builder(data_dir=data_dir, config=config).download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                manual_dir=os.fspath(DEMO_DIR),
                beam_options=apache_beam.options.pipeline_options.PipelineOptions(
                    [f"--runner={beam_options.LOCAL_RUNNER}"]
                ),
            )
        )


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


@contextlib.contextmanager
def serve_folder(folder: Path, port: int = 0) -> Iterator[str]:
    """Serves ``folder`` over HTTP on 127.0.0.1:``port`` (0: a free one); yields the base URL."""

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(QuietHandler, directory=os.fspath(folder))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as error:
        raise UserError(
            f"cannot serve {folder} on 127.0.0.1:{port} ({error.strerror}): stop the program "
            "using that port"
        ) from None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def write_demo_url_list(base_url: str, target: Path) -> Path:
    """The demo candidate pool as a URL list: url, label (the class queried) and credits."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(CANDIDATES_DIR / "candidates.csv", newline="") as source:
        rows = list(csv.DictReader(source))
    with open(DEMO_DIR / "ATTRIBUTION.csv", newline="") as source:
        credits = {r["path"]: r for r in csv.DictReader(source)}
    with open(target, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["url", "label", "license", "author", "page_url"])
        for row in rows:
            credit = credits[f"candidates/{row['file']}"]
            writer.writerow(
                [
                    f"{base_url}/{row['file']}",
                    row["label"],
                    credit["license"],
                    credit["author"],
                    credit["source_url"],
                ]
            )
    return target


def crawl_and_fetch(work: str, workers: int = 1) -> int:
    """Steps 2 and 3: the real crawl and fetch commands on the demo candidate pool."""
    from pipeline import cli

    with serve_folder(CANDIDATES_DIR) as base_url:
        _step(f"2/{STEPS} Crawl the demo candidate pool: a URL list served at {base_url}")
        url_list = write_demo_url_list(base_url, Path(work) / "inputs" / "demo-urls.csv")
        command = [
            "crawl",
            "--work",
            work,
            "--source",
            "urls",
            "--urls",
            os.fspath(url_list),
            "--name",
            "demo-urls",
            "--no-progress",
        ]
        print("$ camsdd " + " ".join(command), flush=True)
        code = cli.main(command)
        if code:
            return code

        _step(f"3/{STEPS} Fetch: download, validate, filter, resize to 576x384 (Apache Beam)")
        command = ["fetch", "--work", work, "--allow-private-addresses"]
        if workers > 1:
            command += [f"--direct_num_workers={workers}"]
        print("$ camsdd " + " ".join(command), flush=True)
        return cli.main(command)


def embed_and_dedup(work: str, workers: int = 1) -> int:
    """Steps 4 and 5: teacher embeddings, then dedup against the demo CamSDD."""
    from pipeline import cli

    beam = [f"--direct_num_workers={workers}"] if workers > 1 else []
    _step(
        f"4/{STEPS} Embed kept candidates and labeled images with the teacher (Beam RunInference)"
    )
    command = ["embed", "--work", work, "--reference", os.fspath(CAMSDD_ROOT), *beam]
    print("$ camsdd " + " ".join(command), flush=True)
    code = cli.main(command)
    if code:
        return code
    _step(f"5/{STEPS} Dedup: duplicates within the crawl and leaks of labeled images (Beam)")
    command = ["dedup", "--work", work, "--reference", os.fspath(CAMSDD_ROOT), *beam]
    print("$ camsdd " + " ".join(command), flush=True)
    return cli.main(command)


def pseudolabel_step(work: str, workers: int = 1) -> int:
    """Step 6: K-fold pseudo-labels, then their precision against the pool's truth file."""
    from pipeline import cli

    beam = [f"--direct_num_workers={workers}"] if workers > 1 else []
    _step(
        f"6/{STEPS} Pseudo-label: K-fold teacher heads, noise-aware thresholds, open-set "
        "rejection (Beam)"
    )
    truth = write_demo_truth(work, Path(work) / "inputs" / "demo-truth.csv")
    command = [
        "pseudolabel",
        "--work",
        work,
        "--labeled",
        os.fspath(CAMSDD_ROOT),
        "--truth",
        os.fspath(truth),
        *beam,
    ]
    print("$ camsdd " + " ".join(command), flush=True)
    code = cli.main(command)
    if code:
        return code
    print_measured(work)
    return 0


def print_measured(work: str) -> None:
    """Rules (a), (b), (c) against the pool's truth file, as the demo prints them."""
    measured = measure_pseudolabels(work)
    print(
        f"  against the demo truth file ({measured['candidates']} dedup-kept candidates, "
        f"{measured['on_topic']} of a CamSDD class):"
    )
    print(pseudolabel_eval.render(measured["rules"], measured["candidates"]))


def _demo_truth() -> dict[str, str]:
    with open(CANDIDATES_DIR / "truth.csv", newline="") as handle:
        return {Path(r["file"]).name: r["true_class"] for r in csv.DictReader(handle)}


def write_demo_url_truth(base_url: str, target: Path) -> Path:
    """The pool's true classes keyed by the URLs of ``write_demo_url_list`` (``--truth``)."""
    truth = _demo_truth()
    with open(CANDIDATES_DIR / "candidates.csv", newline="") as source:
        files = [row["file"] for row in csv.DictReader(source)]
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["url", "true_class"])
        for file in files:
            writer.writerow([f"{base_url}/{file}", truth[Path(file).name]])
    return target


def write_demo_truth(work: str, target: Path) -> Path:
    """The pool's truth file keyed by the URLs the crawl recorded (for the report's curves)."""
    from pipeline.store import manifest

    truth = _demo_truth()
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["url", "true_class"])
        for row in manifest.read_stage(work, "fetch").select(["url"]).to_pylist():
            writer.writerow([row["url"], truth[row["url"].rsplit("/", 1)[-1]]])
    return target


def student_step(work: str) -> int:
    """Step 9: train, quantize and evaluate the student with and without extra_pseudo."""
    from pipeline import cli

    _step(
        f"9/{STEPS} Train the mobile student with and without extra_pseudo, quantize to "
        "full INT8, evaluate the .tflite files (LiteRT)"
    )
    command = ["ablate", "--work", work, *DEMO_TRAINING]
    print("$ camsdd " + " ".join(command), flush=True)
    return cli.main(command)


def measure_pseudolabels(work: str) -> dict:
    """Rules (a), (b), (c) (and the classic K-fold rule) on the dedup-kept demo candidates,
    scored with truth.csv; with the curves' areas."""
    from pipeline.core import pseudolabel
    from pipeline.models import teacher
    from pipeline.stages import pseudolabel as pseudolabel_stage
    from pipeline.store import embedding_cache as embeddings
    from pipeline.store import manifest

    spec = teacher.DEFAULT_TEACHER
    labeled = pseudolabel_stage.labeled_training(os.fspath(CAMSDD_ROOT), work, spec)
    rows = [r for r in manifest.read_stage(work, "dedup").to_pylist() if r["status"] == "kept"]
    rows.sort(key=lambda r: r["key"])
    vectors = embeddings.vectors_for(work, spec, [r["sha256"] for r in rows])
    truth = _demo_truth()
    true_class = pseudolabel.class_indices([truth[r["url"].rsplit("/", 1)[-1]] for r in rows])
    results = pseudolabel_eval.compare_rules(
        labeled.vectors,
        labeled.labels,
        np.stack([vectors[r["sha256"]] for r in rows]),
        true_class,
        pseudolabel.class_indices([r["query_class"] for r in rows]),
        curves=True,
    )
    return {
        "candidates": len(rows),
        "on_topic": int((true_class >= 0).sum()),
        "rules": results,
    }


def check_tree() -> None:
    """The demo CamSDD tree, as ``camsdd check`` sees it."""
    scan = camsdd_layout.scan_camsdd(CAMSDD_ROOT)
    print(scan.summary())
    covered = [c for c in classes.CLASS_FOLDERS if scan.splits["train"].class_counts()[c]]
    print(f"  classes with training images: {len(covered)} of {classes.NUM_CLASSES}")
    print("  (a mini CamSDD: fewer images than the official 9,897/600/600, as the build says)")


def demo_hooks(config: run_config.RunConfig) -> dict:
    """What the demo adds to `camsdd run`: its pool served on loopback while crawling and
    fetching, the pseudo-labels measured against the truth file, the build loaded back."""
    served: list[str] = []

    def serve(stack: contextlib.ExitStack) -> None:
        if not served:
            served.append(stack.enter_context(
                serve_folder(Path(config.demo["serve"]), config.demo["port"])
            ))  # fmt: skip
            print(f"  (serving {config.demo['serve']} at {served[0]})", flush=True)

    def build(work: str) -> None:
        load_back(os.fspath(epath.Path(work) / "tfds"))

    def closing(work: str) -> None:
        print(
            "\nUse it from Python:\n"
            "  import tensorflow_datasets as tfds, tfds_camsdd\n"
            "  ds = tfds.load('camsdd/pseudo', split='train+extra_pseudo', "
            f"data_dir='{epath.Path(work) / 'tfds'}')\n"
            f"Review the labels: camsdd review --work {work} --labeled {CAMSDD_ROOT}"
        )

    return {"serve": serve, "pseudolabel": print_measured, "build": build, "closing": closing}


def load_back(data_dir: str) -> None:
    """Every split back through ``tfds.load``: uint8 (384, 576, 3) images, labels named."""
    import tensorflow_datasets as tfds

    import tfds_camsdd  # noqa: F401  (registers the builder)

    builder = tfds.builder("camsdd/official", data_dir=data_dir)
    label_names = builder.info.features["label"].names
    for split in ("train", "validation", "test"):
        dataset = tfds.load("camsdd/official", split=split, data_dir=data_dir)
        count = 0
        for example in dataset.as_numpy_iterator():
            image = example["image"]
            if image.dtype.name != "uint8" or image.shape != (384, 576, 3):
                raise RuntimeError(
                    f"{example['id'].decode()} loaded as {image.dtype} {image.shape}"
                )
            if count == 0:
                first = example
            count += 1
        print(
            f"  tfds.load {split:<10} {count:>3} examples, each uint8 {image.shape}; first: "
            f"{first['id'].decode()} -> label {first['label']} ({label_names[first['label']]})"
        )
    both = tfds.load("camsdd/pseudo", split="train+extra_pseudo", data_dir=data_dir)
    extra = tfds.load("camsdd/pseudo", split="extra_pseudo", data_dir=data_dir)
    print(f"  tfds.load camsdd/pseudo train+extra_pseudo: {sum(1 for _ in both)} examples")
    for example in extra.take(3).as_numpy_iterator():
        print(
            f"    {example['id'].decode()}: {label_names[example['label']]} "
            f"(confidence {example['confidence']:.2f}, {example['license'].decode()}, "
            f"by {example['author'].decode()[:40]})"
        )


def run(args: argparse.Namespace) -> int:
    _step(f"Check the demo CamSDD tree ({CAMSDD_ROOT})")
    check_tree()
    config = run_config.load(os.fspath(DEMO_CONFIG))
    return run_cli.run_pipeline(config, args.work, args.start, args.until)
