"""What a batch produced, from its store: the summary table printed at the end of `sin-batch` and the HTML index
(OUT/index.html) with each object's photo, turntable, its mesh to turn with the mouse, links to its exports and
runs, or the line it failed with.

The page works opened from disk, with no network: Google's model-viewer (vendored in batch/web/, copied with its
licences to OUT/index_files/) draws each mesh from a preview script (batch/preview.py), and a Content Security
Policy lets the page load nothing but files from its own folder.
"""

from __future__ import annotations

import html
import os
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence
from urllib.parse import quote

from single_image_nerf.batch import preview
from single_image_nerf.batch.stages import STAGES, ObjectPaths
from single_image_nerf.errors import UserInputError

WEB = Path(__file__).resolve().parent / "web"
"""The vendored viewer, its licences and the page's loader, copied to OUT/index_files/."""
WEB_FILES = ("model-viewer-umd.min.js", "LICENSE", "THIRD_PARTY_LICENSES", "catalogue.js")
ASSETS = "index_files"
"""OUT/index_files/: the page's scripts and OUT/index_files/meshes/<name>.js, each object's mesh preview."""
CSP = ("default-src 'none'; script-src 'self' file: 'wasm-unsafe-eval'; img-src 'self' file: data: blob:; "
       "style-src 'self' 'unsafe-inline'; connect-src data: blob:")
"""The page may load scripts and images from its own folder (file: when opened from disk) and the meshes it holds
as data: URIs, nothing from a network. 'wasm-unsafe-eval': model-viewer compiles WebAssembly it carries inline."""
VIEWER_SIZE = 192


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


def preview_path(out: Path, name: str) -> Path:
    """OUT/index_files/meshes/<name>.js, the object's mesh preview."""
    return Path(out) / ASSETS / "meshes" / f"{name}.js"


def write_preview(out: Path, name: str) -> Optional[str]:
    """Write (or keep, when newer than the mesh) the object's mesh preview; None, or why there is none (one line)."""
    try:
        preview.write_preview(ObjectPaths.of(out, name).mesh, preview_path(out, name), name)
    except (Exception, UserInputError) as error:  # pylint: disable=broad-except  # a preview never fails the batch
        return " ".join(f"{type(error).__name__}: {error}".split())[:300]
    return None


def _copy_web_files(out: Path) -> None:
    (out / ASSETS).mkdir(exist_ok=True)
    for name in WEB_FILES:
        partial = out / ASSETS / f".{name}.partial"
        shutil.copyfile(WEB / name, partial)
        os.replace(partial, out / ASSETS / name)


def _viewer_cell(out: Path, name: str) -> str:
    problem = write_preview(out, name)
    if problem:
        return f"<td>no 3D view: {html.escape(problem)}</td>"
    source = quote(os.path.relpath(preview_path(out, name), out))
    return (f'<td><model-viewer data-name="{html.escape(name)}" data-preview="{html.escape(source)}" camera-controls '
            f'interaction-prompt="none" alt="{html.escape(name)}: mesh" style="width:{VIEWER_SIZE}px;'
            f'height:{VIEWER_SIZE}px"></model-viewer></td>')


def write_index(out: Path, rows: Sequence[Dict[str, object]], names: Sequence[str]) -> Path:
    """Write OUT/index.html (to a temporary name, then renamed) with OUT/index_files/, and return its path."""
    out = Path(out).resolve()
    grouped = _by_object(rows, names)
    _copy_web_files(out)
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
        cells.append(_viewer_cell(out, name) if stages["mesh"]["status"] == "done" else "<td></td>")
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
    page = ("<!doctype html>\n<html><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}"><title>sin-batch: '
            f"{html.escape(out.name)}</title><style>body{{font-family:sans-serif}}td{{padding:6px;"
            "vertical-align:top;border-bottom:1px solid #ddd}</style>\n"
            f'<script src="{ASSETS}/model-viewer-umd.min.js"></script>\n<script src="{ASSETS}/catalogue.js"></script>'
            f"</head><body>\n<h1>{html.escape(out.name)}</h1>\n<table><tr><th>object</th><th>photo</th>"
            "<th>turntable</th><th>3D (drag to turn)</th><th>files</th><th>error</th></tr>\n" + "\n".join(body) +
            "\n</table></body></html>\n")
    index = out / "index.html"
    partial = out / ".index.html.partial"
    partial.write_text(page, encoding="utf-8")
    os.replace(partial, index)
    return index
