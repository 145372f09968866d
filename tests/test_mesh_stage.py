"""The mesh stage on analytic scenes (no training): depth fusion recovers a sphere, cleaning drops floaters and
keeps the face budget, the bake takes the photo where its camera sees the surface and the most head-on render
elsewhere, the files (GLB, OBJ + MTL + PNG, PLY) read back in trimesh with their colours and axes, and a mesh
renders back through the evaluation's renderer."""

import numpy as np
import pytest
import torch

from single_image_nerf.data.camera_sampling import orbit_cameras
from single_image_nerf.mesh import bake as B
from single_image_nerf.mesh import clean as C
from single_image_nerf.mesh import files as F
from single_image_nerf.mesh.atlas import uv_layout
from single_image_nerf.mesh.geometry import fused_depth, silhouette_distance, smoothed
from single_image_nerf.mesh.render import MeshRenderer
from single_image_nerf.mesh.source import ModelSource, Photo, Views, axis_cosines, project, sphere_cameras
from single_image_nerf.mesh.textured import TexturedMesh
from single_image_nerf.refine.surface import Surface

RED, BLUE, GREEN = (0.9, 0.1, 0.1), (0.1, 0.1, 0.9), (0.1, 0.8, 0.2)
RADIUS = 0.5


def coloured_sphere(front, back, subdivisions: int = 4):
    """An icosphere of RADIUS with vertex colours `front` where x > 0 and `back` elsewhere."""
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=subdivisions, radius=RADIUS)
    colours = np.where(np.asarray(sphere.vertices)[:, :1] > 0, front, back)
    rgba = np.concatenate([np.round(colours * 255), np.full((len(colours), 1), 255)], axis=1).astype(np.uint8)
    return trimesh.Trimesh(vertices=sphere.vertices, faces=sphere.faces, vertex_colors=rgba, process=False)


def reference_camera(size: int = 64):
    return orbit_cameras(torch.zeros(1), torch.zeros(1), torch.full((1,), 2.0), torch.full((1,), 40.0), size, size)


def rendered_views(mesh, cameras) -> Views:
    """Views of a mesh as the mesh stage reads a model's: straight colour, opacity, z-depth."""
    renderer = MeshRenderer(mesh, antialias=1)
    rgb, alpha, depth = [], [], []
    for index in range(cameras.shape[0]):
        out = renderer.get_outputs_for_camera(cameras[index:index + 1])
        rgb.append(out["rgb"].numpy())
        alpha.append(out["accumulation"][..., 0].numpy())
        depth.append((out["depth"][..., 0] * axis_cosines(cameras, index)).numpy())
    return Views(cameras=cameras, rgb=np.stack(rgb), alpha=np.stack(alpha), depth=np.stack(depth))


def test_fused_depth_of_a_sphere_is_the_sphere():
    views = rendered_views(coloured_sphere(RED, BLUE), sphere_cameras(reference_camera(), 24, 64))
    surface = fused_depth(views, np.array([[-1.0] * 3, [1.0] * 3]), 48)
    radii = np.linalg.norm(surface.vertices, axis=-1)
    assert abs(np.median(radii) - RADIUS) < 0.02 and np.abs(radii - RADIUS).max() < 0.06, (radii.min(), radii.max())


def test_silhouette_distance_is_zero_halfway_between_an_empty_pixel_and_a_covered_one():
    alpha = np.zeros((6, 8))
    alpha[:, :3] = 1.0
    distance = silhouette_distance(alpha)
    assert np.allclose(distance[:, 0], -2.5) and np.allclose(distance[:, 2], -0.5)
    assert np.allclose(distance[:, 3], 0.5) and np.allclose(distance[:, 7], 4.5)
    alpha[:, 2], alpha[:, 3] = 0.8, 0.3  # an antialiased edge, 0.3 px past the centre of column 3
    distance = silhouette_distance(alpha)
    assert np.allclose(distance[:, 2], -0.3) and np.allclose(distance[:, 3], 0.2) and np.allclose(distance[:, 5], 2.5)


def test_a_point_outside_any_views_silhouette_is_outside_the_fused_surface():
    """25 views: 24 of a sphere, one (the reference) of a smaller sphere. Averaging would let the 24 outvote the
    one; the visual hull keeps the surface inside the smaller silhouette."""
    import trimesh

    sphere = coloured_sphere(RED, BLUE)
    small = trimesh.Trimesh(vertices=np.asarray(sphere.vertices) * 0.7, faces=sphere.faces,
                            vertex_colors=sphere.visual.vertex_colors, process=False)
    reference = reference_camera(64)
    views = [rendered_views(sphere, sphere_cameras(reference, 24, 64)), rendered_views(small, reference)]
    surface = fused_depth(views, np.array([[-1.0] * 3, [1.0] * 3]), 48)
    x, y, _ = project(reference, 0, surface.vertices.astype(np.float64))
    from scipy.ndimage import map_coordinates

    gap = map_coordinates(silhouette_distance(views[1].alpha[0]), np.stack([y - 0.5, x - 0.5]), order=1)
    assert gap.max() < 1.5, gap.max()  # within a voxel (two pixels) of the small sphere's silhouette, not 6 out
    assert np.linalg.norm(surface.vertices, axis=-1).max() > 0.45  # elsewhere (along the axis) the big sphere


def test_a_pinhole_in_one_silhouette_and_a_stray_depth_bore_no_tunnel():
    """One of 24 views of a sphere has a 2-pixel hole in its silhouette, another a patch of depth far behind the
    surface: neither bores into the fused sphere, which keeps one closed surface and the sphere's volume."""
    import trimesh

    views = rendered_views(coloured_sphere(RED, BLUE), sphere_cameras(reference_camera(), 24, 64))
    views.alpha[0, 32, 32:34] = 0.0
    views.depth[5, 28:36, 28:36] += 0.6
    surface = fused_depth(views, np.array([[-1.0] * 3, [1.0] * 3]), 48)
    mesh = trimesh.Trimesh(surface.vertices, surface.faces)
    assert len(mesh.split(only_watertight=False)) == 1
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * RADIUS**3, rel=0.05)
    assert np.linalg.norm(surface.vertices, axis=-1).min() > 0.9 * RADIUS


def test_the_photo_camera_carves_with_the_photos_own_silhouette():
    """The model renders a sphere at the photo's camera, but the photo shows a smaller one: the fused surface keeps
    inside the photo's silhouette, and the render's depth counts only where the render shows the surface."""
    import trimesh

    from single_image_nerf.mesh.geometry import with_photo_silhouette

    sphere = coloured_sphere(RED, BLUE)
    small = trimesh.Trimesh(vertices=np.asarray(sphere.vertices) * 0.7, faces=sphere.faces,
                            vertex_colors=sphere.visual.vertex_colors, process=False)
    reference = reference_camera(64)
    shot = rendered_views(small, reference)
    photo = Photo(camera=reference, rgba=np.concatenate([shot.rgb[0], shot.alpha[0][..., None]], -1))
    render = rendered_views(sphere, reference)
    render.alpha[0, :, :8] = 0.0  # a strip the render leaves empty
    combined = with_photo_silhouette(render, photo)
    assert np.array_equal(combined.alpha[0], photo.rgba[..., 3]) and np.isnan(combined.depth[0, :, :8]).all()
    views = [rendered_views(sphere, sphere_cameras(reference, 24, 64)), combined]
    surface = fused_depth(views, np.array([[-1.0] * 3, [1.0] * 3]), 48)
    x, y, _ = project(reference, 0, surface.vertices.astype(np.float64))
    from scipy.ndimage import map_coordinates

    gap = map_coordinates(silhouette_distance(photo.rgba[..., 3]), np.stack([y - 0.5, x - 0.5]), order=1)
    assert gap.max() < 1.5, gap.max()


def test_smoothing_takes_out_bumps_and_keeps_the_volume():
    import trimesh

    sphere = trimesh.creation.icosphere(4, RADIUS)
    bumps = 1.0 + 0.03 * np.random.default_rng(0).standard_normal(len(sphere.vertices))
    noisy = Surface(vertices=(np.asarray(sphere.vertices) * bumps[:, None]).astype(np.float32),
                    faces=np.asarray(sphere.faces, np.int64))
    smooth = smoothed(noisy, 10)
    radii = np.linalg.norm(smooth.vertices, axis=-1)
    assert radii.std() < 0.5 * np.linalg.norm(noisy.vertices, axis=-1).std()
    volume = trimesh.Trimesh(smooth.vertices, smooth.faces, process=False).volume
    assert abs(volume / (4 / 3 * np.pi * RADIUS ** 3) - 1.0) < 0.03, volume
    assert smoothed(noisy, 0) is noisy


def test_the_mesh_stage_looks_from_the_elevations_the_run_was_trained_on():
    from types import SimpleNamespace

    from single_image_nerf.data.camera_sampling import pose_angles

    photo_camera = orbit_cameras(torch.zeros(1), torch.full((1,), 60.0), torch.full((1,), 2.0),
                                 torch.full((1,), 40.0), 8, 8)
    novel = SimpleNamespace(elevation_range=(-10.0, 45.0))
    pipeline = SimpleNamespace(
        config=SimpleNamespace(datamanager=SimpleNamespace(novel_views=novel)), model=None,
        datamanager=SimpleNamespace(train_dataparser_outputs=SimpleNamespace(
            cameras=photo_camera, metadata={"rgba": np.zeros((8, 8, 4), np.float32)})))
    band = ModelSource(pipeline).trained_elevations()
    assert band[0] == pytest.approx(-10.0) and band[1] == pytest.approx(60.0, abs=1e-3)  # the photo's widens it
    elevations = pose_angles(sphere_cameras(photo_camera, 40, 8, band).camera_to_worlds)[1]
    assert elevations.min() > -10.0 and elevations.max() < 60.0 and elevations.max() - elevations.min() > 60.0


def test_texels_no_view_sees_take_the_nearest_seen_colour():
    """Renders from above only: the sphere's underside is never seen, and takes the colours of the seen surface
    next to it (red or blue, never the empty texture's black)."""
    truth = coloured_sphere(RED, BLUE)
    vmapping, faces, uvs = uv_layout(np.asarray(truth.vertices, np.float32), np.asarray(truth.faces))
    vertices = np.asarray(truth.vertices, np.float32)[vmapping]
    views = rendered_views(truth, sphere_cameras(reference_camera(), 12, 64, (40.0, 90.0)))
    result = B.bake(vertices, faces, uvs, 128, [], views)
    assert result.unseen > 0.1 * result.from_renders
    colours = TexturedMesh(vertices=vertices, faces=faces, uvs=uvs, texture=result.texture).vertex_colours()
    underside = vertices[:, 2] < -0.4
    assert underside.any()
    # Red, blue and their blends (across the faces that straddle the colour boundary) all sum to 1.1; black to 0.
    assert np.abs(colours[underside].sum(axis=1) - sum(RED)).max() < 0.15
    nearest_truth = np.minimum(np.abs(colours - RED).max(axis=1), np.abs(colours - BLUE).max(axis=1))
    assert np.median(nearest_truth[underside]) < 0.1


def test_cleaning_drops_a_floater_keeps_it_on_request_and_meets_the_face_budget():
    import trimesh

    big, small = trimesh.creation.icosphere(4, 0.5), trimesh.creation.icosphere(1, 0.02)
    small.apply_translation([0.8, 0.0, 0.0])
    both = trimesh.util.concatenate([big, small])
    surface = Surface(vertices=np.asarray(both.vertices, np.float32), faces=np.asarray(both.faces, np.int64))
    cleaned = C.clean(surface, max_faces=1000)
    assert len(cleaned.faces) <= 1000 and np.linalg.norm(cleaned.vertices, axis=-1).max() < 0.55
    kept = C.clean(surface, max_faces=10**6, keep_small_pieces=True)
    assert np.linalg.norm(kept.vertices, axis=-1).max() > 0.75


def test_a_hole_is_closed():
    import trimesh

    sphere = trimesh.creation.icosphere(3, 0.5)
    faces = np.asarray(sphere.faces)[1:]  # one triangle missing
    closed = C.close_holes(Surface(vertices=np.asarray(sphere.vertices, np.float32), faces=faces))
    assert trimesh.Trimesh(closed.vertices, closed.faces, process=False).is_watertight


@pytest.fixture(scope="module")
def baked():
    """A sphere whose photo (from +X) shows green on its +X half while the renders all round show red there and
    blue behind: the bake must take green where the photo sees, blue behind, never red where the photo saw."""
    truth = coloured_sphere(RED, BLUE)
    vmapping, faces, uvs = uv_layout(np.asarray(truth.vertices, np.float32), np.asarray(truth.faces))
    vertices = np.asarray(truth.vertices, np.float32)[vmapping]
    reference = reference_camera(96)
    photo_view = rendered_views(coloured_sphere(GREEN, BLUE), reference)
    photo = Photo(camera=reference, rgba=np.concatenate([photo_view.rgb[0], photo_view.alpha[0][..., None]], -1))
    views = rendered_views(truth, sphere_cameras(reference, 16, 64))
    result = B.bake(vertices, faces, uvs, 256, [photo], views)
    return TexturedMesh(vertices=vertices, faces=faces, uvs=uvs, texture=result.texture), result


def test_the_bake_takes_the_photo_where_it_sees_and_head_on_renders_elsewhere(baked):
    mesh, result = baked
    assert result.from_photo > 0 and result.from_renders > result.from_photo and result.unseen < 0.01 * (
        result.from_photo + result.from_renders)
    colours = mesh.vertex_colours()
    facing = mesh.vertices[:, 0] > 0.35  # seen head-on by the photo's camera on +X
    behind = mesh.vertices[:, 0] < -0.1
    assert np.abs(colours[facing] - GREEN).max(axis=1).mean() < 0.05
    assert np.abs(colours[behind] - BLUE).max(axis=1).mean() < 0.05
    assert (np.abs(colours[facing] - RED).max(axis=1) < 0.2).mean() < 0.01


@pytest.mark.parametrize("suffix", [".glb", ".obj", ".ply"])
def test_each_format_reads_back_with_its_colours_in_world_axes(baked, tmp_path, suffix):
    import trimesh

    mesh, _ = baked
    path = tmp_path / f"ball{suffix}"
    F.write_files(F.mesh_files(F.to_trimesh(mesh, suffix), path), overwrite=False)
    raw = trimesh.load(path, force="mesh", process=False)
    if suffix == ".ply":
        assert raw.visual.kind == "vertex"
    else:
        assert raw.visual.kind == "texture" and raw.visual.uv is not None
        image = getattr(raw.visual.material, "baseColorTexture", None) or raw.visual.material.image
        assert image.size == (256, 256)
    if F.y_up(suffix):  # glTF axes: the photo's side (world +X, green) faces +Z
        front = np.asarray(raw.vertices)[:, 2] > 0.35
    else:
        front = np.asarray(raw.vertices)[:, 0] > 0.35
    back = F.read_mesh(path)
    assert np.allclose(np.sort(back.vertices[:, 0]), np.sort(raw.vertices[:, 0 if suffix == ".ply" else 2]))
    reference = reference_camera(48)
    drawn = MeshRenderer(back).get_outputs_for_camera(reference)["rgb"]
    centre = drawn[20:28, 20:28].reshape(-1, 3).mean(0).numpy()
    assert np.abs(centre - GREEN).max() < 0.06, centre
    assert front.sum() > 0


def test_an_existing_file_is_not_overwritten(tmp_path):
    path = tmp_path / "m.glb"
    path.write_bytes(b"mine")
    from single_image_nerf.errors import UserInputError

    with pytest.raises(UserInputError, match="--overwrite"):
        F.write_files({path: b"new"}, overwrite=False)
    assert path.read_bytes() == b"mine"


def test_the_texture_fit_lowers_the_error_against_its_targets(baked):
    """A texture baked wrong (all grey) fitted for a few steps to the renders comes closer to them."""
    from single_image_nerf.mesh.fit import fit_texture, targets

    mesh, _ = baked
    grey = TexturedMesh(vertices=mesh.vertices, faces=mesh.faces, uvs=mesh.uvs,
                        texture=np.full_like(mesh.texture, 0.5))
    views = rendered_views(coloured_sphere(RED, BLUE), sphere_cameras(reference_camera(), 6, 48))
    lines = []
    fitted = fit_texture(grey, [], views, steps=30, announce=lines.append)
    uvs, colours, _ = targets(fitted, [], views)
    from single_image_nerf.mesh.textured import lookup

    def error(texture):
        return float((lookup(torch.from_numpy(texture).float(), uvs) - colours).abs().mean())

    assert error(fitted.texture) < 0.5 * error(grey.texture), lines


def test_the_photo_drawn_back_from_its_bake_is_the_photo(monkeypatch):
    """A photo of fine random texture, baked onto the plane it shows and drawn back at its camera with area
    sampling (as it was taken), comes back pixel for pixel; bilinear sampling of the photo would blur it once more."""
    import trimesh

    plane = trimesh.Trimesh(vertices=[[0, -0.3, -0.3], [0, 0.3, -0.3], [0, 0.3, 0.3], [0, -0.3, 0.3]],
                            faces=[[0, 1, 2], [0, 2, 3]], process=False).subdivide().subdivide()
    vmapping, faces, uvs = uv_layout(np.asarray(plane.vertices, np.float32), np.asarray(plane.faces))
    vertices = np.asarray(plane.vertices, np.float32)[vmapping]
    fine = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    fine = np.kron(fine, np.ones((4, 4, 1), np.float32))  # 4 x 4 texels a colour
    truth = TexturedMesh(vertices=vertices, faces=faces, uvs=uvs, texture=fine)
    camera = reference_camera(64)
    taken = MeshRenderer(F.to_trimesh(truth, ".glb"))
    shot = taken.get_outputs_for_camera(camera)
    photo = Photo(camera=camera, rgba=np.concatenate([shot["rgb"].numpy(), shot["accumulation"].numpy()], -1))
    interior = shot["accumulation"][..., 0].numpy() > 0.999
    views = rendered_views(plane, sphere_cameras(camera, 4, 32))

    def drawn_back_error() -> float:
        texture = B.bake(vertices, faces, uvs, 1024, [photo], views).texture
        mesh = F.to_trimesh(TexturedMesh(vertices=vertices, faces=faces, uvs=uvs, texture=texture), ".glb")
        drawn = MeshRenderer(mesh).get_outputs_for_camera(camera)["rgb"].numpy()
        return float(np.abs(drawn - photo.rgba[..., :3])[interior].mean())

    nearest = drawn_back_error()
    monkeypatch.setattr(B, "PHOTO_SAMPLING_ORDER", 1)
    bilinear = drawn_back_error()
    assert interior.sum() > 200
    assert nearest < 0.02 and nearest < 0.5 * bilinear, (nearest, bilinear)
