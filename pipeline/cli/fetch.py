"""``camsdd fetch``: its flags; the Beam pipeline is ``pipeline.stages.fetch``."""

from __future__ import annotations

import argparse

from crawlers import download
from pipeline.cli import common
from pipeline.cli.argtypes import positive_int
from pipeline.core import resizer

#: FilterConfig fields exposed as ``--flags``: (field, type, what it drops).
FILTER_FLAGS = (
    ("min_crop_width", int, "drop (too_small) if the 3:2 crop is narrower"),
    ("min_crop_height", int, "drop (too_small) if the 3:2 crop is lower"),
    ("max_aspect", float, "drop (extreme_aspect) beyond this long:short ratio"),
    (
        "min_chroma",
        float,
        "drop (grayscale) under this chroma (99th percentile of the distance from gray, "
        "0-128); not for text documents and QR codes",
    ),
    ("min_contrast", float, "drop (near_uniform) under this luminance std"),
    (
        "min_sharpness",
        float,
        "drop (blurry) under this Laplacian variance at 288x192; not for blue and cloudy skies",
    ),
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    defaults = resizer.FilterConfig()
    parser = subparsers.add_parser(
        "fetch",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Reads the newest W/crawl/<name>/manifest-*.parquet of every crawl, "
        "downloads every kept candidate, "
        "decodes it (JPEG, PNG, WebP, GIF), applies the quality filters, resizes to "
        "576x384 JPEG q95 into W/fetch/images/ab/<sha256>.jpg and writes "
        "W/fetch/manifest-*.parquet with one row per candidate (kept, or dropped with a "
        "reason) plus W/fetch/report.{json,md}. A rerun reuses rows already done and "
        "retries transient failures (timeouts, 429, 5xx).",
        epilog=common.BEAM_EPILOG,
    )
    common.add_work_argument(parser)
    parser.add_argument(
        "--allow-private-addresses",
        action="store_true",
        help="allow URLs on loopback/private/link-local addresses (tests, the demo, an "
        "intranet mirror); refused by default",
    )
    parser.add_argument(
        "--threads", type=positive_int, default=16, help="concurrent downloads per worker"
    )
    parser.add_argument(
        "--max-megabytes",
        type=float,
        default=download.MAX_BYTES / 2**20,
        help="largest download accepted (default 20)",
    )
    parser.add_argument("--timeout", type=float, default=20.0, help="read timeout, seconds")
    parser.add_argument("--retries", type=int, default=2, help="retries on 429/5xx/errors")
    parser.add_argument(
        "--host-interval",
        type=float,
        default=0.0,
        help="seconds between two requests to one host, per worker (default 0)",
    )
    parser.add_argument("--user-agent", default="", help="User-Agent for image downloads")
    parser.add_argument(
        "--no-retry-transient",
        action="store_true",
        help="on a rerun, keep earlier timeouts/429/5xx drops instead of retrying them",
    )
    filters = parser.add_argument_group("quality filters (README: 'Fetch filters')")
    for field, kind, help_text in FILTER_FLAGS:
        filters.add_argument(
            "--" + field.replace("_", "-"),
            type=kind,
            default=getattr(defaults, field),
            help=f"{help_text} (default %(default)s)",
        )
    filters.add_argument(
        "--portrait",
        choices=resizer.PORTRAIT_POLICIES,
        default=defaults.portrait,
        help="crop: keep the centre 3:2 band; drop: drop portraits",
    )
    parser.set_defaults(func=run, accepts_beam_options=True)


def settings_from_args(args: argparse.Namespace):
    """The fetch stage's settings from the flags."""
    from pipeline.stages import fetch_record

    filters = resizer.FilterConfig(
        portrait=args.portrait, **{field: getattr(args, field) for field, _, _ in FILTER_FLAGS}
    )
    return fetch_record.FetchSettings(
        work=args.work,
        allow_private_addresses=args.allow_private_addresses,
        max_bytes=int(args.max_megabytes * 2**20),
        read_timeout=args.timeout,
        retries=args.retries,
        host_interval=args.host_interval,
        user_agent=args.user_agent,
        filters=filters,
    )


def run(args: argparse.Namespace) -> int:
    from pipeline.reports import fetch_report
    from pipeline.stages import fetch
    from pipeline.store import manifest

    report = fetch.run_fetch(
        settings_from_args(args),
        args.beam_args,
        threads=args.threads,
        retry_transient=not args.no_retry_transient,
    )
    print(fetch_report.render_text(report))
    return manifest.print_locations(report)
