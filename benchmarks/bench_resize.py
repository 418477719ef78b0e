"""Decode + resize throughput of the fetch resizer against plain PIL, in one run, one core.

Inputs: 12-megapixel (4000×3000) JPEGs made from real photos of the demo data
(upscaled, then JPEG q90, as a phone camera would write them).

  ours      pipeline.core.resizer.normalize: header checks, reduced-scale (DCT) decode,
            EXIF transpose, RGB, 3:2 crop + LANCZOS to 576×384, quality filters,
            JPEG q95 encode, sha256 and perceptual hash
  baseline  plain PIL: Image.open + convert("RGB") + resize((576, 384), LANCZOS)
  limit     PIL draft() at the target + load only: the reduced-decode ceiling

  python benchmarks/bench_resize.py [--images 24] [--repeats 3]
"""

from __future__ import annotations

import argparse
import glob
import io
import os
import statistics
import time

from PIL import Image

from pipeline.core import resizer
from pipeline.demo_data import CANDIDATES_DIR, DEMO_DIR


def make_inputs(count: int) -> list[bytes]:
    paths = sorted(glob.glob(str(CANDIDATES_DIR / "images" / "*")))
    paths += sorted(glob.glob(str(DEMO_DIR / "CamSDD" / "training" / "*" / "*.jpg")))
    inputs = []
    for path in paths:
        image = Image.open(path).convert("RGB")
        if min(image.size) < 300:
            continue
        big = image.resize((4000, 3000), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        big.save(buffer, format="JPEG", quality=90)
        inputs.append(buffer.getvalue())
        if len(inputs) == count:
            break
    return inputs


def ours(data: bytes) -> None:
    resizer.normalize(data, resizer.FilterConfig(min_sharpness=0, min_chroma=-1))


def baseline(data: bytes) -> None:
    Image.open(io.BytesIO(data)).convert("RGB").resize((576, 384), Image.Resampling.LANCZOS)


def limit(data: bytes) -> None:
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (576, 432))
    image.load()


def rate(function, inputs: list[bytes], repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        for data in inputs:
            function(data)
        rates.append(len(inputs) / (time.perf_counter() - started))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    inputs = make_inputs(args.images)
    print(f"{len(inputs)} JPEGs of 4000x3000 (12 MP), median of {args.repeats} runs, one core")
    results = {
        name: rate(fn, inputs, args.repeats)
        for name, fn in (("baseline", baseline), ("ours", ours), ("limit", limit))
    }
    print(f"  plain PIL open+resize(LANCZOS): {results['baseline']:7.1f} images/s")
    print(f"  camsdd fetch resizer (full):    {results['ours']:7.1f} images/s")
    print(f"  reduced-decode limit (decode):  {results['limit']:7.1f} images/s")
    print(
        f"ratio ours / plain PIL: {results['ours'] / results['baseline']:.2f}x "
        f"({results['ours'] / results['limit']:.0%} of the reduced-decode limit)"
    )


if __name__ == "__main__":
    main()
