"""``camsdd embed``: its flags; the Beam pipeline is ``pipeline.stages.embed``."""

from __future__ import annotations

import argparse

from pipeline.cli import common
from pipeline.cli.argtypes import positive_int


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "embed",
        description="Embeds every kept image of W/fetch/manifest-*.parquet and, with "
        "--reference, every labeled image, with the frozen teacher backbone through Beam "
        "RunInference: on LiteRT (XNNPACK, the worker's cores), converted once to "
        "W/embed/<model id>/teacher-litert-v1.tflite; a .keras teacher runs on Keras. "
        "Vectors are cached per image content and model in W/embed/<model id>/; a rerun "
        "embeds only what is new. dedup and pseudolabel "
        "read this cache.",
        epilog=common.BEAM_EPILOG,
    )
    common.add_work_argument(parser)
    parser.add_argument("--reference", help="CAMSDD_ROOT whose labeled images to embed too")
    common.add_teacher_arguments(parser)
    parser.add_argument(
        "--batch-size", type=positive_int, default=32, help="images per inference call"
    )
    parser.set_defaults(func=run, accepts_beam_options=True)


def run(args: argparse.Namespace) -> int:
    from pipeline.stages import embed

    summary = embed.run_embed(
        args.work, args.reference, common.teacher_spec(args), args.beam_args, args.batch_size
    )
    print(
        f"embed ({summary['model']}): {summary['embedded']} embedded, "
        f"{summary['already_cached']} already cached"
        + (f" ({summary['resumed']} computed by an interrupted run)" if summary["resumed"] else "")
        + f", {summary['unreadable']} unreadable, "
        f"{summary['seconds']} s ({summary['images_per_second']}/s, {summary['runtime']}); "
        f"cache: {summary['cache']}"
    )
    for part in summary.get("parts", []):
        print(
            f"  part {part['model']}: {part['embedded']} embedded, "
            f"{part['already_cached']} already cached, {part['seconds']} s"
        )
    for item in summary["labeled_unusable"]:
        print(f"  warning: labeled file is no usable image, not embedded: {item}")
    return 0
