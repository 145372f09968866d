"""Every export of real runs: nerfstudio's `ns-export pointcloud` and `poisson` (its exporter classes, in process,
and the command line once) on a coarse run, `ns-export gaussian-splat` on a refine run, `sin-export-mesh` and
`sin-render-turntable`; each output re-read from disk and checked. One tiny coarse run and one tiny refine run seeded
from it, trained on the CPU through nerfstudio's Trainer, are shared by the whole module."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from plyfile import PlyData

from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager

from single_image_nerf.errors import UserInputError
from single_image_nerf.scripts.export_mesh import ExportMeshConfig, export_mesh
from single_image_nerf.scripts.render_turntable import TurntableConfig, render_turntable
from tiny_training import tiny_config, train, write_ball_image

STEPS = 3
"""Enough for a checkpoint: the field starts as a density blob of radius 0.5 at the origin, so there is a surface."""
REFINE_STEPS = 2
SPLAT_PROPERTIES = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
"""The first properties of a standard 3D Gaussian Splatting .ply (then f_rest_*, opacity, scale_*, rot_*)."""
SCENE_BOX = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
EPS = 1e-4


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export-run")
    torch.manual_seed(0)
    config = tiny_config(write_ball_image(root / "disc.png"), root / "outputs", steps=STEPS)
    trainer = train(config)
    pipeline = trainer.pipeline
    pipeline.eval()
    return config.get_base_dir() / "config.yml", pipeline


@pytest.fixture(scope="module")
def refine_run(run, tmp_path_factory):
    """A refine run seeded from the coarse run (200 Gaussians, no guidance, two steps on the CPU)."""
    from single_image_nerf.guidance.base import NoGuidanceConfig
    from single_image_nerf.method_configs import headless, refine_trainer_config

    coarse_path, _ = run
    config = headless(refine_trainer_config(max_steps=REFINE_STEPS), "cpu",
                      tmp_path_factory.mktemp("refine-run") / "outputs")
    config.steps_per_eval_image = 10_000
    config.pipeline.guidance = NoGuidanceConfig()
    config.pipeline.datamanager.novel_views.resolution = 16
    model = config.pipeline.model
    model.coarse_config = coarse_path
    model.seed_num_points = 200
    model.seed_grid_resolution = 32
    model.densify_start = 1.0  # no densification in this short run
    trainer = train(config)
    pipeline = trainer.pipeline
    pipeline.eval()
    return config.get_base_dir() / "config.yml", pipeline


def read_ply_vertices(path: Path):
    vertex = PlyData.read(str(path))["vertex"]
    names = [prop.name for prop in vertex.properties]
    points = np.stack([vertex[axis] for axis in "xyz"], axis=-1).astype(np.float64)
    colours = np.stack([vertex[c] for c in ("red", "green", "blue")], axis=-1) if "red" in names else None
    normals = np.stack([vertex[n] for n in ("nx", "ny", "nz")], axis=-1) if "nx" in names else None
    return names, points, colours, normals


def inside_scene_box(points: np.ndarray) -> bool:
    return bool(((points >= SCENE_BOX[0] - EPS) & (points <= SCENE_BOX[1] + EPS)).all())


def check_point_cloud(path: Path, pipeline) -> np.ndarray:
    names, points, colours, normals = read_ply_vertices(path)
    assert {"x", "y", "z", "red", "green", "blue", "nx", "ny", "nz"} <= set(names)
    assert points.shape[0] >= 200
    assert np.isfinite(points).all() and np.isfinite(normals).all()
    assert inside_scene_box(points)
    assert colours.dtype == np.uint8
    # Straight colours of the object, not its white background: close to the field's albedo at the points.
    albedo = pipeline.model.query_albedo(torch.from_numpy(points).float()).cpu().numpy()
    assert np.median(np.abs(colours / 255.0 - albedo)) < 0.1
    # Seen from every side, not only from the reference camera on +X.
    for axis in range(3):
        assert (points[:, axis] > 0.2).any() and (points[:, axis] < -0.2).any()
    # Normals point outward (away from the object's centre) for most points.
    assert (np.sum(normals * (points - points.mean(axis=0)), axis=1) > 0).mean() > 0.8
    return points


def test_our_datamanager_is_what_ns_export_expects_and_generfactos_is_not(run):
    from nerfstudio.data.datamanagers.random_cameras_datamanager import RandomCamerasDataManagerConfig
    from nerfstudio.utils.eval_utils import eval_setup

    # nerfstudio #2121: generfacto's RandomCamerasDataManager is no VanillaDataManager (0.3.x asserted that) and,
    # though 1.1.5 lists it, it has no train_pixel_sampler, which the exporters read next: AttributeError.
    generfacto = RandomCamerasDataManagerConfig().setup(device="cpu", test_mode="test")
    assert not isinstance(generfacto, VanillaDataManager)
    assert not hasattr(generfacto, "train_pixel_sampler")
    # Ours, loaded the way ns-export loads it: a VanillaDataManager with a pixel sampler, and no guidance built.
    config_path, _ = run
    _, pipeline, _, _ = eval_setup(config_path)
    assert isinstance(pipeline.datamanager, VanillaDataManager)
    assert pipeline.datamanager.train_pixel_sampler is not None
    assert pipeline.guidance is None
    rays, batch = pipeline.datamanager.next_train(0)
    assert rays.shape[0] == pipeline.datamanager.train_pixel_sampler.num_rays_per_batch and batch == {}


def test_ns_export_pointcloud_with_model_normals(run, tmp_path):
    from nerfstudio.scripts.exporter import ExportPointCloud

    config_path, pipeline = run
    ExportPointCloud(load_config=config_path, output_dir=tmp_path, num_points=500, num_rays_per_batch=4096,
                     normal_method="model_output").main()
    check_point_cloud(tmp_path / "point_cloud.ply", pipeline)


def test_ns_export_poisson_with_open3d_normals_and_nerf_texture(run, tmp_path):
    from nerfstudio.scripts.exporter import ExportPoissonMesh

    config_path, pipeline = run
    ExportPoissonMesh(load_config=config_path, output_dir=tmp_path, num_points=500, num_rays_per_batch=4096,
                      normal_method="open3d", save_point_cloud=True, target_num_faces=2000,
                      num_pixels_per_side=64).main()
    check_point_cloud(tmp_path / "point_cloud.ply", pipeline)
    poisson = trimesh.load(tmp_path / "poisson_mesh.ply", force="mesh")
    assert len(poisson.faces) > 100 and np.isfinite(poisson.vertices).all()
    textured = trimesh.load(tmp_path / "mesh.obj", force="mesh", process=False)
    assert isinstance(textured.visual, trimesh.visual.TextureVisuals) and len(textured.faces) > 100
    texture = np.asarray(textured.visual.material.image.convert("RGB"))
    assert texture.shape[:2] == (64, 64) and texture.std() > 0  # rendered by the model, not blank


def test_sin_export_mesh_on_a_run_with_vertex_colours(run, tmp_path):
    config_path, pipeline = run
    output = tmp_path / "coarse.ply"
    export_mesh(ExportMeshConfig(load_config=config_path, output=output, level=10.0, resolution=40))
    mesh = trimesh.load(output, force="mesh", process=False)
    mesh.merge_vertices()
    assert mesh.is_watertight and mesh.volume > 0 and inside_scene_box(mesh.vertices)
    albedo = pipeline.model.query_albedo(torch.from_numpy(mesh.vertices).float()).cpu().numpy()
    assert np.abs(mesh.visual.vertex_colors[:, :3] / 255.0 - albedo).max() < 1.0 / 255.0
    with pytest.raises(UserInputError, match="already exists"):
        export_mesh(ExportMeshConfig(load_config=config_path, output=output))
    with pytest.raises(UserInputError, match="never crosses level"):
        export_mesh(ExportMeshConfig(load_config=config_path, output=tmp_path / "x.ply", level=1e9, resolution=16),
                    pipeline=pipeline)


def test_sin_export_mesh_on_a_run_with_a_uv_texture(run, tmp_path):
    config_path, pipeline = run
    output = tmp_path / "coarse.glb"
    export_mesh(ExportMeshConfig(load_config=config_path, output=output, resolution=40, texture="uv",
                                 texture_size=128), pipeline=pipeline)
    mesh = trimesh.load(output, force="mesh", process=False)
    assert isinstance(mesh.visual, trimesh.visual.TextureVisuals) and inside_scene_box(mesh.vertices)
    uv = mesh.visual.uv[mesh.faces].mean(axis=1)
    colours = trimesh.visual.color.uv_to_color(uv, mesh.visual.material.baseColorTexture)[:, :3] / 255.0
    albedo = pipeline.model.query_albedo(torch.from_numpy(mesh.triangles_center).float()).cpu().numpy()
    assert np.median(np.abs(colours - albedo)) < 0.02


def assert_gif_shows(path: Path, frames: np.ndarray) -> None:
    """The GIF on disk shows the rendered frames: identical neighbours merged, colours on a palette (measured: equal
    here; the same frames upside down differ by 4.5 levels on average)."""
    import imageio.v3 as iio

    distinct = [frames[0]] + [frames[i] for i in range(1, len(frames)) if not np.array_equal(frames[i], frames[i - 1])]
    written = iio.imread(path, index=None)[..., :3]
    assert written.shape == (len(distinct),) + frames.shape[1:]
    assert np.abs(written.astype(int) - np.stack(distinct).astype(int)).mean() < 1.5


def test_turntable_gif_has_one_frame_per_view(run, tmp_path):
    from PIL import Image

    config_path, _ = run
    output = tmp_path / "turn.gif"
    frames = render_turntable(TurntableConfig(load_config=config_path, output=output, frames=6, resolution=24,
                                              fps=10))
    assert frames.shape == (6, 24, 24, 3) and frames.dtype == np.uint8
    assert (frames < 250).any(axis=-1).mean() > 0.05  # the object is in view, not only background
    distinct = 1 + sum(not np.array_equal(frames[i], frames[i - 1]) for i in range(1, len(frames)))
    with Image.open(output) as gif:
        assert gif.n_frames == distinct  # GIF merges identical neighbours, keeping the total duration
        durations = []
        for index in range(gif.n_frames):
            gif.seek(index)
            durations.append(gif.info["duration"])
    assert sum(durations) == 6 * 100
    assert_gif_shows(output, frames)


def test_turntable_refusals_are_one_line(run, tmp_path):
    config_path, pipeline = run
    existing = tmp_path / "turn.gif"
    existing.write_bytes(b"keep")
    with pytest.raises(UserInputError, match="already exists"):
        render_turntable(TurntableConfig(load_config=config_path, output=existing), pipeline=pipeline)
    with pytest.raises(UserInputError, match=r"--frames 0 is out of range: give an integer in \[1, "):
        render_turntable(TurntableConfig(load_config=config_path, output=tmp_path / "t.gif", frames=0))
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        with pytest.raises(UserInputError, match="needs the imageio-ffmpeg package") as error:
            render_turntable(TurntableConfig(load_config=config_path, output=tmp_path / "t.mp4"), pipeline=pipeline)
        assert "\n" not in str(error.value)
    else:
        import imageio.v3 as iio

        render_turntable(TurntableConfig(load_config=config_path, output=tmp_path / "t.mp4", frames=4,
                                         resolution=16), pipeline=pipeline)
        assert iio.imread(tmp_path / "t.mp4", index=None).shape[0] == 4


def test_console_command_prints_one_line_for_a_missing_config(tmp_path):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    result = subprocess.run([sys.executable, "-m", "single_image_nerf.scripts.export_mesh", "--load-config",
                             str(tmp_path / "nowhere" / "config.yml"), "--output", str(tmp_path / "m.ply")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "no run config" in result.stderr


def test_ns_export_pointcloud_command_line(run, tmp_path):
    config_path, pipeline = run
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    result = subprocess.run([sys.executable, "-m", "nerfstudio.scripts.exporter", "pointcloud", "--load-config",
                             str(config_path), "--output-dir", str(tmp_path), "--num-points", "500",
                             "--num-rays-per-batch", "4096"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    check_point_cloud(tmp_path / "point_cloud.ply", pipeline)


def test_ns_export_gaussian_splat_on_a_refine_run(refine_run, tmp_path):
    import open3d as o3d
    from nerfstudio.scripts.exporter import ExportGaussianSplat

    config_path, pipeline = refine_run
    model = pipeline.model
    ExportGaussianSplat(load_config=config_path, output_dir=tmp_path).main()
    vertex = PlyData.read(str(tmp_path / "splat.ply"))["vertex"]
    names = [prop.name for prop in vertex.properties]
    rest = model.shs_rest[0].numel() if model.config.sh_degree > 0 else 0
    assert names == SPLAT_PROPERTIES + [f"f_rest_{i}" for i in range(rest)] + ["opacity"] + \
        [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)]
    assert all(vertex[name].dtype == np.float32 for name in names)
    visible = (model.opacities.detach().cpu().numpy()[:, 0] >= -5.5373)  # the exporter drops opacity < 1/255
    assert len(vertex) == int(visible.sum()) > 0
    for name in names:
        assert np.isfinite(vertex[name]).all(), name
    expected = {
        "x": model.means[:, 0], "y": model.means[:, 1], "z": model.means[:, 2],
        "f_dc_0": model.shs_0[:, 0], "opacity": model.opacities[:, 0], "scale_0": model.scales[:, 0],
        "rot_0": model.quats[:, 0],
    }
    for name, value in expected.items():
        assert np.allclose(vertex[name], value.detach().cpu().numpy()[visible], atol=1e-6), name
    points = np.stack([vertex[axis] for axis in "xyz"], axis=-1)
    assert inside_scene_box(points)
    # nerfstudio's dataparsers read .ply point clouds with open3d: same points.
    cloud = o3d.io.read_point_cloud(str(tmp_path / "splat.ply"))
    assert np.allclose(np.asarray(cloud.points), points, atol=1e-6)


def test_turntable_of_a_refine_run(refine_run, tmp_path):
    config_path, _ = refine_run
    frames = render_turntable(TurntableConfig(load_config=config_path, output=tmp_path / "refine.gif", frames=4,
                                              resolution=24, fps=8))
    assert frames.shape == (4, 24, 24, 3)
    assert (frames < 250).any(axis=-1).mean() > 0.05
    assert any(not np.array_equal(frames[i], frames[0]) for i in range(1, 4))  # the object turns
    assert_gif_shows(tmp_path / "refine.gif", frames)


def test_mesh_export_of_a_refine_run_is_a_textured_glb_that_scores_like_the_run(refine_run, tmp_path):
    """The refined model's fused depth, baked from the photo and renders, written as a GLB with its texture; then
    sin-evaluate --mesh scores it at the run's cameras, close to the model itself."""
    import trimesh

    from single_image_nerf.scripts import evaluate as E

    config_path, pipeline = refine_run
    output = tmp_path / "refined.glb"
    export_mesh(ExportMeshConfig(load_config=config_path, output=output, resolution=32, depth_views=8,
                                 depth_resolution=32, bake_views=4, bake_resolution=32, texture_size=128),
                pipeline=pipeline)
    raw = trimesh.load(output, force="mesh", process=False)
    assert raw.visual.kind == "texture" and raw.visual.material.baseColorTexture.size == (128, 128)
    evaluation = E.EvaluateConfig(load_config=config_path, known_object="box", num_views=2, resolution=16,
                                  geometry_views=0, clip_model=None, mesh=output)
    model_report = E.evaluate_pipeline(pipeline, evaluation)
    mesh_report = E.evaluate_pipeline(E.mesh_pipeline(pipeline, output), evaluation)
    model_psnr, mesh_psnr = (r["summary"]["reference"]["psnr"] for r in (model_report, mesh_report))
    assert mesh_psnr > model_psnr - 6.0, (model_psnr, mesh_psnr)


def test_level_set_of_a_refine_run_points_to_its_coarse_run(refine_run, run, tmp_path):
    config_path, _ = refine_run
    coarse_path, _ = run
    with pytest.raises(UserInputError, match="needs the density field") as error:
        export_mesh(ExportMeshConfig(load_config=config_path, output=tmp_path / "m.ply", geometry="level-set"))
    assert str(coarse_path) in str(error.value) and "\n" not in str(error.value)


def test_ns_export_pointcloud_of_a_refine_run_is_refused_in_one_line(refine_run, tmp_path):
    from nerfstudio.scripts.exporter import ExportPointCloud

    config_path, _ = refine_run
    with pytest.raises(UserInputError, match="gaussian-splat") as error:
        ExportPointCloud(load_config=config_path, output_dir=tmp_path, num_points=100).main()
    assert "coarse run's config.yml" in str(error.value) and "\n" not in str(error.value)
    assert not any(tmp_path.iterdir())

