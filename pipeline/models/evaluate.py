"""``camsdd evaluate``: a ``.tflite`` student on validation/test, as the challenge measures.

Runs the file with the LiteRT interpreter on the built ``camsdd`` splits and
writes ``W/models/<name>/evaluation/<model file stem>/``: ``report.json``,
``report.md`` and ``confusion_<split>.png``. Reported: top-1 and top-3 (ties count
against the model), per-class accuracy, the most confused pairs, median latency on
1 thread and on all threads, the file size and the challenge score.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from etils import epath

from pipeline.core import classes, scene_metrics
from pipeline.models import student_data, tflite_model

DEFAULT_SPLITS = ("validation", "test")


def evaluate_scores(scores: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Accuracy figures of one split from its score matrix (pure)."""
    matrix = scene_metrics.confusion_matrix(
        labels, scene_metrics.predictions(scores), classes.NUM_CLASSES
    )
    recall = scene_metrics.per_class_accuracy(matrix)
    counts = matrix.sum(axis=1)
    return {
        "examples": len(labels),
        "top1": scene_metrics.top_k_accuracy(scores, labels, 1),
        "top3": scene_metrics.top_k_accuracy(scores, labels, 3),
        "per_class": {
            classes.CLASS_FOLDERS[i]: {"examples": int(counts[i]), "accuracy": float(recall[i])}
            for i in range(classes.NUM_CLASSES)
            if counts[i]
        },
        "most_confused": scene_metrics.most_confused(matrix, list(classes.CLASS_FOLDERS)),
        "confusion_matrix": matrix.tolist(),
    }


def plot_confusion(matrix: np.ndarray, title: str, path: str) -> None:
    """A row-normalized confusion matrix over the classes present in the split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix)
    present = np.flatnonzero(matrix.sum(axis=1) + matrix.sum(axis=0))
    sub = matrix[np.ix_(present, present)].astype(float)
    rows = sub.sum(axis=1, keepdims=True)
    shares = np.divide(sub, rows, out=np.zeros_like(sub), where=rows > 0)
    names = [classes.CLASS_FOLDERS[i] for i in present]
    size = max(5.0, 0.32 * len(names) + 2)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    axes.set_yticks(range(len(names)), names, fontsize=7)
    for (row, col), count in np.ndenumerate(sub):
        if count:
            axes.text(col, row, int(count), ha="center", va="center", fontsize=6,
                      color="white" if shares[row, col] > 0.5 else "black")  # fmt: skip
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.04, label="share of the true class")
    figure.tight_layout()
    with epath.Path(path).open("wb") as handle:
        figure.savefig(handle, format="png", dpi=110)
    plt.close(figure)


def evaluate(
    model_path: str,
    data_dir: str,
    config: str,
    splits: tuple[str, ...] = DEFAULT_SPLITS,
    out_dir: str | None = None,
    latency_runs: int = 30,
    score_constant: float = 1.0,
) -> dict[str, Any]:
    """Evaluates one ``.tflite`` file; writes and returns the report."""
    path = epath.Path(model_path)
    if not path.exists():
        raise student_data.DataError(f"no model file {model_path}")
    content = path.read_bytes()
    try:
        tflite_model.interpreter(content, delegates=False)
    except tflite_model.ModelFileError as error:
        raise student_data.DataError(f"{model_path}: {error}") from error
    loaded = [student_data.load_split(data_dir, config, name) for name in splits]
    out = epath.Path(out_dir or path.parent / "evaluation" / path.stem)
    out.mkdir(parents=True, exist_ok=True)
    try:
        quantization = tflite_model.check_integer_only(content)
        integer_only = True
    except tflite_model.QuantizationError as error:
        quantization = {"error": str(error)}
        integer_only = False

    report: dict[str, Any] = {
        "model": os.fspath(path),
        "size_bytes": len(content),
        "size_mb": len(content) / 1e6,
        "integer_only": integer_only,
        "quantization": quantization,
        "dataset": f"camsdd/{config}",
        "data_dir": os.fspath(data_dir),
        "splits": {},
    }
    for split in loaded:
        (scores,), labels = tflite_model.score_split(split, [content])
        figures = evaluate_scores(scores, labels)
        png = out / f"confusion_{split.name}.png"
        plot_confusion(
            np.asarray(figures["confusion_matrix"]),
            f"{path.name} on {split.name}: top-1 {figures['top1']:.3f}, top-3 "
            f"{figures['top3']:.3f} ({figures['examples']} images)",
            os.fspath(png),
        )
        figures["confusion_png"] = os.fspath(png)
        report["splits"][split.name] = figures

    frame = next(student_data.frames(loaded[0], 1))[0]
    threads = tflite_model.all_threads()
    latency = {
        "threads_1_ms": tflite_model.median_latency_ms(content, frame, 1, latency_runs),
        f"threads_{threads}_ms": tflite_model.median_latency_ms(
            content, frame, threads, latency_runs
        ),
        "runs": latency_runs,
        "device": "this machine's CPU (LiteRT, XNNPACK)",
    }
    report["latency"] = latency
    ranked = report["splits"].get("test") or next(iter(report["splits"].values()))
    top1, top3 = 100 * ranked["top1"], 100 * ranked["top3"]
    runtime = latency["threads_1_ms"]
    report["challenge_score"] = {
        "split": "test" if "test" in report["splits"] else loaded[0].name,
        "formula": "2^(2*(top1+top3)) / (C * runtime_ms), top-1/top-3 in percent",
        "constant_C": score_constant,
        "runtime_ms": runtime,
        "score": scene_metrics.challenge_score(top1, top3, runtime, score_constant),
        "log2_score": 2 * (top1 + top3) - float(np.log2(score_constant * runtime)),
    }
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(render(report))
    report["report_files"] = [os.fspath(out / "report.json"), os.fspath(out / "report.md")]
    return report


def render(report: dict[str, Any]) -> str:
    """The human-readable report."""
    lines = [
        f"# Evaluation of {os.path.basename(report['model'])}",
        "",
        f"- file: `{report['model']}`, {report['size_mb']:.2f} MB",
        f"- integer-only (all INT8, uint8 in/out): {'yes' if report['integer_only'] else 'no'}",
        f"- data: {report['dataset']} in `{report['data_dir']}`",
        "",
        "| split | images | top-1 | top-3 |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, figures in report["splits"].items():
        lines.append(
            f"| {name} | {figures['examples']} | {figures['top1']:.4f} | {figures['top3']:.4f} |"
        )
    latency = report["latency"]
    lines += ["", "Latency (median of one frame, " + latency["device"] + "):", ""]
    for key, value in latency.items():
        if key.endswith("_ms"):
            threads = key.split("_")[1]
            lines.append(f"- {threads} thread(s): {value:.2f} ms")
    score = report["challenge_score"]
    lines += [
        "",
        f"Challenge score on {score['split']} ({score['formula']}, C = {score['constant_C']:g}, "
        f"runtime {score['runtime_ms']:.2f} ms on 1 thread): {score['score']:.4g} "
        f"(log2 {score['log2_score']:.2f}). C was not published; compare scores only "
        "between models measured here with the same C.",
    ]
    for name, figures in report["splits"].items():
        lines += [
            "",
            f"## {name}: per-class accuracy",
            "",
            "| class | images | accuracy |",
            "| --- | ---: | ---: |",
        ]
        for folder, entry in figures["per_class"].items():
            lines.append(f"| {folder} | {entry['examples']} | {entry['accuracy']:.3f} |")
        if figures["most_confused"]:
            lines += ["", "Most confused (true → predicted):", ""]
            lines += [
                f"- {p['true']} → {p['predicted']}: {p['count']}" for p in figures["most_confused"]
            ]
        lines += ["", f"![confusion matrix]({os.path.basename(figures['confusion_png'])})"]
    return "\n".join(lines) + "\n"


def print_summary(report: dict[str, Any]) -> None:
    splits = ", ".join(
        f"{name} top-1 {f['top1']:.3f} / top-3 {f['top3']:.3f} ({f['examples']})"
        for name, f in report["splits"].items()
    )
    latency = report["latency"]
    timings = ", ".join(
        f"{key.split('_')[1]} thread(s) {value:.2f} ms"
        for key, value in latency.items()
        if key.endswith("_ms")
    )
    print(f"  {os.path.basename(report['model'])}: {splits}")
    print(
        f"  latency {timings}; size {report['size_mb']:.2f} MB; integer-only "
        f"{report['integer_only']}; score log2 {report['challenge_score']['log2_score']:.1f}"
    )
    print(f"  report: {', '.join(report['report_files'])}")
