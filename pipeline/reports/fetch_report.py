"""The fetch run report: counts per status, reason and class, top errors, throughput."""

from __future__ import annotations

import collections
import re
from typing import Any

import pyarrow as pa

from pipeline.core import classes, schema
from pipeline.store import manifest

TOP_ERRORS = 10


def _error_pattern(message: str) -> str:
    # Group messages that differ only in quoted parts (URLs, names); numbers stay: they
    # are what a reader needs (which status, how many bytes, which limit).
    return re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", message)[:160]


def build(
    table: pa.Table,
    *,
    inputs: int,
    reused: int,
    seconds: float,
    resumed: int = 0,
    counters: dict[str, int] | None = None,
    run_id: str = "",
) -> dict[str, Any]:
    """The report as a JSON-able dict; ``reconciled`` says inputs == kept + dropped."""
    rows = table.select(["status", "reason", "error", "query_class", "bytes", "run_id"]).to_pylist()
    counts = schema.tally(rows, group=schema.query_class_of)
    errors = collections.Counter(_error_pattern(r["error"]) for r in rows if r["error"])
    fetched_now = [r for r in rows if r["run_id"] == run_id]
    downloaded = sum(r["bytes"] or 0 for r in fetched_now)
    report = {
        "run_id": run_id,
        "inputs": inputs,
        "rows": len(rows),
        "kept": counts.kept,
        "dropped": counts.dropped,
        "reconciled": counts.reconciles(inputs),
        "reused_from_previous_run": reused,
        "resumed_from_interrupted_run": resumed,
        "fetched_this_run": len(fetched_now),
        "dropped_by_reason": counts.dropped_by_reason,
        "per_class": {k: counts.per_group[k] for k in classes.sort_class_folders(counts.per_group)},
        "top_errors": errors.most_common(TOP_ERRORS),
        "seconds": round(seconds, 2),
        "candidates_per_second": round(len(fetched_now) / seconds, 2) if seconds else None,
        "megabytes_downloaded": round(downloaded / 1e6, 2),
        "beam_counters": counters or {},
    }
    return report


def render_text(report: dict[str, Any]) -> str:
    lines = [
        f"fetch run {report['run_id']}: {report['inputs']} candidates -> "
        f"{report['kept']} kept, {report['dropped']} dropped "
        f"({'reconciled' if report['reconciled'] else 'NOT RECONCILED'})",
        f"  fetched this run: {report['fetched_this_run']} in {report['seconds']} s "
        f"({report['candidates_per_second']}/s, {report['megabytes_downloaded']} MB); "
        f"reused from the previous run: {report['reused_from_previous_run']}" + _resumed(report),
    ]
    if report["dropped_by_reason"]:
        lines.append("  dropped by reason:")
        lines += [f"    {k:<22} {v:>6}" for k, v in report["dropped_by_reason"].items()]
    lines.append("  per class (kept / dropped):")
    for name, counts in report["per_class"].items():
        kept = counts.get(schema.KEPT, 0)
        dropped = sum(v for k, v in counts.items() if k != schema.KEPT)
        lines.append(f"    {name:<22} {kept:>6} / {dropped}")
    if report["top_errors"]:
        lines.append("  top errors:")
        lines += [f"    {count:>5} x {message}" for message, count in report["top_errors"]]
    conflicts = report.get("beam_counters", {}).get("label_conflicts", 0)
    if conflicts:
        lines.append(
            f"  WARNING {conflicts} candidates appear in several crawls with different labels; "
            "the alphabetically first label is used (see the crawl summaries)"
        )
    if report.get("settings"):
        lines.append("  settings: " + settings_line(report["settings"]))
    return "\n".join(lines)


def _resumed(report: dict[str, Any]) -> str:
    resumed = report.get("resumed_from_interrupted_run", 0)
    return f" (of which {resumed} finished by an interrupted run)" if resumed else ""


def settings_line(settings: dict[str, Any]) -> str:
    """The options that decide outcomes, on one line (recorded with every run)."""
    filters = settings.get("filters", {})
    shown = {k: v for k, v in filters.items() if not isinstance(v, (list, tuple))}
    return ", ".join(
        [f"{k}={settings[k]}" for k in ("max_bytes", "threads", "retry_transient") if k in settings]
        + [f"{k}={v}" for k, v in shown.items()]
    )


def render_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Fetch report ({report['run_id']})",
        "",
        f"{report['inputs']} candidates: **{report['kept']} kept**, {report['dropped']} dropped"
        f" — {'reconciled' if report['reconciled'] else '**NOT reconciled**'}.",
        f"Fetched this run: {report['fetched_this_run']} in {report['seconds']} s "
        f"({report['candidates_per_second']}/s, {report['megabytes_downloaded']} MB downloaded);"
        f" reused from the previous run: {report['reused_from_previous_run']}{_resumed(report)}.",
        "",
        "## Dropped by reason",
        "",
        "| reason | count |",
        "| --- | ---: |",
        *[f"| {k} | {v} |" for k, v in report["dropped_by_reason"].items()],
        "",
        "## Per class",
        "",
        "| class | kept | dropped | reasons |",
        "| --- | ---: | ---: | --- |",
    ]
    for name, counts in report["per_class"].items():
        dropped = {k.split(":", 1)[1]: v for k, v in counts.items() if k != schema.KEPT}
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(dropped.items()))
        lines.append(
            f"| {name} | {counts.get(schema.KEPT, 0)} | {sum(dropped.values())} | {reasons} |"
        )
    lines += ["", "## Top errors", ""]
    lines += [f"- {count} × `{message}`" for message, count in report["top_errors"]]
    if report.get("settings"):
        lines += ["", "## Settings", "", settings_line(report["settings"])]
    return "\n".join(lines) + "\n"


def write(work: str, report: dict[str, Any]) -> tuple[str, str]:
    return manifest.write_report(work, "fetch", report, render_markdown(report))
