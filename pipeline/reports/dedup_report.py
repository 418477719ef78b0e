"""The dedup run report: counts per reason and class, every leak, every duplicate cluster."""

from __future__ import annotations

import collections
import io
from typing import Any

import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from PIL import Image, ImageDraw

from pipeline.core import classes, dedup, schema
from pipeline.store import workdir

MAX_CLUSTERS_LISTED = 200
THUMB = (144, 96)


def reference_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The labeled images dedup compared against (``W/reference`` rows)."""
    usable = [r for r in rows if r["status"] == schema.KEPT]
    return {
        "images": len(usable),
        "per_split": dict(collections.Counter(r["split"] for r in usable)),
        "unreadable": [f"{r['key']}\t{r['reason']}" for r in rows if r["status"] != schema.KEPT],
    }


def build(
    table: pa.Table,
    *,
    counters: dict[str, int],
    reference: dict[str, Any],
    config: dict[str, Any],
    embeddings_model: str | None,
    seconds: float,
    run_id: str,
) -> dict[str, Any]:
    """The report as a JSON-able dict; ``reconciled``: inputs == kept + dropped."""
    rows = table.to_pylist()
    counts = schema.tally(rows, group=schema.query_class_of, family=dedup.reason_family)
    leak_reasons = set(dedup.SPLIT_REASONS.values())
    leaks = [
        {
            "key": r["key"],
            "reason": r["reason"],
            "match_key": r["match_key"],
            "match_kind": r["match_kind"],
            "match_distance": r["match_distance"],
            "query_class": r["query_class"],
            "url": r["url"],
            "image_path": r["image_path"],
        }
        for r in sorted(rows, key=lambda r: (r["reason"] or "", r["key"]))
        if r["reason"] in leak_reasons
    ]
    clusters: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for r in rows:
        if (r["cluster_size"] or 1) > 1:
            clusters[r["cluster"]].append(r)
    listed = []
    for cluster_id, members in sorted(clusters.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        members = sorted(members, key=lambda r: (r["status"] != schema.KEPT, r["key"]))
        listed.append(
            {
                "cluster": cluster_id,
                "size": len(members),
                "members": [
                    {
                        "key": m["key"],
                        "status": m["status"],
                        "reason": m["reason"],
                        "match_kind": m["match_kind"],
                        "match_distance": m["match_distance"],
                        "size": f"{m['width']}x{m['height']}",
                        "license": m["license"],
                        "image_path": m["image_path"],
                    }
                    for m in members
                ],
            }
        )
    inputs = counters.get("inputs", len(rows))
    return {
        "run_id": run_id,
        "inputs": inputs,
        "rows": len(rows),
        "kept": counts.kept,
        "dropped": counts.dropped,
        "reconciled": counts.reconciles(inputs),
        "dropped_by_reason": counts.dropped_by_reason,
        "per_class": {k: counts.per_group[k] for k in classes.sort_class_folders(counts.per_group)},
        "leaks": leaks,
        "clusters": listed[:MAX_CLUSTERS_LISTED],
        "cluster_count": len(clusters),
        "reference": {k: v for k, v in reference.items() if k != "paths"},
        "config": config,
        "embeddings_model": embeddings_model,
        "seconds": round(seconds, 2),
        "beam_counters": counters,
    }


def render_text(report: dict[str, Any]) -> str:
    ref = report["reference"]
    lines = [
        f"dedup run {report['run_id']}: {report['inputs']} candidates -> {report['kept']} kept, "
        f"{report['dropped']} dropped "
        f"({'reconciled' if report['reconciled'] else 'NOT RECONCILED'}) in {report['seconds']} s",
        f"  reference: {ref['images']} labeled images {ref['per_split']}; hashes radius "
        f"{report['config']['radius']}, embeddings: {report['embeddings_model'] or 'not used'}",
    ]
    if report["dropped_by_reason"]:
        lines.append("  dropped by reason:")
        lines += [f"    {k:<22} {v:>6}" for k, v in report["dropped_by_reason"].items()]
    if report["leaks"]:
        lines.append("  matches of labeled images:")
        for leak in report["leaks"]:
            distance = leak["match_distance"]
            lines.append(
                f"    {leak['key']:<24} {leak['reason']:<20} {leak['match_key']} "
                f"({leak['match_kind']}{'' if distance is None else f' {distance:g}'})"
            )
    if report["clusters"]:
        lines.append(f"  duplicate clusters among candidates: {report['cluster_count']}")
        for cluster in report["clusters"][:20]:
            members = ", ".join(
                m["key"] + ("*" if m["status"] == schema.KEPT else "") for m in cluster["members"]
            )
            lines.append(f"    {cluster['size']} images: {members}")
    return "\n".join(lines)


def render_markdown(report: dict[str, Any]) -> str:
    ref = report["reference"]
    lines = [
        f"# Dedup report ({report['run_id']})",
        "",
        f"{report['inputs']} candidates: **{report['kept']} kept**, {report['dropped']} dropped"
        f" — {'reconciled' if report['reconciled'] else '**NOT reconciled**'}.",
        f"Reference: {ref['images']} labeled images ({ref['per_split']}); "
        f"{len(ref['unreadable'])} unreadable. Hash radius {report['config']['radius']} bits; "
        f"embeddings: {report['embeddings_model'] or 'not used'} "
        f"(min cosine {report['config']['min_cosine']}).",
        "",
        "## Dropped by reason",
        "",
        "| reason | count |",
        "| --- | ---: |",
        *[f"| {k} | {v} |" for k, v in report["dropped_by_reason"].items()],
        "",
        "## Matches of labeled images (leaks and train duplicates)",
        "",
        "| candidate | reason | labeled image | how | distance |",
        "| --- | --- | --- | --- | ---: |",
    ]
    for leak in report["leaks"]:
        distance = "" if leak["match_distance"] is None else f"{leak['match_distance']:g}"
        lines.append(
            f"| {leak['key']} | {leak['reason']} | {leak['match_key']} | {leak['match_kind']} "
            f"| {distance} |"
        )
    lines += ["", f"## Duplicate clusters ({report['cluster_count']})", ""]
    for cluster in report["clusters"]:
        lines.append(f"- **{cluster['size']} images**:")
        for m in cluster["members"]:
            how = (
                f" ({m['match_kind']} {m['match_distance']:g})"
                if m["match_distance"] is not None
                else ""
            )
            lines.append(
                f"  - {m['key']} {m['size']} {m['license'] or 'no license'}: "
                f"{m['status'] if m['status'] == schema.KEPT else m['reason']}{how}"
            )
    lines += ["", "## Per class", "", "| class | kept | dropped |", "| --- | ---: | ---: |"]
    for name, counts in report["per_class"].items():
        dropped = sum(v for k, v in counts.items() if k != schema.KEPT)
        lines.append(f"| {name} | {counts.get(schema.KEPT, 0)} | {dropped} |")
    if report.get("contact_sheet"):
        lines += ["", "## Contact sheet", "", f"![leaks and clusters]({report['contact_sheet']})"]
    return "\n".join(lines) + "\n"


def _thumb(path: str | None) -> Image.Image:
    canvas = Image.new("RGB", THUMB, (40, 40, 40))
    if path:
        try:
            with FileSystems.open(path) as handle:
                image = Image.open(io.BytesIO(handle.read())).convert("RGB")
            image.thumbnail(THUMB)
            canvas.paste(image, ((THUMB[0] - image.width) // 2, (THUMB[1] - image.height) // 2))
        except Exception:  # a missing image leaves a grey tile; the table still names it
            pass
    return canvas


def contact_sheet(
    report: dict[str, Any], reference_paths: dict[str, str], out_path: str, work: str
) -> str:
    """A PNG: one row per leak (candidate | labeled image), then one row per cluster.

    Candidate image paths are relative to the work dir ``work``.
    """
    rows: list[tuple[str, list[tuple[str | None, str]]]] = []
    for leak in report["leaks"]:
        if leak["match_kind"] == "cluster":
            continue
        rows.append(
            (
                f"{leak['reason']} ({leak['match_kind']} {leak['match_distance']:g})",
                [
                    (workdir.resolve(work, leak["image_path"]), leak["key"]),
                    (reference_paths.get(leak["match_key"]), leak["match_key"]),
                ],
            )
        )
    for cluster in report["clusters"][:30]:
        rows.append(
            (
                f"cluster of {cluster['size']}",
                [
                    (
                        workdir.resolve(work, m["image_path"]),
                        m["key"] + (" (kept)" if m["status"] == schema.KEPT else ""),
                    )
                    for m in cluster["members"][:6]
                ],
            )
        )
    label_height, width = 16, 6 * (THUMB[0] + 4) + 4
    sheet = Image.new(
        "RGB", (width, max(1, len(rows)) * (THUMB[1] + 2 * label_height + 8)), "white"
    )
    draw = ImageDraw.Draw(sheet)
    y = 4
    for title, tiles in rows:
        draw.text((4, y), title, fill="black")
        y += label_height
        for i, (path, caption) in enumerate(tiles):
            x = 4 + i * (THUMB[0] + 4)
            sheet.paste(_thumb(path), (x, y))
            draw.text((x, y + THUMB[1] + 1), caption[:24], fill="black")
        y += THUMB[1] + label_height + 8
    buffer = io.BytesIO()
    sheet.save(buffer, "PNG")
    with FileSystems.create(out_path) as handle:
        handle.write(buffer.getvalue())
    return out_path
