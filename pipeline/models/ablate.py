"""``camsdd ablate``: what the pseudo-labeled images are worth, in one command.

Trains the same student twice from ``camsdd/pseudo``: on ``train`` and on
``train+extra_pseudo``, with the same seed and the same budget (steps per epoch
from the size of ``train``, so both runs see the same number of images); quantizes
both to INT8 and evaluates both. Writes ``W/models/<name>/ablation.json`` and
``ablation.md`` with the INT8 (and float) top-1/top-3 of each and the difference.
"""

from __future__ import annotations

import json
import os
from typing import Any

from pipeline.models import evaluate as evaluate_stage
from pipeline.models import quantize as quantize_stage
from pipeline.models import student
from pipeline.models import train as train_stage

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
