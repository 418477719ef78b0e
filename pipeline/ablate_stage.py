"""``camsdd ablate``: what the pseudo-labeled images are worth, in one command.

Trains the same student twice from ``camsdd/pseudo``: on ``train`` and on
``train+extra_pseudo``, with the same seed and the same budget (steps per epoch
from the size of ``train``, so both runs see the same number of images); quantizes
both to INT8 and evaluates both. Writes ``W/models/<name>/ablation.json`` and
``ablation.md`` with the INT8 (and float) top-1/top-3 of each and the difference.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from pipeline import (
    evaluate_stage,
    quantize_stage,
    student,
    student_data,
    tflite_model,
    train_stage,
)

ARMS = (("without", "train"), ("with", "train+extra_pseudo"))


def ablate(
    spec: student.StudentSpec,
    base: train_stage.TrainConfig,
    work: str,
    name: str,
    splits: tuple[str, ...] = evaluate_stage.DEFAULT_SPLITS,
    verbose: int = 0,
    latency_runs: int = 30,
) -> dict[str, Any]:
    """Both arms end to end; returns (and writes) the comparison."""
    import dataclasses

    folder = train_stage.model_dir(work, name)
    arms: dict[str, Any] = {}
    for arm, split in ARMS:
        config = dataclasses.replace(base, split=split, config="pseudo", budget_split="train")
        out = folder / f"{arm}_extra"
        print(f"-- {arm} extra_pseudo: train on {split}", flush=True)
        record = train_stage.train(spec, config, os.fspath(out), verbose)
        train_stage.print_summary(record)
        quantized = quantize_stage.quantize(
            os.fspath(out / "model.keras"),
            base.data_dir,
            "pseudo",
            compare_splits=splits,
            seed=base.seed,
        )
        quantize_stage.print_summary(quantized)
        evaluation = evaluate_stage.evaluate(
            quantized["int8_tflite"],
            base.data_dir,
            "pseudo",
            splits,
            latency_runs=latency_runs,
        )
        evaluate_stage.print_summary(evaluation)
        arms[arm] = {
            "split": split,
            "train_examples": record["train_examples"],
            "images_seen": record["images_seen"],
            "images_per_second": record["images_per_second_steady"],
            "int8": {s: _accuracy(evaluation["splits"][s]) for s in splits},
            "float": {
                s: {
                    "top1": quantized["comparison"][s]["float_top1"],
                    "top3": quantized["comparison"][s]["float_top3"],
                }
                for s in splits
            },
            "train_json": os.fspath(out / "train.json"),
            "evaluation": evaluation["report_files"][0],
        }
    difference = {
        kind: {
            s: {k: arms["with"][kind][s][k] - arms["without"][kind][s][k] for k in ("top1", "top3")}
            for s in splits
        }
        for kind in ("int8", "float")
    }
    report = {
        "spec": student.spec_to_dict(spec),
        "config": dataclasses.asdict(base),
        "arms": arms,
        "difference_with_minus_without": difference,
    }
    (folder / "ablation.json").write_text(json.dumps(report, indent=1))
    (folder / "ablation.md").write_text(render(report))
    report["report_files"] = [
        os.fspath(folder / "ablation.json"),
        os.fspath(folder / "ablation.md"),
    ]
    return report


def _accuracy(figures: dict) -> dict[str, float]:
    return {"top1": figures["top1"], "top3": figures["top3"]}


def render(report: dict[str, Any]) -> str:
    arms = report["arms"]
    spec = report["spec"]
    lines = [
        "# Ablation: the student with and without extra_pseudo",
        "",
        f"Student {spec['architecture']} alpha {spec['alpha']:g} at "
        f"{spec['input_size'][0]}x{spec['input_size'][1]}, seed {report['config']['seed']}, "
        f"{arms['without']['images_seen']} images seen by each arm.",
        "",
        "| arm | train examples | split | model | top-1 | top-3 |",
        "| --- | ---: | --- | --- | ---: | ---: |",
    ]
    for arm in ("without", "with"):
        entry = arms[arm]
        for split in entry["int8"]:
            for kind in ("int8", "float"):
                figures = entry[kind][split]
                lines.append(
                    f"| {arm} | {entry['train_examples']} | {split} | {kind} | "
                    f"{figures['top1']:.4f} | {figures['top3']:.4f} |"
                )
    lines += ["", "Difference (with − without), in points:", ""]
    for kind, per_split in report["difference_with_minus_without"].items():
        for split, diff in per_split.items():
            lines.append(
                f"- {kind} {split}: top-1 {100 * diff['top1']:+.1f}, "
                f"top-3 {100 * diff['top3']:+.1f}"
            )
    return "\n".join(lines) + "\n"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ablate",
        help="train, quantize and evaluate the student with and without extra_pseudo",
        description="Trains the same student on train and on train+extra_pseudo of "
        "camsdd/pseudo (same seed, same number of steps), quantizes both to INT8, evaluates "
        "both, and reports the difference in WORK/models/NAME/ablation.{json,md}.",
    )
    train_stage.add_model_arguments(parser, name="ablation")
    parser.add_argument(
        "--splits", default="validation,test", help="evaluation splits (default validation,test)"
    )
    parser.add_argument(
        "--latency-runs", type=int, default=30, help="timed runs per thread count (default 30)"
    )
    train_stage.add_student_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.config == "official":
        print(
            "error: ablate needs camsdd/pseudo (it holds extra_pseudo); drop --config",
            file=sys.stderr,
        )
        return 2
    try:
        spec = train_stage.spec_from_args(args)
        base = train_stage.config_from_args(args, "train")
        report = ablate(
            spec,
            base,
            args.work,
            args.name,
            tuple(s.strip() for s in args.splits.split(",") if s.strip()),
            train_stage.progress_verbosity(),
            args.latency_runs,
        )
    except (
        student.StudentSpecError,
        student_data.DataError,
        tflite_model.QuantizationError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for kind, per_split in report["difference_with_minus_without"].items():
        for split, diff in per_split.items():
            print(
                f"  with - without extra_pseudo, {kind} {split}: top-1 "
                f"{100 * diff['top1']:+.1f} pt, top-3 {100 * diff['top3']:+.1f} pt"
            )
    print(f"  report: {', '.join(report['report_files'])}")
    return 0
