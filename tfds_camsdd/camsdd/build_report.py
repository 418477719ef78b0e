"""The CamSDD build report: what was found, written, repaired, skipped and ignored.

Written as ``build_report.json`` next to the built dataset
(``<data_dir>/camsdd/<config>/<version>/``) and logged as text.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from etils import epath

from pipeline.store import camsdd_layout

REPORT_FILE = "build_report.json"
_MAX_LISTED = 20


def query_counters(pipeline_result: Any, namespace: str) -> dict[str, int]:
    """Committed Beam counters of ``namespace``, summed over steps, by name."""
    from apache_beam.metrics import MetricsFilter

    results = pipeline_result.metrics().query(MetricsFilter().with_namespace(namespace))
    totals: dict[str, int] = defaultdict(int)
    for counter in results["counters"]:
        totals[counter.key.metric.name] += counter.committed or 0
    return dict(totals)


def compose(
    *,
    dataset: str,
    scan: camsdd_layout.LayoutScan,
    issues: list[dict],
    counters: dict[str, int],
    policy: str,
) -> dict:
    """Joins the layout scan with the per-image issues and Beam counters."""
    issues = sorted(issues, key=lambda i: i["path"])
    skipped = [i for i in issues if i["action"] == "skipped"]
    repaired = [i for i in issues if i["action"] == "repaired"]
    warnings = scan.count_warnings()
    splits = {}
    for split, split_scan in scan.splits.items():
        split_skipped = [i for i in skipped if i["split"] == split]
        class_counts = split_scan.class_counts()
        for issue in split_skipped:
            class_counts[issue["class_folder"]] -= 1
        expected = len(split_scan.files) - len(split_skipped)
        written = counters.get(f"{split}/examples")
        if written is not None and written != expected:
            warnings.append(
                f"{split}: {written} examples written but {len(split_scan.files)} found "
                f"- {len(split_skipped)} skipped = {expected}; counts do not reconcile"
            )
        splits[split] = {
            "folder": split_scan.folder,
            "images_found": len(split_scan.files),
            "examples_written": written if written is not None else expected,
            "repaired": sum(1 for i in repaired if i["split"] == split),
            "skipped": len(split_skipped),
            "ignored_files": len(split_scan.ignored),
            "official_images": camsdd_layout.OFFICIAL_COUNTS[split],
            "class_counts": class_counts,
            "empty_classes": split_scan.empty_classes,
        }
    return {
        "dataset": dataset,
        "root": scan.root,
        "invalid_image_policy": policy,
        "splits": splits,
        "skipped": [
            {"path": i["path"], "reason": i["reason"], "detail": i.get("detail", "")}
            for i in skipped
        ],
        "repaired": [{"path": i["path"], "reason": i["reason"]} for i in repaired],
        "ignored": [
            {"path": path, "why": why}
            for split_scan in scan.splits.values()
            for path, why in split_scan.ignored
        ],
        "ignored_top_level": scan.ignored_top_level,
        "warnings": warnings,
    }


def problem_lines(report: dict) -> list[str]:
    """One line per skipped or repaired file and per warning (long lists cut)."""
    lines = []
    for kind in ("skipped", "repaired"):
        entries = report[kind]
        for entry in entries[:_MAX_LISTED]:
            detail = entry.get("detail") or entry["reason"]
            lines.append(f"{kind} {entry['path']}: {detail}")
        if len(entries) > _MAX_LISTED:
            lines.append(f"... {len(entries) - _MAX_LISTED} more {kind} (see {REPORT_FILE})")
    lines.extend(report["warnings"])
    return lines


def render_text(report: dict) -> str:
    """The report as a small table plus its problems, for people."""
    lines = [
        f"Build report for {report['dataset']} (from {report['root']}, "
        f"invalid-image policy: {report['invalid_image_policy']})",
        f"  {'split':<10} {'found':>7} {'written':>8} {'repaired':>9} {'skipped':>8}"
        f" {'ignored':>8} {'official':>9}",
    ]
    for split, s in report["splits"].items():
        lines.append(
            f"  {split:<10} {s['images_found']:>7,} {s['examples_written']:>8,}"
            f" {s['repaired']:>9,} {s['skipped']:>8,} {s['ignored_files']:>8,}"
            f" {s['official_images']:>9,}"
        )
    problems = problem_lines(report)
    if problems:
        lines.append("  Warnings:")
        lines.extend(f"    {line}" for line in problems)
    for entry in report["ignored"][:_MAX_LISTED]:
        lines.append(f"  ignored {entry['path']}: {entry['why']}")
    if len(report["ignored"]) > _MAX_LISTED:
        lines.append(f"  ... {len(report['ignored']) - _MAX_LISTED} more ignored")
    return "\n".join(lines)


def load(dataset_dir: epath.PathLike) -> dict:
    """Reads the report of a built dataset directory."""
    return json.loads((epath.Path(dataset_dir) / REPORT_FILE).read_text())
