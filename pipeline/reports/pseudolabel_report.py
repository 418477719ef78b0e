"""The pseudolabel run report: the teacher's OOF quality, thresholds, what each rule did, plots."""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.core import classes, pseudolabel, schema

LABEL_ISSUES_LISTED = 20


def _finite(value: float) -> float | None:
    return round(float(value), 4) if np.isfinite(value) else None


def _per_class_oof(labels: np.ndarray, oof: np.ndarray, thresholds: pseudolabel.Thresholds):
    predicted, confidence = oof.argmax(1), oof.max(1)
    rows = []
    for c, folder in enumerate(classes.CLASS_FOLDERS):
        mine = labels == c
        chosen = (predicted == c) & (confidence >= thresholds.tau[c])
        rows.append(
            {
                "class": folder,
                "train_images": int(mine.sum()),
                "oof_top1": round(pseudolabel.top_k_accuracy(oof[mine], labels[mine], 1), 4)
                if mine.any()
                else None,
                "oof_top3": round(pseudolabel.top_k_accuracy(oof[mine], labels[mine], 3), 4)
                if mine.any()
                else None,
                "oof_predictions": int(thresholds.support[c]),
                "threshold": _finite(thresholds.tau[c]),
                "threshold_from": thresholds.kind[c],
                "oof_precision_at_threshold": round(float((labels[chosen] == c).mean()), 4)
                if chosen.any()
                else None,
                "oof_kept_at_threshold": int(chosen.sum()),
            }
        )
    return rows


def build(
    table: pa.Table,
    *,
    labeled,
    kfold: pseudolabel.KFoldHeads,
    thresholds: pseudolabel.Thresholds,
    config: pseudolabel.PseudolabelConfig,
    counters: dict[str, int],
    model: str,
    seconds: float,
    train_seconds: float,
    run_id: str,
) -> dict[str, Any]:
    """The report as a JSON-able dict; ``reconciled``: inputs == kept + dropped."""
    rows = table.to_pylist()
    counts = schema.tally(rows)
    reasons = counts.dropped_by_reason
    per_class: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for r in rows:
        per_class[r["label"] or "(not scored)"][r["reason"] or schema.KEPT] += 1
    scored = [r for r in rows if r["label"] is not None]
    rules = {
        "heads_agree": ("heads_agree", config.require_agreement),
        "confidence_at_least_threshold": ("above_threshold", True),
        "label_is_query_class": ("query_match", config.require_query_match),
    }
    rule_counts = {
        name: {
            "enabled": enabled,
            "passed": sum(1 for r in scored if r[column]),
            "failed": sum(1 for r in scored if not r[column]),
            "dropped_first_by_this_rule": reasons.get(
                {
                    "heads_agree": pseudolabel.FOLD_DISAGREEMENT,
                    "confidence_at_least_threshold": pseudolabel.LOW_CONFIDENCE,
                    "label_is_query_class": pseudolabel.QUERY_MISMATCH,
                }[name],
                0,
            ),
        }
        for name, (column, enabled) in rules.items()
    }
    y, oof = labeled.labels, kfold.oof
    issues = pseudolabel.label_issues(oof, y)
    inputs = counters.get("inputs", len(rows))
    return {
        "stage": "pseudolabel",
        "run_id": run_id,
        "model": model,
        "config": dataclasses.asdict(config),
        "inputs": inputs,
        "kept": counts.kept,
        "dropped": counts.dropped,
        "reasons": reasons,
        "reconciled": counts.reconciles(inputs),
        "per_class": {k: dict(v) for k, v in sorted(per_class.items())},
        "rules": rule_counts,
        "teacher": {
            "labeled_images": len(y),
            "skipped_labeled": [{"key": k, "why": w} for k, w in labeled.skipped],
            "folds": config.folds,
            "thin_classes": [
                classes.CLASS_FOLDERS[c]
                for c in range(classes.NUM_CLASSES)
                if 0 < (y == c).sum() < config.folds
            ],
            "oof_top1": round(pseudolabel.top_k_accuracy(oof, y, 1), 4),
            "oof_top3": round(pseudolabel.top_k_accuracy(oof, y, 3), 4),
            "oof_ece": round(pseudolabel.expected_calibration_error(oof, y), 4),
            "pooled_threshold": _finite(thresholds.pooled)
            if thresholds.pooled is not None
            else None,
            "per_class": _per_class_oof(y, oof, thresholds),
        },
        "label_issues": {
            "count": int(len(issues)),
            "file": "label_issues.csv",
            "worst": [_issue_row(labeled, kfold, i) for i in issues[:LABEL_ISSUES_LISTED]],
        },
        "plots": ["confidence_histograms.png", "reliability.png"],
        "seconds": round(seconds, 2),
        "train_seconds": round(train_seconds, 2),
    }


def _issue_row(labeled, kfold: pseudolabel.KFoldHeads, i: int) -> dict[str, Any]:
    probs = kfold.oof[i]
    given = int(labeled.labels[i])
    return {
        "key": labeled.keys[i],
        "given": classes.CLASS_FOLDERS[given],
        "predicted": classes.CLASS_FOLDERS[int(probs.argmax())],
        "self_confidence": round(float(probs[given]), 4),
        "predicted_confidence": round(float(probs.max()), 4),
        "fold": int(kfold.fold[i]),
    }


def label_issues_csv(labeled, kfold: pseudolabel.KFoldHeads) -> str:
    """Every suspect official label, worst first (nothing is removed: it is for review)."""
    out = io.StringIO()
    fields = ["rank", "key", "given", "predicted", "self_confidence", "predicted_confidence"]
    writer = csv.DictWriter(out, [*fields, "fold"])
    writer.writeheader()
    for rank, i in enumerate(pseudolabel.label_issues(kfold.oof, labeled.labels), start=1):
        writer.writerow({"rank": rank, **_issue_row(labeled, kfold, int(i))})
    return out.getvalue()


def render_text(report: dict[str, Any]) -> str:
    teacher = report["teacher"]
    lines = [
        f"pseudolabel ({report['model']}, {report['config']['folds']} folds): "
        f"{report['inputs']} candidates -> {report['kept']} kept, {report['dropped']} dropped",
        f"  teacher OOF on {teacher['labeled_images']} labeled images: top-1 "
        f"{teacher['oof_top1']:.3f}, top-3 {teacher['oof_top3']:.3f}, ECE {teacher['oof_ece']:.3f}",
    ]
    for reason, count in report["reasons"].items():
        lines.append(f"  dropped {reason}: {count}")
    calibrated = [c for c in teacher["per_class"] if c["threshold"] is not None]
    lines.append(
        f"  thresholds: {len(calibrated)} classes usable "
        f"({sum(c['threshold_from'] == 'class' for c in calibrated)} from their own OOF), "
        f"pooled {teacher['pooled_threshold']}"
    )
    lines.append(f"  label issues in the official train set: {report['label_issues']['count']}")
    lines += review_lines(report.get("review"))
    return "\n".join(lines)


def review_lines(review: dict[str, Any] | None) -> list[str]:
    """What the reviewers' corrections did; keys with nothing to apply to, by name."""
    if not review:
        return []
    lines = []
    applied = ", ".join(f"{n} {action}" for action, n in sorted(review["candidates"].items()))
    if applied or review["official_training_images"]:
        lines.append(
            f"  review corrections applied: candidates {applied or 'none'}; official training "
            f"images {review['official_training_images']} (the heads learn the corrected labels)"
        )
    if review["unknown_keys"]:
        lines.append(
            f"  WARNING {len(review['unknown_keys'])} corrections name candidates no longer "
            f"here: {', '.join(review['unknown_keys'][:10])}"
        )
    if review["official_not_applied"]:
        lines.append(
            f"  WARNING {len(review['official_not_applied'])} corrections of official images "
            f"outside train are not applied (official splits never change): "
            f"{', '.join(review['official_not_applied'][:10])}"
        )
    return lines


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def render_markdown(report: dict[str, Any]) -> str:
    teacher = report["teacher"]
    out = [
        f"# pseudolabel run {report['run_id']}",
        "",
        f"Teacher `{report['model']}`, {report['config']['folds']} folds, target OOF precision "
        f"{report['config']['target_precision']}, floor {report['config']['threshold_floor']}, "
        f"cap {report['config']['max_per_class']} per class.",
        "",
        f"**{report['inputs']} candidates → {report['kept']} kept, {report['dropped']} dropped** "
        f"(reconciled: {report['reconciled']}).",
        "",
        "| reason | candidates |",
        "| --- | ---: |",
        *[f"| {k} | {v} |" for k, v in report["reasons"].items()],
        "",
        "## Rules (each on its own, over scored candidates)",
        "",
        "| rule | enabled | passed | failed | dropped first by it |",
        "| --- | --- | ---: | ---: | ---: |",
        *[
            f"| {name} | {r['enabled']} | {r['passed']} | {r['failed']} | "
            f"{r['dropped_first_by_this_rule']} |"
            for name, r in report["rules"].items()
        ],
        "",
        "## Teacher (out-of-fold, labeled training images)",
        "",
        f"{teacher['labeled_images']} images: top-1 {teacher['oof_top1']}, top-3 "
        f"{teacher['oof_top3']}, expected calibration error {teacher['oof_ece']}. Pooled "
        f"threshold {teacher['pooled_threshold']}.",
    ]
    if teacher["thin_classes"]:
        out += [
            "",
            f"Classes with fewer training images than folds (not in every fold): "
            f"{', '.join(teacher['thin_classes'])}.",
        ]
    out += [
        "",
        "| class | train | OOF top-1 | OOF top-3 | OOF predictions | τ | from | OOF precision "
        "at τ | kept | dropped |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for c in teacher["per_class"]:
        outcome = report["per_class"].get(c["class"], {})
        kept = outcome.get(schema.KEPT, 0)
        dropped = sum(v for k, v in outcome.items() if k != schema.KEPT)
        out.append(
            f"| {c['class']} | {c['train_images']} | {_cell(c['oof_top1'])} | "
            f"{_cell(c['oof_top3'])} | {c['oof_predictions']} | {_cell(c['threshold'])} | "
            f"{c['threshold_from']} | {_cell(c['oof_precision_at_threshold'])} | {kept} | "
            f"{dropped} |"
        )
    out += [
        "",
        "![confidence histograms](confidence_histograms.png)",
        "",
        "![reliability diagram](reliability.png)",
        "",
        f"## Label issues in the official train set ({report['label_issues']['count']})",
        "",
        "OOF prediction contradicts the label, lowest self-confidence first; all of them in "
        "`label_issues.csv`. Nothing is removed.",
        "",
        "| key | given | predicted | self-confidence | predicted confidence |",
        "| --- | --- | --- | ---: | ---: |",
        *[
            f"| {i['key']} | {i['given']} | {i['predicted']} | {i['self_confidence']} | "
            f"{i['predicted_confidence']} |"
            for i in report["label_issues"]["worst"]
        ],
        "",
    ]
    review = review_lines(report.get("review"))
    if review:
        out += ["## Review corrections", "", *[f"- {line.strip()}" for line in review], ""]
    return "\n".join(out)


# ------------------------------------------------------------------ plots


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return buffer.getvalue()


def plots(
    table: pa.Table, labeled, kfold: pseudolabel.KFoldHeads, thresholds: pseudolabel.Thresholds
) -> dict[str, bytes]:
    """``confidence_histograms.png`` (per class) and ``reliability.png`` as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y, oof = labeled.labels, kfold.oof
    predicted, confidence = oof.argmax(1), oof.max(1)
    cand_label = np.array(
        [-1 if v is None else v for v in table.column("label_index").to_pylist()], np.int64
    )
    cand_conf = np.array(
        [np.nan if v is None else v for v in table.column("confidence").to_pylist()], float
    )
    bins = np.linspace(0, 1, 21)
    figure, axes = plt.subplots(6, 5, figsize=(16, 16), sharex=True)
    for c, ax in enumerate(axes.flat):
        mine = predicted == c
        ax.hist(
            [confidence[mine & (y == c)], confidence[mine & (y != c)]],
            bins=bins,
            stacked=True,
            color=["tab:green", "tab:red"],
            label=["OOF right", "OOF wrong"],
        )
        ax.hist(
            cand_conf[cand_label == c],
            bins=bins,
            histtype="step",
            color="black",
            label="candidates",
        )
        if np.isfinite(thresholds.tau[c]):
            ax.axvline(thresholds.tau[c], color="tab:blue", linestyle="--", label="τ")
        ax.set_title(classes.CLASS_FOLDERS[c], fontsize=9)
    axes.flat[0].legend(fontsize=7)
    figure.suptitle("Max probability by predicted class: OOF labeled images and candidates")
    figure.tight_layout()
    histograms = _png(figure)

    table_ = pseudolabel.reliability(oof, y, bins=10)
    ece = pseudolabel.expected_calibration_error(oof, y, bins=10)
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(6, 7), gridspec_kw={"height_ratios": [3, 1]}, sharex=True
    )
    centers = (table_["edges"][:-1] + table_["edges"][1:]) / 2
    top.bar(centers, np.nan_to_num(table_["accuracy"]), width=0.1, edgecolor="black")
    top.plot([0, 1], [0, 1], color="gray", linestyle="--")
    top.set_ylabel("OOF accuracy")
    top.set_title(f"Reliability of the K-fold heads (OOF), ECE {ece:.3f}")
    bottom.bar(centers, table_["count"], width=0.1, color="tab:gray")
    bottom.set_xlabel("max probability")
    bottom.set_ylabel("images")
    figure.tight_layout()
    return {"confidence_histograms.png": histograms, "reliability.png": _png(figure)}
