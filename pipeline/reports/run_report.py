"""``W/report.html``: the whole run on one self-contained page (every image embedded).

::

  W/run/state.json + each stage's manifest and report.json + its PNGs
      → funnel (kept and dropped per reason, per stage) → pseudo-labels per class,
        thresholds and the stage's plots → duplicates and leaks as thumbnail pairs →
        label issues with thumbnails → the student (ablation, confusion, latency, size)
        → FiftyOne view links → config, versions, times

Everything is read from what the stages wrote; nothing is recomputed. A stage that has
not run is one line saying so.
"""

from __future__ import annotations

import base64
import collections
import csv
import functools
import html
import io
import json
import os
from importlib import metadata
from typing import Any

from pipeline.core import classes
from pipeline.store import manifest, workdir

REPORT = "report.html"
THUMB = (192, 128)
MAX_PAIRS = 24
MAX_ISSUES = 16
REVIEW_VIEWS = (
    "pseudo-lowest-confidence", "dropped-just-below-threshold", "likely-mislabeled-official",
    "near-duplicates", "leaks",
)  # fmt: skip
VERSIONS = ("camsdd", "apache-beam", "tensorflow", "tensorflow-datasets", "fiftyone", "cleanlab")
FUNNEL_STAGES = ("crawl", "fetch", "dedup", "pseudolabel")


def _e(value: Any) -> str:
    return html.escape(str(value))


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return _img_tag(buffer.getvalue(), "image/png")


def _img_tag(data: bytes, mime: str, alt: str = "", css: str = "") -> str:
    encoded = base64.b64encode(data).decode()
    return f'<img class="{css}" alt="{_e(alt)}" src="data:{mime};base64,{encoded}">'


def _thumbnail(path: str | None, alt: str) -> str:
    if not path or not workdir.exists(path):
        return f'<div class="missing">{_e(alt)}: no file</div>'
    from PIL import Image

    try:
        with Image.open(io.BytesIO(workdir.read_bytes(path))) as image:
            image = image.convert("RGB")
            image.thumbnail(THUMB)
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=80)
    except OSError:
        return f'<div class="missing">{_e(alt)}: unreadable</div>'
    return _img_tag(buffer.getvalue(), "image/jpeg", alt, "thumb")


@functools.lru_cache(maxsize=8)
def _stage_rows(work: str, stage: str) -> list[dict[str, Any]] | None:
    """The latest manifest's rows of ``stage`` (read once per report; see ``render``)."""
    if stage == "crawl":
        runs = manifest.crawl_runs(work)
        if not runs:
            return None
        paths = [p for shards in runs.values() for p in shards]
    else:
        latest = manifest.latest_run(work, stage)
        if latest is None:
            return None
        paths = latest[1]
    columns = ["key", "status", "reason", "query_class"]
    columns += ["label"] if stage == "pseudolabel" else []
    return manifest.read_table(paths, columns).to_pylist()


def _reason(reason: str | None) -> str:
    return (reason or "").split(":", 1)[0] or "unknown"


def funnel_counts(work: str) -> dict[str, dict[str, int]]:
    """Per stage: ``kept`` and one count per drop reason (reasons like ``duplicate_of:K``
    counted under their kind)."""
    counts = {}
    for stage in FUNNEL_STAGES:
        rows = _stage_rows(work, stage)
        if rows is None:
            continue
        counter = collections.Counter(
            "kept" if r["status"] == "kept" else _reason(r["reason"]) for r in rows
        )
        counts[stage] = {"kept": counter.pop("kept", 0), **dict(counter.most_common())}
    return counts


def _funnel_figure(counts: dict[str, dict[str, int]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = list(counts)
    reasons = sorted({r for c in counts.values() for r in c if r != "kept"})
    figure, axis = plt.subplots(figsize=(9, 0.7 * len(stages) + 1.6))
    left = [0] * len(stages)
    # Kept is the one green; drop reasons take the palette's other colours.
    colours = [c for i, c in enumerate(plt.get_cmap("tab20").colors) if i not in (4, 5)]
    for i, name in enumerate(["kept", *reasons]):
        values = [counts[s].get(name, 0) for s in stages]
        colour = "#2a9d4b" if name == "kept" else colours[(i - 1) % len(colours)]
        axis.barh(stages, values, left=left, color=colour, label=name)
        left = [a + b for a, b in zip(left, values, strict=True)]
    axis.invert_yaxis()
    axis.set_xlabel("candidates")
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=4, fontsize=8)
    axis.set_title("What each stage kept and dropped (by reason)")
    return _png(figure)


def _per_class_figure(kept: collections.Counter) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 3))
    names = list(classes.CLASS_FOLDERS)
    axis.bar(range(len(names)), [kept.get(n, 0) for n in names], color="#2a6f9d")
    axis.set_xticks(range(len(names)), names, rotation=70, fontsize=7)
    axis.set_ylabel("kept pseudo-labels")
    axis.set_title("extra_pseudo per class")
    return _png(figure)


def _read_json(path: str) -> dict[str, Any] | None:
    if not workdir.exists(path):
        return None
    try:
        return json.loads(workdir.read_bytes(path))
    except ValueError:
        return None


def _table(header: list[str], rows: list[list[Any]], css: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if str(c).startswith('<') else _e(c)}</td>" for c in row)
        + "</tr>"
        for row in rows
    )  # fmt: skip
    return f'<table class="{css}"><tr>{head}</tr>{body}</table>'


def _section_funnel(work: str) -> str:
    counts = funnel_counts(work)
    if not counts:
        return "<p>No stage has written a manifest yet.</p>"
    reasons = sorted({r for c in counts.values() for r in c if r != "kept"})
    rows = [
        [stage, sum(c.values()), c.get("kept", 0), *[c.get(r, "") for r in reasons]]
        for stage, c in counts.items()
    ]
    table = _table(["stage", "in", "kept", *reasons], rows, "funnel")
    return _funnel_figure(counts) + table + _per_class_funnel(work, list(counts))


def _per_class_funnel(work: str, stages: list[str]) -> str:
    """Kept candidates per class (the class the crawler searched for) after each stage."""
    kept = {}
    for stage in stages:
        rows = _stage_rows(work, stage) or []
        kept[stage] = collections.Counter(
            r["query_class"] for r in rows if r["status"] == "kept" and r["query_class"]
        )
    names = [c for c in classes.CLASS_FOLDERS if any(kept[s].get(c) for s in stages)]
    rows = [[name, *[kept[s].get(name, 0) for s in stages]] for name in names]
    return (
        "<details><summary>kept per class (the class searched for) after each stage"
        "</summary>" + _table(["class", *stages], rows, "per-class-funnel") + "</details>"
    )


def _section_pseudolabels(work: str) -> str:
    folder = workdir.join(work, "pseudolabel")
    report = _read_json(workdir.join(folder, "report.json"))
    rows = _stage_rows(work, "pseudolabel")
    if report is None or rows is None:
        return "<p>Pseudolabel has not run.</p>"
    kept = collections.Counter(r["label"] for r in rows if r["status"] == "kept")
    parts = [
        f"<p>{report.get('kept', 0)} kept of {report.get('inputs', len(rows))} dedup-kept "
        f"candidates; teacher {_e(report.get('model', ''))}, OOF top-1 "
        f"{report.get('teacher', {}).get('oof_top1', '?')}, top-3 "
        f"{report.get('teacher', {}).get('oof_top3', '?')}.</p>",
        _per_class_figure(kept),
    ]
    per_class = report.get("teacher", {}).get("per_class", [])
    if per_class:
        header = ["class", "labeled", "threshold", "from", "kept"]
        extra = [k for k in ("noise_rate", "kind") if k in per_class[0]]
        table_rows = [
            [c["class"], c.get("train_images", ""), c.get("threshold", ""),
             c.get("threshold_from", ""), kept.get(c["class"], 0), *[c.get(k, "") for k in extra]]
            for c in per_class
        ]  # fmt: skip
        parts.append(_table(header + extra, table_rows, "classes"))
    for name in report.get("plots", []):
        path = workdir.join(folder, name)
        if workdir.exists(path):
            parts.append(f"<h3>{_e(name)}</h3>" + _img_tag(workdir.read_bytes(path), "image/png"))
    return "".join(parts)


def _reference_paths(work: str) -> dict[str, str]:
    latest = manifest.latest_run(work, "reference")
    if latest is None:
        return {}
    table = manifest.read_table(latest[1], ["key", "path"])
    return dict(zip(table.column("key").to_pylist(), table.column("path").to_pylist(), strict=True))


def _in_work(work: str, path: str | None) -> str | None:
    return workdir.resolve(work, path) if path else None


def _section_duplicates(work: str, references: dict[str, str]) -> str:
    report = _read_json(workdir.join(work, "dedup", "report.json"))
    if report is None:
        return "<p>Dedup has not run.</p>"
    paths = {}
    for cluster in report.get("clusters", []):
        for member in cluster["members"]:
            paths[member["key"]] = _in_work(work, member.get("image_path"))
    pairs = []
    for leak in report.get("leaks", []):
        pairs.append((leak["key"], _in_work(work, leak.get("image_path")), leak["match_key"],
                      references.get(leak["match_key"]), leak["reason"],
                      leak.get("match_kind"), leak.get("match_distance")))  # fmt: skip
    for cluster in report.get("clusters", []):
        kept = next((m for m in cluster["members"] if m["status"] == "kept"), None)
        for member in cluster["members"]:
            if member is kept or kept is None:
                continue
            pairs.append((member["key"], paths[member["key"]], kept["key"], paths[kept["key"]],
                          "duplicate", member.get("match_kind"),
                          member.get("match_distance")))  # fmt: skip
    if not pairs:
        return "<p>No duplicates or leaks found.</p>"
    cards = []
    for key, path, match, match_path, reason, kind, distance in pairs[:MAX_PAIRS]:
        cards.append(
            '<div class="pair">' + _thumbnail(path, key) + _thumbnail(match_path, match)
            + f"<p><b>{_e(reason)}</b> {_e(kind or '')} distance {_distance(distance)}<br>"
            f"{_e(key)} → {_e(match)}</p></div>"
        )  # fmt: skip
    more = f"<p>… and {len(pairs) - MAX_PAIRS} more.</p>" if len(pairs) > MAX_PAIRS else ""
    return (
        f"<p>{len(report.get('leaks', []))} leaks of labeled images, "
        f"{report.get('cluster_count', 0)} duplicate clusters in the crawl "
        "(dropped candidate left, what it matched right).</p>"
        f'<div class="strip">{"".join(cards)}</div>{more}'
    )


def _distance(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) else _e(value)


def _section_label_issues(work: str, references: dict[str, str]) -> str:
    path = workdir.join(work, "pseudolabel", "label_issues.csv")
    if not workdir.exists(path):
        return "<p>No label-issue list (pseudolabel has not run).</p>"
    rows = list(csv.DictReader(io.StringIO(workdir.read_bytes(path).decode())))
    if not rows:
        return "<p>No official image's OOF prediction contradicts its label.</p>"
    cards = [
        '<div class="pair">' + _thumbnail(references.get(r["key"]), r["key"])
        + f"<p>{_e(r['key'])}<br>given <b>{_e(r['given'])}</b>, teacher says "
        f"<b>{_e(r['predicted'])}</b> (self-confidence {_e(r['self_confidence'])})</p></div>"
        for r in rows[:MAX_ISSUES]
    ]  # fmt: skip
    return (
        f"<p>{len(rows)} official training images whose held-out prediction contradicts "
        "their label, lowest self-confidence first (nothing removed).</p>"
        f'<div class="strip">{"".join(cards)}</div>'
    )


def _section_student(work: str) -> str:
    models = workdir.join(work, "models")
    if not workdir.exists(models):
        return "<p>No student trained yet.</p>"
    parts = []
    for ablation_path in sorted(workdir.match(workdir.join(models, "*", "ablation.json"))):
        ablation = _read_json(ablation_path) or {}
        rows = []
        for arm, values in ablation.get("arms", {}).items():
            for kind in ("float", "int8"):
                for split, scores in values.get(kind, {}).items():
                    rows.append([arm, values.get("split", ""), kind, split, scores.get("top1"),
                                 scores.get("top3")])  # fmt: skip
        parts.append("<h3>With and without extra_pseudo</h3>"
                     + _table(["arm", "training split", "model", "split", "top-1", "top-3"],
                              rows))  # fmt: skip
    for evaluation in sorted(
        workdir.match(workdir.join(models, "**", "evaluation", "*", "report.json"))
    ):
        report = _read_json(evaluation) or {}
        folder = os.path.dirname(evaluation)
        name = os.path.relpath(folder, models)
        latency = report.get("latency", {})
        parts.append(
            f"<h3>{_e(name)}</h3><p>{_e(report.get('dataset', ''))}: size "
            f"{report.get('size_mb', 0):.2f} MB, integer only {report.get('integer_only')}, "
            f"latency {_e(_latency(latency))}</p>"
        )
        rows = []
        for split, scores in report.get("splits", {}).items():
            rows.append([split, scores.get("examples"), scores.get("top1"), scores.get("top3")])
        parts.append(_table(["split", "examples", "top-1", "top-3"], rows))
        per_class = report.get("splits", {}).get("test", {}).get("per_class", {})
        if per_class:
            parts.append(
                "<details><summary>per-class accuracy (test)</summary>"
                + _table(["class", "accuracy"],
                         [[c, _accuracy(v)] for c, v in per_class.items()])
                + "</details>"
            )  # fmt: skip
        for png in sorted(workdir.match(workdir.join(folder, "confusion_*.png"))):
            parts.append(_img_tag(workdir.read_bytes(png), "image/png", "confusion", "confusion"))
    return "".join(parts) or "<p>No evaluation yet.</p>"


def _latency(latency: dict[str, Any]) -> str:
    if not isinstance(latency, dict):
        return str(latency)
    items = [
        f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
        for k, v in latency.items()
        if not isinstance(v, (dict, list))
    ]
    return ", ".join(items[:4])


def _accuracy(value: Any) -> Any:
    return value.get("accuracy", value.get("top1", "")) if isinstance(value, dict) else value


def _section_review(work: str, port: int, labeled: str) -> str:
    if not workdir.exists(workdir.join(work, "review", "db")):
        return "<p>No review dataset yet: <code>camsdd review --work W --labeled ROOT</code>.</p>"
    base = f"http://127.0.0.1:{port}/datasets/camsdd-review"
    links = "".join(f'<li><a href="{base}?view={v}">{v}</a></li>' for v in REVIEW_VIEWS)
    return (
        f"<p>Start the App first: <code>camsdd review --work {_e(work)} --labeled "
        f"{_e(labeled)} --port {port}</code>, then open a view:</p><ul>{links}</ul>"
    )


def _versions() -> list[list[str]]:
    found = []
    for name in VERSIONS:
        try:
            found.append([name, metadata.version(name)])
        except metadata.PackageNotFoundError:
            continue
    return found


def _section_run(work: str, state: dict[str, Any], config_text: str) -> str:
    rows = [
        [stage, s.get("seconds", ""), s.get("finished_at", "")]
        for stage, s in state.get("stages", {}).items()
    ]
    return (
        f"<p>Work dir <code>{_e(workdir.absolute(work))}</code>; config "
        f"<code>{_e(state.get('config', ''))}</code>.</p>"
        + _table(["stage", "seconds (last run)", "finished"], rows, "times")
        + _table(["package", "version"], _versions())
        + f"<details><summary>config</summary><pre>{_e(config_text)}</pre></details>"
    )


CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1100px;color:#222}
h1{margin-bottom:0}h2{border-bottom:2px solid #2a6f9d;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}
.strip{display:flex;flex-wrap:wrap;gap:10px}
.pair{border:1px solid #ddd;padding:6px;width:400px;font-size:12px}
.pair img{margin-right:4px}.missing{display:inline-block;width:192px;color:#a00}
img{max-width:100%}img.confusion{max-width:49%}pre{background:#f6f6f6;padding:8px;font-size:12px}
"""


def render(
    work: str,
    state: dict[str, Any],
    config_text: str = "",
    port: int = 5151,
    labeled: str = "CAMSDD_ROOT",
) -> str:
    _stage_rows.cache_clear()  # manifests read once per report, never from an earlier one
    references = _reference_paths(work)
    sections = [
        ("funnel", "Funnel: what each stage kept and dropped", _section_funnel(work)),
        ("pseudolabels", "Pseudo-labels", _section_pseudolabels(work)),
        ("duplicates", "Duplicates and leaks", _section_duplicates(work, references)),
        ("label-issues", "Label issues in the official set",
         _section_label_issues(work, references)),
        ("student", "The student", _section_student(work)),
        ("review", "Review in FiftyOne", _section_review(work, port, labeled)),
        ("run", "The run", _section_run(work, state, config_text)),
    ]  # fmt: skip
    body = "".join(f'<section id="{i}"><h2>{_e(t)}</h2>{c}</section>' for i, t, c in sections)
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>camsdd run: {_e(work)}'
        f"</title><style>{CSS}</style></head><body><h1>camsdd run</h1>"
        f"<p>{_e(workdir.absolute(work))}</p>{body}</body></html>"
    )


def write(work: str, state: dict[str, Any], config: Any = None) -> str:
    """Writes W/report.html (atomically); returns its path."""
    config_text, port, labeled = "", 5151, "CAMSDD_ROOT"
    if config is not None:
        port = config.stages.get("review", {}).get("port", 5151)
        labeled = config.run.get("labeled") or labeled
        try:
            with open(config.path) as handle:
                config_text = handle.read()
        except OSError:
            config_text = ""
    path = workdir.join(work, REPORT)
    workdir.write_atomic(path, render(work, state, config_text, port, labeled).encode())
    return path
