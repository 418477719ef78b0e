"""The pseudolabel run report: the teacher's OOF quality, label noise, thresholds, the OOD cut,
what each rule did, the precision-coverage curves of rules (a), (b), (c), plots."""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.core import classes, open_set, pseudolabel, pseudolabel_eval, query_prior, schema

LABEL_ISSUES_LISTED = 20


def _finite(value: float) -> float | None:
    return round(float(value), 4) if np.isfinite(value) else None


def _round(value: float) -> float | None:
    return round(float(value), 4) if np.isfinite(value) else None


def _per_class_oof(
    labels: np.ndarray,
    oof: np.ndarray,
    thresholds: open_set.NoiseAwareThresholds,
    noise: open_set.LabelNoise,
):
    predicted, confidence = oof.argmax(1), oof.max(1)
    rows = []
    for c, folder in enumerate(classes.CLASS_FOLDERS):
        mine = labels == c
        regular = thresholds.kind[c] == pseudolabel.TAU_CLASS
        chosen = (predicted == c) & (confidence >= thresholds.tau[c]) & regular
        rows.append(
            {
                "class": folder,
                "train_images": int(mine.sum()),
                "kind": thresholds.kind[c],
                "oof_top1": round(pseudolabel.top_k_accuracy(oof[mine], labels[mine], 1), 4)
                if mine.any()
                else None,
                "oof_top3": round(pseudolabel.top_k_accuracy(oof[mine], labels[mine], 3), 4)
                if mine.any()
                else None,
                "oof_predictions": int(thresholds.support[c]),
                "threshold": _finite(thresholds.tau[c]),
                "threshold_from": thresholds.kind[c],
                "noise_rate": _round(noise.noise_rate[c]),
                "flagged_share": _round(noise.flagged_rate[c]),
                "observed_precision": _round(thresholds.observed_precision[c]),
                "estimated_precision": _round(thresholds.estimated_precision[c]),
                "oof_precision_at_threshold": round(float((labels[chosen] == c).mean()), 4)
                if chosen.any()
                else None,
                "oof_kept_at_threshold": int(chosen.sum()),
            }
        )
    return rows


# ------------------------------------------------------------------ curves


def oof_curves(labeled, kfold: pseudolabel.KFoldHeads, rule: open_set.OpenSetRule, noise):
    """Rules (a), (b), (c) on the labeled images' OOF predictions, against the given labels.

    (c): the OOF argmax of a regular class, kept when its held-out OOD score (fold
    prototypes) is within δ and its confidence reaches τ along (c)'s knob path. OOF
    predictions cannot show OOD errors, and few-shot labels (prototype rule) are not
    OOF predictions: they are left out here.
    """
    y, oof = labeled.labels, kfold.oof
    predicted, confidence = oof.argmax(1), oof.max(1)
    everyone = np.ones(len(y), bool)
    model = rule.model
    z = open_set.held_out_z(labeled.vectors, predicted, kfold.fold, model.prototypes)
    in_dist = model.prototypes.present[predicted] & ((z <= model.ood.delta) | (not rule.config.ood))
    base = in_dist & ~model.thresholds.few_shot[predicted]
    reason = np.where(base, None, "excluded").astype(object)
    path = open_set.tau_path(oof, y, noise, model, rule.config)
    a = pseudolabel.precision_coverage(predicted, y, everyone, everyone)
    c = pseudolabel.precision_coverage(
        predicted, y, base & (confidence >= model.thresholds.tau[predicted]), everyone
    )
    return {
        "source": "OOF (given labels)",
        "candidates": len(y),
        "on_topic": len(y),
        "points": {
            "a": [(a["precision"], a["coverage"])],
            "b": pseudolabel_eval.threshold_sweep(predicted, confidence, y, everyone),
            "c": [
                *pseudolabel_eval.rule_c_points(predicted, confidence, reason, y, everyone, path),
                (c["precision"], c["coverage"]),
            ],
        },
        "default": {"a": a, "c": c},
    }


def curve_summary(curves: dict[str, Any]) -> dict[str, Any]:
    """Areas over precision 0.90-0.995, c ≥ b at every precision, the default points."""
    if not curves:
        return {}
    env = {k: pseudolabel_eval.envelope(v) for k, v in curves["points"].items()}
    diff = env["c"] - env["b"]
    grid = pseudolabel_eval.P_GRID
    worst = int(np.argmin(diff))
    return {
        "source": curves["source"],
        "candidates": curves["candidates"],
        "on_topic": curves["on_topic"],
        "areas": {k: round(pseudolabel_eval.area(v), 4) for k, v in env.items()},
        "c_at_or_above_b": bool((diff >= -1e-12).all()),
        "worst_gap": {"coverage": round(float(diff[worst]), 4), "precision": float(grid[worst])},
        "coverage_at": {
            f"{p:.3f}": {
                k: round(float(v[int(np.argmin(np.abs(grid - p)))]), 4) for k, v in env.items()
            }
            for p in (0.90, 0.95, 0.98, 0.99)
        },
        "default": {
            k: {m: v.get(m) for m in ("kept", "correct", "precision", "coverage")}
            for k, v in curves["default"].items()
        },
    }


def curve_plot(oof: dict[str, Any], truth: dict[str, Any] | None = None) -> bytes:
    """``precision_coverage.png``: (a), (b), (c) from OOF and, if given, from the truth file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [oof] + ([truth] if truth else [])
    figure, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5), squeeze=False)
    for ax, curves in zip(axes[0], panels, strict=True):
        summary = curve_summary(curves)
        styles = {
            "b": ("tab:blue", "-", "(b) single head, global threshold"),
            "c": ("tab:red", "-", "(c) K-fold rule (target, then floor)"),
        }
        for key, (color, line, name) in styles.items():
            pts = sorted(p for p in curves["points"][key] if not np.isnan(p[0]))
            pts = sorted(pts, key=lambda p: p[1])
            ax.plot(
                [p[1] for p in pts],
                [p[0] for p in pts],
                line,
                color=color,
                marker=".",
                markersize=3,
                label=f"{name}, area {summary['areas'][key]:.3f}",
            )
        a = curves["points"]["a"][0]
        ax.plot([a[1]], [a[0]], "k*", markersize=12, label="(a) argmax, no filter")
        c = curves["default"]["c"]
        if c["kept"]:
            ax.plot([c["coverage"]], [c["precision"]], "rD", markersize=8, label="(c) default")
        ax.axhspan(0.90, 0.995, color="gray", alpha=0.08)
        ax.set_xlabel("coverage (right labels kept / items with a class)")
        ax.set_ylabel("precision of kept labels")
        ax.set_title(
            f"{curves['source']}: {curves['candidates']} items; c ≥ b on 0.90-0.995: "
            f"{summary['c_at_or_above_b']}",
            fontsize=9,
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    return _png(figure)


def build(
    table: pa.Table,
    *,
    labeled,
    kfold: pseudolabel.KFoldHeads,
    rule: open_set.OpenSetRule,
    noise: open_set.LabelNoise,
    pool_size: int,
    counters: dict[str, int],
    model: str,
    seconds: float,
    train_seconds: float,
    run_id: str,
) -> dict[str, Any]:
    """The report as a JSON-able dict; ``reconciled``: inputs == kept + dropped."""
    config, thresholds, ood = rule.config, rule.model.thresholds, rule.model.ood
    rows = table.to_pylist()
    counts = schema.tally(rows)
    reasons = counts.dropped_by_reason
    per_class: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for r in rows:
        per_class[r["label"] or "(not scored)"][r["reason"] or schema.KEPT] += 1
    scored = [r for r in rows if r["label"] is not None]
    rules = {
        "in_distribution": ("ood_score", config.ood),
        "heads_agree": ("heads_agree", config.require_agreement),
        "confidence_at_least_threshold": ("above_threshold", True),
        "label_is_query_class": ("query_match", config.require_query_match),
    }
    rule_counts = {
        name: {
            "enabled": enabled,
            "passed": sum(1 for r in scored if _passes(r, column, ood.delta)),
            "failed": sum(1 for r in scored if not _passes(r, column, ood.delta)),
            "dropped_first_by_this_rule": reasons.get(
                {
                    "in_distribution": pseudolabel.OUT_OF_DISTRIBUTION,
                    "heads_agree": pseudolabel.FOLD_DISAGREEMENT,
                    "confidence_at_least_threshold": pseudolabel.LOW_CONFIDENCE,
                    "label_is_query_class": pseudolabel.QUERY_MISMATCH,
                }[name],
                0,
            ),
        }
        for name, (column, enabled) in rules.items()
    }
    rule_counts["few_shot_prototypes_agree"] = {
        "enabled": True,
        "passed": None,
        "failed": reasons.get(pseudolabel.PROTOTYPE_DISAGREEMENT, 0),
        "dropped_first_by_this_rule": reasons.get(pseudolabel.PROTOTYPE_DISAGREEMENT, 0),
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
            "per_class": _per_class_oof(y, oof, thresholds, noise),
        },
        "label_noise": {
            "method": "cleanlab confident joint on OOF probabilities (classes with >= K images)",
            "classes_modeled": int(noise.modeled.sum()),
            "flagged_images": int(noise.issue.sum()),
            "noise_method": config.noise_method,
            "filter_by": config.cleanlab_filter,
        },
        "few_shot": {
            "rule": open_set.FEW_SHOT_RULE,
            "classes": [classes.CLASS_FOLDERS[c] for c in np.flatnonzero(thresholds.few_shot)],
            "threshold": _finite(
                thresholds.tau[thresholds.few_shot][0] if thresholds.few_shot.any() else np.inf
            ),
            "beta": rule.model.proto_beta,
            "kept": sum(1 for r in rows if r["status"] == schema.KEPT and r.get("few_shot")),
        },
        "query_prior": _query_prior(rule, rows),
        "ood": {
            "enabled": config.ood,
            "score": "z = (median held-out cosine - cosine to the label's prototype) / MAD scale",
            "delta": _finite(ood.delta),
            "held_out_loss": round(ood.id_loss, 4),
            "max_id_loss": config.max_id_loss,
            "proxy_rejected": {k: round(v, 4) for k, v in ood.proxy_rejected.items()},
            "pool_sample": pool_size,
            "dropped": reasons.get(pseudolabel.OUT_OF_DISTRIBUTION, 0),
        },
        "label_issues": {
            "count": int(len(issues)),
            "file": "label_issues.csv",
            "worst": [_issue_row(labeled, kfold, i) for i in issues[:LABEL_ISSUES_LISTED]],
        },
        "plots": ["confidence_histograms.png", "reliability.png", "precision_coverage.png"],
        "seconds": round(seconds, 2),
        "train_seconds": round(train_seconds, 2),
    }


def _passes(row: dict[str, Any], column: str, delta: float) -> bool:
    if column == "ood_score":
        return row["ood_score"] is not None and row["ood_score"] <= delta
    return bool(row[column])


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


def _query_prior(rule: open_set.OpenSetRule, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """τ^Q per class and the candidates it kept that τ_c alone would have dropped."""
    q, tau = rule.model.query, rule.model.thresholds.tau
    if q is None:
        return {"enabled": False}
    kept = [r for r in rows if r["status"] == schema.KEPT and r["label"] is not None]
    thanks = [
        r
        for r in kept
        if r["label"] == r.get("query_class") and r["confidence"] < tau[r["label_index"]]
    ]
    return {
        "enabled": True,
        "rule": query_prior.RULE,
        "strength": rule.config.query_prior_strength,
        "pooled_prior": round(q.pooled_prior, 4),
        "kept_by_it": len(thanks),
        "per_class": [
            {
                "class": folder,
                "candidates": int(q.candidates[c]),
                "raw_prior": _round(q.raw_prior[c]),
                "prior": _round(q.prior[c]),
                "threshold": _finite(tau[c]),
                "query_threshold": _finite(q.tau[c]),
                "kept_by_it": sum(1 for r in thanks if r["label_index"] == c),
            }
            for c, folder in enumerate(classes.CLASS_FOLDERS)
            if np.isfinite(q.prior[c])
        ],
    }


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
    noise, few, ood = report["label_noise"], report["few_shot"], report["ood"]
    lines.append(
        f"  label noise (cleanlab, {noise['classes_modeled']} classes modeled): "
        f"{noise['flagged_images']} official labels flagged"
    )
    lines.append(
        f"  few-shot classes (prototype rule): {len(few['classes'])}, threshold "
        f"{few['threshold']}, kept {few['kept']}"
    )
    query = report.get("query_prior", {})
    if query.get("enabled"):
        lines.append(
            f"  crawl query as a second view: {len(query['per_class'])} classes with τ^Q, "
            f"pool-wide π {query['pooled_prior']}, kept thanks to it {query['kept_by_it']}"
        )
    if ood["enabled"]:
        proxies = ", ".join(f"{k} {v:.2f}" for k, v in ood["proxy_rejected"].items())
        lines.append(
            f"  OOD cut δ={ood['delta']} (z): held-out labeled rejected {ood['held_out_loss']:.3f}"
            f"; proxies rejected: {proxies or 'none'}; pool sample {ood['pool_sample']}"
        )
    else:
        lines.append("  OOD test off (--no-ood)")
    for key in ("oof_curves", "truth"):
        summary = report.get(key)
        if summary:
            areas = ", ".join(f"({k}) {v:.3f}" for k, v in summary["areas"].items())
            lines.append(
                f"  precision-coverage areas, {summary['source']} ({summary['candidates']}): "
                f"{areas}; c >= b everywhere: {summary['c_at_or_above_b']}"
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
    noise, few, ood = report["label_noise"], report["few_shot"], report["ood"]
    out += [
        "",
        f"Label noise: {noise['method']}; {noise['classes_modeled']} classes modeled, "
        f"{noise['flagged_images']} official labels flagged. τ_c is the lowest confidence at "
        f"which the class's OOF predictions reach the target against the cleaned labels "
        f"(`{noise['noise_method']}`): *P obs* is that precision against the given labels, "
        f"*P est* against the cleaned ones.",
        "",
        "| class | train | kind | OOF top-1 | OOF top-3 | OOF predictions | τ | noise rate "
        "(cleanlab) | flagged | P obs at τ | P est at τ | kept | dropped |",
        "| --- | ---: | --- " + "| ---: " * 10 + "|",
    ]
    for c in teacher["per_class"]:
        outcome = report["per_class"].get(c["class"], {})
        kept = outcome.get(schema.KEPT, 0)
        dropped = sum(v for k, v in outcome.items() if k != schema.KEPT)
        out.append(
            f"| {c['class']} | {c['train_images']} | {c['kind']} | {_cell(c['oof_top1'])} | "
            f"{_cell(c['oof_top3'])} | {c['oof_predictions']} | {_cell(c['threshold'])} | "
            f"{_cell(c['noise_rate'])} | {_cell(c['flagged_share'])} | "
            f"{_cell(c['observed_precision'])} | {_cell(c['estimated_precision'])} | {kept} | "
            f"{dropped} |"
        )
    out += [
        "",
        "## Few-shot classes",
        "",
        few["rule"],
        "",
        f"Few-shot classes: {', '.join(few['classes']) or 'none'}; few-shot threshold "
        f"{few['threshold']} (prototype classifier, β={few['beta']}); kept {few['kept']}.",
        "",
    ]
    query = report.get("query_prior", {})
    if query.get("enabled"):
        out += [
            "## The crawl query as a second view",
            "",
            query["rule"],
            "",
            f"Pool-wide π {query['pooled_prior']} (each query shrunk toward it by "
            f"{query['strength']} pseudo-candidates); kept thanks to τ^Q: {query['kept_by_it']}.",
            "",
            "| class | candidates | π (own) | π | τ | τ^Q | kept thanks to τ^Q |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
            *[
                f"| {c['class']} | {c['candidates']} | {_cell(c['raw_prior'])} | "
                f"{_cell(c['prior'])} | {_cell(c['threshold'])} | {_cell(c['query_threshold'])} "
                f"| {c['kept_by_it']} |"
                for c in query["per_class"]
            ],
            "",
        ]
    out += [
        "## Out-of-distribution test",
        "",
    ]
    if ood["enabled"]:
        out += [
            f"Score: {ood['score']}. Cut δ = {ood['delta']} (Youden J between held-out labeled "
            f"images and OOD proxies, at most {ood['max_id_loss']} of held-out images "
            f"rejected): held-out loss {ood['held_out_loss']}; {ood['dropped']} candidates "
            f"dropped as out_of_distribution. Pool sample for proxies: {ood['pool_sample']}.",
            "",
            "| proxy kind | rejected at δ |",
            "| --- | ---: |",
            *[f"| {k} | {v} |" for k, v in ood["proxy_rejected"].items()],
        ]
    else:
        out.append("Off (`--no-ood`).")
    out += ["", "## Precision-coverage curves", ""]
    for key in ("oof_curves", "truth"):
        summary = report.get(key)
        if not summary:
            continue
        out += [
            f"{summary['source']} ({summary['candidates']} items, {summary['on_topic']} with a "
            f"class): areas over precision 0.90-0.995 "
            + ", ".join(f"({k}) {v}" for k, v in summary["areas"].items())
            + f"; (c) at or above (b) everywhere: {summary['c_at_or_above_b']}.",
            "",
        ]
    out += ["![precision-coverage](precision_coverage.png)"]
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
    table: pa.Table,
    labeled,
    kfold: pseudolabel.KFoldHeads,
    thresholds: open_set.NoiseAwareThresholds,
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
        if np.isfinite(thresholds.tau[c]) and thresholds.kind[c] == pseudolabel.TAU_CLASS:
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
