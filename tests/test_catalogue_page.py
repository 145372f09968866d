"""The catalogue page of `sin-batch` (OUT/index.html): each finished object's mesh drawn by the vendored
model-viewer, opened from disk (file://) in headless Chromium driven through the DevTools protocol. The screenshot
must show the mesh, the photo's side first and upright; a drag with the mouse must turn it; the page's requests must
all be local (file:, data:) with no Content Security Policy violation, and the same harness must see the request of
a page that does ask the network. The mesh preview's size cap, colours and axes are checked without a browser."""

import base64
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chromium_pipe import CHROMIUM, Browser
from single_image_nerf.batch import preview, report
from single_image_nerf.batch.stages import STAGES, ObjectPaths
from single_image_nerf.mesh.files import mesh_files, to_trimesh, write_files
from single_image_nerf.mesh.textured import TexturedMesh

FRONT, BACK, PHOTO, TURNTABLE = (225, 25, 25), (25, 25, 225), (40, 200, 60), (128, 128, 128)


def tall_mesh():
    """An ellipsoid three times taller (world Z) than wide, red on its photo side (+X), blue behind: 81,920
    triangles, four times the preview's cap."""
    import trimesh

    mesh = trimesh.creation.icosphere(subdivisions=6, radius=1.0)
    vertices = np.asarray(mesh.vertices) * np.array([0.3, 0.3, 0.9])
    colours = np.where(vertices[:, :1] > 0, FRONT, BACK)
    colours = np.concatenate([colours, np.full((len(vertices), 1), 255)], axis=1).astype(np.uint8)
    return trimesh.Trimesh(vertices=vertices, faces=mesh.faces, vertex_colors=colours, process=False)


def finished_object(out: Path, name: str) -> None:
    """The files of an object whose every stage is done (the splat and the runs are not read by the page)."""
    paths = ObjectPaths.of(out, name)
    paths.data.mkdir(parents=True)
    paths.exports.mkdir(parents=True)
    Image.new("RGB", (64, 64), PHOTO).save(paths.data / "rgba.png")
    Image.new("RGB", (32, 32), TURNTABLE).save(paths.turntable)
    write_files(mesh_files(tall_mesh(), paths.mesh), overwrite=False)  # as sin-export-mesh writes it (glTF axes)


def done_rows(name: str) -> list:
    return [{"name": name, "stage": stage, "status": "done", "attempts": 1, "error": None, "seconds": 1.0}
            for stage in STAGES]


def colour_mask(pixels: np.ndarray, colour) -> np.ndarray:
    """Pixels whose dominant channel is `colour`'s (lit and shaded, so not the exact colour)."""
    channel = int(np.argmax(colour))
    others = [c for c in range(3) if c != channel]
    return (pixels[..., channel] > 90) & (pixels[..., channel] > 2.0 * pixels[..., others].max(axis=-1))


def decode_preview(script: Path):
    import trimesh

    match = re.fullmatch(r'sinBatchMesh\("(.*)", "([A-Za-z0-9+/=]+)"\);\n', script.read_text())
    assert match, script.read_text()[:200]
    glb = base64.b64decode(match.group(2))
    scene = trimesh.load(trimesh.util.wrap_as_stream(glb), file_type="glb", force="mesh")
    return match.group(1), glb, scene


def test_a_preview_is_capped_keeps_its_colours_and_stands_up_in_gltf_axes(tmp_path):
    finished_object(tmp_path, "vase")
    script = report.preview_path(tmp_path, "vase")
    assert report.write_preview(tmp_path, "vase") is None
    name, glb, mesh = decode_preview(script)
    assert name == "vase"
    assert preview.MAX_TRIANGLES // 2 < len(mesh.faces) <= preview.MAX_TRIANGLES, len(mesh.faces)
    assert len(glb) < 700_000, len(glb)
    extent = mesh.vertices.max(axis=0) - mesh.vertices.min(axis=0)
    # glTF's up (+Y) holds the world's Z, its depth (+Z, towards the first camera) the world's X (the photo's side).
    assert extent[1] > 2.5 * extent[0] and extent[1] > 2.5 * extent[2], extent
    colours = np.asarray(mesh.visual.vertex_colors)[:, :3].astype(int)
    front = mesh.vertices[:, 2] > 0.05
    assert (colours[front, 0] > 180).mean() > 0.95 and (colours[~front & (mesh.vertices[:, 2] < -0.05), 2] > 180) \
        .mean() > 0.95
    # A preview newer than its mesh is kept; a newer mesh makes a new one.
    before = script.stat().st_mtime_ns
    assert report.write_preview(tmp_path, "vase") is None and script.stat().st_mtime_ns == before
    ObjectPaths.of(tmp_path, "vase").mesh.touch()
    assert report.write_preview(tmp_path, "vase") is None and script.stat().st_mtime_ns != before


def test_a_textured_export_keeps_its_texture_and_stands_up_in_the_preview(tmp_path):
    """An exported GLB with a UV texture (red on the photo's side) within the cap: the preview keeps the texture,
    shrunk, and glTF's +Z (towards the first camera) holds the photo's side."""
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    vertices = np.asarray(sphere.vertices, np.float32)
    uvs = np.stack([0.5 + 0.49 * np.sign(vertices[:, 0]) * 0.5, np.full(len(vertices), 0.5)], -1).astype(np.float32)
    texture = np.zeros((1024, 1024, 3), np.float32)
    texture[:, 512:], texture[:, :512] = np.array(FRONT) / 255.0, np.array(BACK) / 255.0
    paths = ObjectPaths.of(tmp_path, "ball")
    paths.exports.mkdir(parents=True)
    mesh = TexturedMesh(vertices=vertices, faces=np.asarray(sphere.faces), uvs=uvs, texture=texture)
    write_files(mesh_files(to_trimesh(mesh, ".glb"), paths.mesh), overwrite=False)
    assert report.write_preview(tmp_path, "ball") is None
    _, glb, scene = decode_preview(report.preview_path(tmp_path, "ball"))
    assert scene.visual.kind == "texture" and max(scene.visual.material.baseColorTexture.size) == preview.MAX_TEXTURE
    colours = np.asarray(scene.visual.to_color().vertex_colors)[:, :3].astype(int)
    towards_viewer = np.asarray(scene.vertices)[:, 2] > 0.2
    assert (colours[towards_viewer, 0] > 180).mean() > 0.9, colours[towards_viewer][:5]


def test_a_mesh_that_cannot_be_read_gives_the_page_one_line_instead_of_a_viewer(tmp_path):
    finished_object(tmp_path, "cup")
    ObjectPaths.of(tmp_path, "cup").mesh.write_bytes(b"not a mesh")
    index = report.write_index(tmp_path, done_rows("cup"), ["cup"])
    page = index.read_text()
    assert "no 3D view: " in page and "<model-viewer" not in page.split("<body>", 1)[1]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (tools/run_tests.sh installs it as root)")
def test_the_page_opened_from_disk_draws_the_mesh_turns_it_and_asks_no_network(tmp_path):
    out = tmp_path / "catalogue"
    finished_object(out, "vase")
    index = report.write_index(out, done_rows("vase"), ["vase"])
    for name in report.WEB_FILES:
        assert (out / report.ASSETS / name).is_file(), name
    page = index.read_text()
    assert 'model-viewer data-name="vase"' in page and "camera-controls" in page
    assert not re.search(r'(src|href)="(https?:)?//', page), "the page names a network resource"

    browser = Browser(tmp_path / "profile")
    try:
        browser.open(index.as_uri())
        browser.wait_for("(() => { const v = document.querySelector('model-viewer');"
                         " return !!(v && v.loaded && v.modelIsVisible); })()")
        time.sleep(1.0)
        first = browser.screenshot()
        box = browser.evaluate("(() => { const r = document.querySelector('model-viewer').getBoundingClientRect();"
                               " return [r.left, r.top, r.width, r.height]; })()")
        orbit = "document.querySelector('model-viewer').getCameraOrbit().theta * 180 / Math.PI"
        before = browser.evaluate(orbit)
        browser.drag(box[0] + box[2] / 2, box[1] + box[3] / 2, dx=box[2] / 2)  # half the width: half a turn
        time.sleep(2.0)
        turned, after_drag = browser.screenshot(), browser.evaluate(orbit)
        requests, messages = browser.requests(), browser.messages()
        # The same harness sees a page that asks the network (here for an image).
        control_page = tmp_path / "control.html"
        control_page.write_text('<!doctype html><body><img src="http://example.invalid/dot.png"></body>')
        browser.open(control_page.as_uri())
        browser.wait_for("document.readyState === 'complete'")
        control = browser.requests()[len(requests):]
    finally:
        browser.close()
    assert any(url.startswith("http://example.invalid/") for url in control), control
    schemes = {url.split(":", 1)[0] for url in requests}
    assert schemes <= {"file", "data", "blob"} and "data" in schemes, requests
    assert not [line for line in messages if "Content Security Policy" in line or "error" in line.lower()], messages

    left, top, width, height = (int(round(v)) for v in box)
    view = first[top:top + height, left:left + width].astype(int)
    front, back = colour_mask(view, FRONT), colour_mask(view, BACK)
    assert front.sum() > 0.05 * view.shape[0] * view.shape[1], f"the mesh is not drawn ({front.sum()} red pixels)"
    assert back.sum() < 0.05 * front.sum(), (front.sum(), back.sum())  # the photo's side faces the first camera
    rows, cols = np.nonzero(front)
    assert np.ptp(rows) > 2.0 * np.ptp(cols), (np.ptp(rows), np.ptp(cols))  # upright: world +Z is up on screen
    assert colour_mask(first.astype(int), PHOTO).sum() > 1000  # the photo beside it
    after = turned[top:top + height, left:left + width].astype(int)
    assert abs(after_drag - before) > 90.0, (before, after_drag)
    assert colour_mask(after, BACK).sum() > 0.5 * front.sum(), "dragging did not turn the mesh round"
    assert colour_mask(after, FRONT).sum() < 0.5 * front.sum()
