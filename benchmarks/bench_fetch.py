"""End-to-end fetch throughput from a loopback HTTP server, by concurrent downloads.

A separate process serves the demo candidate pool (real photos, 59 files,
WebP/JPEG/PNG up to 1603×1080) with ``python -m http.server``; a URL list
repeats each file under different query strings (so each URL is a new
candidate). Each setting runs the real ``camsdd crawl`` + Beam fetch pipeline
(in-process local runner) into a fresh work directory. The baseline is the
same pipeline with one download at a time (``--threads 1``).

  python benchmarks/bench_fetch.py [--candidates 590] [--threads 1 4 16]
"""

from __future__ import annotations

import argparse
import csv
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from crawlers import lists
from pipeline.demo_data import CANDIDATES_DIR
from pipeline.stages import crawl
from pipeline.stages import fetch as fetch_stage
from pipeline.stages import fetch_record as fetch


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--candidates", type=int, default=590)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "http.server",
            str(port),
            "--bind",
            "127.0.0.1",
            "--directory",
            str(CANDIDATES_DIR),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)
        with open(CANDIDATES_DIR / "candidates.csv") as handle:
            files = [row["file"] for row in csv.DictReader(handle)]
        results = {}
        for threads in args.threads:
            with tempfile.TemporaryDirectory() as work:
                url_list = Path(work) / "urls.txt"
                url_list.write_text(
                    "".join(
                        f"http://127.0.0.1:{port}/{files[i % len(files)]}?copy={i}\n"
                        for i in range(args.candidates)
                    )
                )
                source = lists.UrlListSource(str(url_list))
                crawl.crawl(source, source.queries(), work, progress=False)
                settings = fetch.FetchSettings(work=work, allow_private_addresses=True)
                started = time.perf_counter()
                report = fetch_stage.run_fetch(settings, threads=threads)
                seconds = time.perf_counter() - started
                assert report["reconciled"] and report["inputs"] == args.candidates
                results[threads] = args.candidates / seconds
                print(
                    f"  threads={threads:<3} {args.candidates} candidates in {seconds:6.1f} s "
                    f"= {results[threads]:6.1f} candidates/s ({report['kept']} kept, "
                    f"{report['megabytes_downloaded']} MB)",
                    flush=True,
                )
        base = results[min(results)]
        for threads, value in results.items():
            print(f"ratio threads={threads} / threads={min(results)}: {value / base:.2f}x")
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
