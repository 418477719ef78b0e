"""``camsdd review``: build or update the review dataset, then serve the FiftyOne App.

::

  W/reference + W/pseudolabel (+ oof.parquet) + W/dedup + W/embed   (read, nothing recomputed)
      → records → FiftyOne dataset on W/review/db (own mongod), updated in place
      → saved views → App on 127.0.0.1:PORT → Brain fields from the cached vectors
        (computed while the App already serves; before exit with --no-app)
  camsdd review export → W/review/corrections.parquet → next pseudolabel and build
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import time
from typing import Any

from labeling_ui import db
from labeling_ui import records as rec
from pipeline.core.dedup import DEFAULT_MIN_COSINE
from pipeline.store import workdir

STAGE = "review"


def _check_port(port: int) -> None:
    if not db.port_is_free(port):
        raise db.ReviewError(
            f"port {port} on 127.0.0.1 is in use by another program (or another App): "
            "stop it or choose another --port"
        )


def build(
    work: str, labeled_root: str, loaded: tuple | None = None, brain: bool = True
) -> dict[str, Any]:
    """Builds or updates the dataset (the database must be running); returns a summary.

    ``loaded`` is what ``records.load`` returned, if the caller has it already. With
    ``brain=False`` the Brain fields are left for ``add_brain`` (the App can open first).
    """
    from labeling_ui import dataset as review_dataset
    from labeling_ui import views

    records, vectors, model_id = loaded or rec.load(work, labeled_root)
    started = time.monotonic()
    dataset = review_dataset.open_dataset()
    counts = review_dataset.sync(dataset, records)
    slugs = views.save(dataset)
    summary = {
        "dataset": dataset,
        "samples": len(dataset),
        "official": len([r for r in records if r["split"] in rec.OFFICIAL_SPLITS]),
        "candidates": len([r for r in records if r["split"] not in rec.OFFICIAL_SPLITS]),
        "teacher": model_id,
        "views": slugs,
        "seconds": round(time.monotonic() - started, 1),
        "records": records,
        "vectors": vectors,
        **counts,
    }
    if brain:
        add_brain(summary)
    return summary


def add_brain(summary: dict[str, Any]) -> float:
    """The Brain fields, from the records' cached vectors; returns the seconds taken."""
    from labeling_ui import dataset as review_dataset

    started = time.monotonic()
    dataset = summary["dataset"]
    order = {record["key"]: i for i, record in enumerate(summary["records"])}
    in_dataset_order = summary["vectors"][[order[key] for key in dataset.values("key")]]
    review_dataset.compute_brain(dataset, in_dataset_order, DEFAULT_MIN_COSINE)
    summary["brain_seconds"] = round(time.monotonic() - started, 1)
    return summary["brain_seconds"]


def run(work: str, labeled_root: str, port: int = 5151, app: bool = True) -> int:
    work = workdir.absolute(work)
    if app:
        _check_port(port)  # before anything starts: a busy port hangs FiftyOne for a minute
    loaded = rec.load(work, labeled_root)  # a work dir with nothing to review fails here
    db.isolate(work)
    with workdir.stage_lock(work, STAGE), db.ReviewDatabase(work):
        summary = build(work, labeled_root, loaded, brain=not app)
        print(
            f"review dataset {summary['dataset'].name}: {summary['samples']} samples "
            f"({summary['official']} official, {summary['candidates']} candidates; "
            f"{summary['added']} added, {summary['updated']} updated, {summary['removed']} "
            f"removed) in {summary['seconds']} s; database {os.path.join(work, 'review', 'db')}"
        )
        if not app:
            print(f"  Brain fields in {summary['brain_seconds']} s")
            print(f"  open it: camsdd review --work {work} --labeled {labeled_root}")
            return 0
        return _serve(summary, port)


def _serve(summary: dict[str, Any], port: int) -> int:
    import fiftyone as fo

    _check_port(port)
    with contextlib.redirect_stdout(io.StringIO()):  # FiftyOne's banner and ssh advice
        session = fo.launch_app(
            summary["dataset"], remote=True, address="127.0.0.1", port=port, auto=False
        )
    url = f"http://127.0.0.1:{port}/datasets/{summary['dataset'].name}"
    print(f"  App: {url}  (Ctrl-C stops the App and the database)")
    for slug in summary["views"][:5]:
        print(f"    {url}?view={slug}")
    print(f"    … and one view per class: {url}?view=class-<class folder>", flush=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        # The App is open meanwhile: at 20,000 samples the Brain takes minutes. Its views
        # (near-duplicates, leaks, mistakenness) fill in when this line appears.
        print(f"  Brain fields in {add_brain(summary)} s", flush=True)
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("  stopping the App and the database", file=sys.stderr, flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        with contextlib.redirect_stdout(io.StringIO()):
            session.close()
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def export(work: str) -> int:
    """``camsdd review export``: the dataset's decisions into the corrections file."""
    work = workdir.absolute(work)
    if not os.path.isdir(os.path.join(work, "review", "db")):
        raise db.ReviewError(
            f"no review database in {os.path.join(work, 'review')}: run `camsdd review "
            f"--work {work} --labeled CAMSDD_ROOT` first"
        )
    db.isolate(work)
    with workdir.stage_lock(work, STAGE), db.ReviewDatabase(work):
        import fiftyone as fo

        from labeling_ui import dataset as review_dataset
        from labeling_ui import export as exporter

        if not fo.dataset_exists(review_dataset.DATASET):
            raise db.ReviewError(f"the review database in {work}/review holds no dataset yet")
        location, rows = exporter.export(work, fo.load_dataset(review_dataset.DATASET))
    counts = {a: sum(r["action"] == a for r in rows) for a in (rec.ACCEPT, rec.REJECT, rec.RELABEL)}
    print(
        f"review export: {len(rows)} corrections ({counts[rec.ACCEPT]} accept, "
        f"{counts[rec.REJECT]} reject, {counts[rec.RELABEL]} relabel) -> {location}"
    )
    print(f"  they take effect at the next `camsdd pseudolabel --work {work} …` and build")
    return 0
