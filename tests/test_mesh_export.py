"""The mesh export on analytic fields: marching cubes of a known sphere, vertex colours, UV textures, file formats
re-read from disk, and the one-line refusals. No training here (tests/test_exports.py covers real runs)."""

import math
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

import analytic_fields as A
from single_image_nerf.errors import UserInputError
from single_image_nerf.mesh.files import read_mesh
from single_image_nerf.scripts.export_mesh import ExportMeshConfig, export_mesh, mesh_files, mesh_from_fields, \
    write_files

AABB = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
RESOLUTION = 64
"""Grid spacing 2/63: measured area and volume within 0.3% of the analytic sphere's."""
SPHERE_AREA = 4.0 * math.pi * A.SPHERE_RADIUS ** 2
SPHERE_VOLUME = 4.0 / 3.0 * math.pi * A.SPHERE_RADIUS ** 3


@pytest.fixture(scope="module")
def coloured_sphere():
    return mesh_from_fields(A.sphere_density, A.sphere_albedo, AABB, A.LEVEL, RESOLUTION)


@pytest.fixture(scope="module")
def textured_hemispheres():
    return mesh_from_fields(A.sphere_density, A.hemisphere_albedo, AABB, A.LEVEL, RESOLUTION, texture="uv",
                            texture_size=256)


def sphere_bounds(margin: float) -> np.ndarray:
    centre = np.array(A.SPHERE_CENTRE)
    return np.stack([centre - A.SPHERE_RADIUS - margin, centre + A.SPHERE_RADIUS + margin])


def check_sphere_geometry(mesh: trimesh.Trimesh) -> None:
    assert mesh.is_watertight
    assert mesh.area == pytest.approx(SPHERE_AREA, rel=0.02)
    assert mesh.volume == pytest.approx(SPHERE_VOLUME, rel=0.02)
    distance = np.linalg.norm(mesh.vertices - np.array(A.SPHERE_CENTRE), axis=1)
    assert np.abs(distance - A.SPHERE_RADIUS).max() < 2.0 / (RESOLUTION - 1)
    bounds = sphere_bounds(2.0 / (RESOLUTION - 1))
    assert (mesh.bounds[0] >= bounds[0]).all() and (mesh.bounds[1] <= bounds[1]).all()


def texture_colours_at_face_centres(mesh: trimesh.Trimesh) -> np.ndarray:
    material = mesh.visual.material
    image = getattr(material, "image", None) or getattr(material, "baseColorTexture", None)
    assert image is not None
    uv = mesh.visual.uv[mesh.faces].mean(axis=1)
    return trimesh.visual.color.uv_to_color(uv, image)[:, :3] / 255.0


def check_hemisphere_texture(mesh: trimesh.Trimesh) -> None:
    centres = mesh.triangles_center
    expected = A.hemisphere_albedo(torch.from_numpy(centres).float()).numpy()
    error = np.abs(texture_colours_at_face_centres(mesh) - expected).max(axis=1)
    away_from_equator = np.abs(centres[:, 2]) > 0.05
    assert (error[away_from_equator] < 0.05).mean() > 0.99


def test_marching_cubes_sphere_is_watertight_with_the_analytic_area_and_volume(coloured_sphere):
    check_sphere_geometry(coloured_sphere)


def test_vertex_colours_equal_the_analytic_colour(coloured_sphere):
    colours = coloured_sphere.visual.vertex_colors
    assert colours.dtype == np.uint8 and colours.shape == (len(coloured_sphere.vertices), 4)
    assert np.abs(colours[:, :3] / 255.0 - np.array(A.SPHERE_COLOUR)).max() <= 0.5 / 255.0 + 1e-6
    assert (colours[:, 3] == 255).all()


def test_vertex_colours_follow_position():
    mesh = mesh_from_fields(A.sphere_density, A.hemisphere_albedo, AABB, A.LEVEL, 32)
    expected = A.hemisphere_albedo(torch.from_numpy(mesh.vertices).float()).numpy()
    assert np.array_equal(mesh.visual.vertex_colors[:, :3], np.round(expected * 255).astype(np.uint8))


@pytest.mark.parametrize("suffix", [".ply", ".obj", ".glb"])
def test_vertex_coloured_files_read_back(coloured_sphere, tmp_path, suffix):
    path = tmp_path / f"sphere{suffix}"
    files = mesh_files(coloured_sphere, path)
    write_files(files, overwrite=False)
    assert all(file.is_file() for file in files)
    back = read_mesh(path)  # GLB and OBJ are in glTF axes on disk: read back into the world's
    assert len(back.faces) == len(coloured_sphere.faces)
    back.merge_vertices()
    assert len(back.vertices) == len(coloured_sphere.vertices)
    check_sphere_geometry(back)
    colours = np.asarray(back.visual.vertex_colors)[:, :3] / 255.0
    assert np.abs(colours - np.array(A.SPHERE_COLOUR)).max() < 1.5 / 255.0


def test_uv_texture_carries_the_field_colours(textured_hemispheres):
    check_hemisphere_texture(textured_hemispheres)
    merged = textured_hemispheres.copy()
    merged.merge_vertices(merge_tex=True, merge_norm=True)
    check_sphere_geometry(merged)


@pytest.mark.parametrize("suffix", [".obj", ".glb"])
def test_uv_textured_files_read_back(textured_hemispheres, tmp_path, suffix):
    path = tmp_path / f"hemispheres{suffix}"
    files = mesh_files(textured_hemispheres, path)
    write_files(files, overwrite=False)
    if suffix == ".obj":
        assert {file.name for file in files} == {"hemispheres.obj", "hemispheres.mtl", "hemispheres.png"}
    back = read_mesh(path)  # GLB and OBJ are in glTF axes on disk: read back into the world's
    assert isinstance(back.visual, trimesh.visual.TextureVisuals)
    assert len(back.faces) == len(textured_hemispheres.faces)
    assert back.visual.uv.min() >= 0.0 and back.visual.uv.max() <= 1.0
    check_hemisphere_texture(back)


def test_existing_files_are_never_overwritten_without_the_flag(coloured_sphere, tmp_path):
    path = tmp_path / "sphere.obj"
    write_files(mesh_files(coloured_sphere, path), overwrite=False)
    before = path.read_bytes()
    with pytest.raises(UserInputError, match="already exists: pass --overwrite"):
        write_files(mesh_files(coloured_sphere, path), overwrite=False)
    assert path.read_bytes() == before
    write_files(mesh_files(coloured_sphere, path), overwrite=True)


def test_a_level_the_density_never_reaches_is_one_line():
    with pytest.raises(UserInputError, match="never crosses level") as error:
        mesh_from_fields(A.sphere_density, A.sphere_albedo, AABB, 1000.0, 16)
    assert "\n" not in str(error.value)


def test_command_refusals_are_one_line(tmp_path):
    existing = tmp_path / "mesh.ply"
    existing.write_text("keep")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cases = [
        (ExportMeshConfig(load_config=tmp_path / "missing.yml", output=tmp_path / "m.ply"), "no run config"),
        (ExportMeshConfig(load_config=tmp_path / "x.yml", output=existing), "already exists"),
        (ExportMeshConfig(load_config=tmp_path / "x.yml", output=tmp_path / "m.stl"), "must end in one of"),
        (ExportMeshConfig(load_config=tmp_path / "x.yml", output=tmp_path / "m.ply", texture="uv"), "needs an .obj"),
        (ExportMeshConfig(load_config=tmp_path / "x.yml", output=blocker / "m.ply"), "cannot create the output"),
    ]
    not_a_config = tmp_path / "not-a-run.yml"
    not_a_config.write_text("a: 1\n")
    cases.append((ExportMeshConfig(load_config=not_a_config, output=tmp_path / "m.ply"), "not a nerfstudio run"))
    for config, message in cases:
        with pytest.raises(UserInputError, match=message) as error:
            export_mesh(config)
        assert "\n" not in str(error.value)
    assert existing.read_text() == "keep"


def test_a_run_of_another_method_is_refused_before_loading(tmp_path):
    import copy

    from nerfstudio.configs.method_configs import all_methods

    config = copy.deepcopy(all_methods["nerfacto"])  # neither a density field of ours nor Gaussians
    config.output_dir = tmp_path
    config.experiment_name = "other"
    config.set_timestamp()
    config.save_config()
    path = config.get_base_dir() / "config.yml"
    with pytest.raises(UserInputError, match="is a nerfacto run: sin-export-mesh takes a single-image-nerf"):
        export_mesh(ExportMeshConfig(load_config=path, output=tmp_path / "mesh.ply"))


def test_console_scripts_are_registered():
    scripts = {entry.name: entry.value for entry in metadata.entry_points(group="console_scripts")}
    assert scripts.get("sin-export-mesh") == "single_image_nerf.scripts.export_mesh:entrypoint"
    assert scripts.get("sin-render-turntable") == "single_image_nerf.scripts.render_turntable:entrypoint"
