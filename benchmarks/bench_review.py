"""Review dataset at scale: records to a served App with thumbnails, and the Brain.

    .venv/bin/python benchmarks/bench_review.py [--samples 1000 20000]

For each size, in a fresh work dir with its own mongod (what `camsdd review` starts),
synthetic records shaped like `labeling_ui.records.load`'s (10% official images, 60%
kept pseudo-labels, 30% dropped candidates; every file a real 576x384 demo photo;
1280-d unit vectors around 30 class centres) go through the command's own steps:

  dataset      review.build(brain=False): the records into the dataset (insert or
               update in place) and the saved views
  App          fo.launch_app on 127.0.0.1 until /fiftyone answers, then Debian's
               chromium (Playwright) from page load to the first drawn thumbnail
  ready        dataset + App: when a reviewer can start
  Brain        review.add_brain: uniqueness, representativeness, near-duplicates,
               leaky splits, mistakenness (the App already serves meanwhile)
  re-run       review.build again on the same records (update in place)

Baseline, in the same run on the same records: FiftyOne's own path, `add_samples`
of `fo.Sample` objects plus `compute_metadata` (what a dataset built the usual way
costs before the App can show it), on a second dataset in the same database.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from labeling_ui import db
from labeling_ui import records as rec
from pipeline.core import classes
from pipeline.demo_data import CAMSDD_ROOT, DEMO_DIR

CHROMIUM = "/usr/bin/chromium"


def photos() -> list[str]:
    found = sorted(str(p) for p in CAMSDD_ROOT.rglob("*.jpg"))
    found += sorted(str(p) for p in (DEMO_DIR / "candidates" / "images").rglob("*.jpg"))
    return found


def synthetic(count: int, seed: int = 0) -> tuple[list[dict], np.ndarray]:
    """Records and vectors shaped like ``records.load``'s, over the real demo photos."""
    rng = np.random.default_rng(seed)
    files = photos()
    centres = rng.normal(size=(classes.NUM_CLASSES, 1280)).astype(np.float32)
    records, labels = [], rng.integers(0, classes.NUM_CLASSES, count)
    for i, label in enumerate(labels):
        folder = classes.CLASS_FOLDERS[label]
        base = {"filepath": files[i % len(files)], "sha256": f"{i:064x}", "key": f"syn/{i:06d}"}
        kind = i % 10
        if kind == 0:
            split = ("train", "train", "validation", "test")[(i // 10) % 4]
            records.append({
                **base, "split": split, "outcome": split, "source": "camsdd",
                "ground_truth": folder, "pipeline_label": folder, "confidence": 1.0,
                "license": "CC BY-NC-SA 4.0",
                **({"oof_label": folder, "oof_confidence": 0.8, "self_confidence": 0.8,
                    "label_issue": False} if split == "train" else {}),
            })  # fmt: skip
            continue
        kept = kind < 7
        confidence = float(rng.uniform(0.6, 1.0) if kept else rng.uniform(0.1, 0.6))
        soft = np.full(classes.NUM_CLASSES, (1 - confidence) / 29)
        soft[label] = confidence
        records.append({
            **base, "split": rec.EXTRA if kept else rec.CANDIDATE,
            "outcome": "kept" if kept else "low_confidence", "source": "flickr",
            "pipeline_label": folder, "pseudo": folder, "confidence": confidence,
            "soft_label": soft.tolist(), "head_labels": [folder] * 4, "threshold": 0.6,
            "margin": confidence - 0.6, "url": f"https://example.org/{i}.jpg",
            "page_url": f"https://example.org/{i}", "license": "CC BY 2.0",
            "author": f"author {i % 97}", "query_class": folder,
        })  # fmt: skip
    vectors = centres[labels] + rng.normal(scale=1.5, size=(count, 1280)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return records, vectors


def first_thumbnail(url: str, samples: int) -> float:
    """Seconds from page load to the first drawn thumbnail (with the count right)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        origin = url.split("/datasets/")[0]
        context.route(
            "**/*", lambda r: r.continue_() if r.request.url.startswith(origin) else r.abort()
        )
        page = context.new_page()
        started = time.monotonic()
        page.goto(url)
        page.wait_for_function(
            "n => { const e = document.querySelector('[data-cy=\"entry-counts\"]');"
            " return e && e.innerText.replace(/,/g, '').trim().startsWith(n + ' sample'); }",
            arg=str(samples),
            timeout=300_000,
        )
        page.wait_for_selector('[data-cy="looker"] canvas[canvas-loaded="true"]', timeout=300_000)
        seconds = time.monotonic() - started
        browser.close()
    return seconds


def wait_for(url: str, timeout: float = 300) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout} s")


def measure(count: int) -> dict[str, float]:
    records, vectors = synthetic(count)
    with tempfile.TemporaryDirectory(prefix="bench-review-") as work:
        db.isolate(work)
        with db.ReviewDatabase(work):
            import fiftyone as fo

            from labeling_ui import review

            row: dict[str, float] = {}
            started = time.monotonic()
            summary = review.build(work, "", (records, vectors, "synthetic"), brain=False)
            row["dataset"] = time.monotonic() - started

            port = db.free_port()
            started = time.monotonic()
            session = fo.launch_app(
                summary["dataset"], remote=True, address="127.0.0.1", port=port, auto=False
            )
            wait_for(f"http://127.0.0.1:{port}/fiftyone")
            row["App server"] = time.monotonic() - started
            url = f"http://127.0.0.1:{port}/datasets/{summary['dataset'].name}"
            row["first thumbnail"] = first_thumbnail(url, count)
            row["ready"] = row["dataset"] + row["App server"] + row["first thumbnail"]
            row["Brain"] = review.add_brain(summary)
            session.close()

            started = time.monotonic()
            review.build(work, "", (records, vectors, "synthetic"), brain=False)
            row["re-run (update)"] = time.monotonic() - started

            # FiftyOne's usual path on the same samples: add_samples, then compute_metadata
            # reads every image (ours takes the size fetch already knows).
            from labeling_ui.dataset import to_sample

            started = time.monotonic()
            baseline = fo.Dataset("baseline")
            baseline.add_samples([to_sample(r) for r in records], progress=False)
            baseline.compute_metadata(overwrite=True, progress=False)
            row["baseline: add_samples + compute_metadata"] = time.monotonic() - started
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[1000, 20000])
    args = parser.parse_args(argv)
    if not os.path.exists(CHROMIUM):
        sys.exit(f"error: {CHROMIUM} is missing: `make browser` installs it")
    if len(args.samples) > 1:  # one process per size: FiftyOne keeps one client per process
        for count in args.samples:
            code = subprocess.run([sys.executable, __file__, "--samples", str(count)]).returncode
            if code:
                return code
        return 0
    count = args.samples[0]
    row = measure(count)
    print(f"\n{count:,} samples")
    for name, seconds in row.items():
        print(f"  {name:<42} {seconds:7.1f} s")
    ours = row["dataset"]
    base = row["baseline: add_samples + compute_metadata"]
    print(f"  dataset vs baseline: {base / ours:.2f}x faster "
          f"(ready in {row['ready']:.1f} s; goal at 20,000: under 60 s)", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
