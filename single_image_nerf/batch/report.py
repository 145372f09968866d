"""What a batch produced, from its store: the summary table printed at the end of `sin-batch` and the HTML index
(OUT/index.html) with each object's photo, turntable, links to its exports and runs, or the line it failed with."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Dict, List, Sequence

from single_image_nerf.batch.stages import STAGES, ObjectPaths


def object_status(rows: Sequence[Dict[str, object]]) -> str:
    """done (every stage done), failed (a stage failed) or unfinished."""
    statuses = [row["status"] for row in rows]
    if all(status == "done" for status in statuses):
        return "done"
    if "failed" in statuses:
        return "failed"
    return "unfinished"


def _cell(row: Dict[str, object]) -> str:
    if row["status"] == "done" and row["seconds"] is not None:
        return f"{row['seconds']:.1f} s"
    return {"pending": "-", "running": "stopped", "failed": "FAILED"}.get(str(row["status"]), str(row["status"]))


def _by_object(rows: Sequence[Dict[str, object]], names: Sequence[str]) -> Dict[str, List[Dict[str, object]]]:
    grouped: Dict[str, List[Dict[str, object]]] = {name: [] for name in names}
    for row in rows:
        if row["name"] in grouped:
            grouped[str(row["name"])].append(row)
    return grouped


def summary_table(rows: Sequence[Dict[str, object]], names: Sequence[str]) -> str:
    """A plain-text table: one line per object with its status, the time of each stage and its error line, then
    the counts and the total time per stage."""
    grouped = _by_object(rows, names)
    header = ["object", "status", *STAGES, "error"]
    lines = [header]
    for name in names:
        stages = grouped[name]
        errors = [str(row["error"]) for row in stages if row["status"] == "failed" and row["error"]]
        lines.append([name, object_status(stages), *(_cell(row) for row in stages), errors[0] if errors else ""])
    totals = {stage: sum(float(r["seconds"] or 0) for r in rows if r["stage"] == stage and r["status"] == "done"
                         and r["name"] in grouped) for stage in STAGES}
    lines.append(["total", "", *(f"{totals[stage]:.1f} s" for stage in STAGES), ""])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)) + "  " + line[-1] for line in lines]
    counts = {status: sum(object_status(grouped[n]) == status for n in names) for status in ("done", "failed",
                                                                                             "unfinished")}
    text.append(f"{counts['done']} done, {counts['failed']} failed, {counts['unfinished']} unfinished "
                f"(of {len(names)} objects)")
    return "\n".join(line.rstrip() for line in text)


def _link(target: Path, index_dir: Path, label: str) -> str:
    return f'<a href="{html.escape(os.path.relpath(target, index_dir))}">{html.escape(label)}</a>'


def write_index(out: Path, rows: Sequence[Dict[str, object]], names: Sequence[str]) -> Path:
    """Write OUT/index.html (to a temporary name, then renamed) and return its path."""
    out = Path(out).resolve()
    grouped = _by_object(rows, names)
    body = []
    for name in names:
        stages = {str(row["stage"]): row for row in grouped[name]}
        paths = ObjectPaths.of(out, name)
        status = object_status(grouped[name])
        cells = [f"<td><b>{html.escape(name)}</b><br>{html.escape(status)}</td>"]
        photo = paths.data / "rgba.png"
        cells.append(f'<td><img src="{html.escape(os.path.relpath(photo, out))}" width="128"></td>'
                     if stages["preprocess"]["status"] == "done" else "<td></td>")
        cells.append(f'<td><img src="{html.escape(os.path.relpath(paths.turntable, out))}" width="128"></td>'
                     if stages["turntable"]["status"] == "done" else "<td></td>")
        links = []
        for stage, target, label in (("mesh", paths.mesh, "mesh (.glb)"), ("splat", paths.splat, "splat (.ply)"),
                                     ("turntable", paths.turntable, "turntable (.gif)"),
                                     ("coarse", paths.run("coarse") / "config.yml", "coarse run"),
                                     ("refine", paths.run("refine") / "config.yml", "refine run")):
            if stages[stage]["status"] == "done":
                links.append(_link(target, out, label))
        links += [_link(paths.log(stage), out, f"{stage} log") for stage in STAGES if stages[stage]["attempts"]]
        cells.append(f"<td>{' · '.join(links)}</td>")
        errors = [str(row["error"]) for row in grouped[name] if row["status"] == "failed" and row["error"]]
        cells.append(f"<td>{html.escape(errors[0]) if errors else ''}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    page = ("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>sin-batch: "
            f"{html.escape(out.name)}</title><style>body{{font-family:sans-serif}}td{{padding:6px;"
            "vertical-align:top;border-bottom:1px solid #ddd}</style></head><body>\n"
            f"<h1>{html.escape(out.name)}</h1>\n<table><tr><th>object</th><th>photo</th><th>turntable</th>"
            "<th>files</th><th>error</th></tr>\n" + "\n".join(body) + "\n</table></body></html>\n")
    index = out / "index.html"
    partial = out / ".index.html.partial"
    partial.write_text(page, encoding="utf-8")
    os.replace(partial, index)
    return index
