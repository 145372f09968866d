"""The coarse stage with several reference views (a several-photo folder): reference rays pooled from every view,
the depth loss matched view by view, novel-view windows centred on every reference, the guidance's context, and a
tiny training through nerfstudio's Trainer whose back view is fitted by a photo of the back."""

from __future__ import annotations

import math

import pytest
import torch

from single_image_nerf.data.camera_sampling import ViewRanges, pose_angles, sample_views, wrap_degrees
from single_image_nerf.guidance.prompts import VIEWS, relative_view_angles, view_indices
from single_image_nerf.known_objects import ReferenceView, composite, get_known_object, reference_cameras, \
    render_known_object, write_reference_views_folder
from single_image_nerf.models.depth_loss import pearson_depth_loss, per_view_pearson_depth_loss
from single_image_nerf.scripts import evaluate as E
from tiny_training import tiny_config, train

SIZE = 32


def box_folder(root, azimuths):
    return write_reference_views_folder(get_known_object("box"), root / "data", azimuths, ReferenceView(size=SIZE))


def tiny_box_config(root, azimuths, steps=2):
    config = tiny_config(box_folder(root, azimuths), root / "outputs", steps=steps, image_size=SIZE)
    config.steps_per_save = steps
    config.pipeline.datamanager.dataparser.recenter = False  # the known object keeps its true scale and place
    return config


@pytest.fixture(scope="module")
def two_view_pipeline(tmp_path_factory):
    config = tiny_box_config(tmp_path_factory.mktemp("two"), [0.0, 180.0])
    return config.pipeline.setup(device="cpu", test_mode="val")


def test_the_writer_makes_the_several_photo_layout(tmp_path):
    import json

    data = box_folder(tmp_path, [0.0, 90.0, 180.0])
    views = json.loads((data / "meta.json").read_text())["views"]
    assert [(v["folder"], v["azimuth_deg"]) for v in views] == [(".", 0.0), ("views/1", 90.0), ("views/2", 180.0)]
    for index in (1, 2):
        assert {p.name for p in (data / f"views/{index}").iterdir()} == {"rgba.png", "depth.npy", "meta.json"}
    assert not (box_folder(tmp_path / "one", [0.0]) / "views").exists()


def test_reference_rays_come_from_every_view_with_their_pixels(two_view_pipeline):
    datamanager = two_view_pipeline.datamanager
    views = datamanager.train_dataparser_outputs.metadata["reference_views"]
    assert datamanager.reference_view_count == 2 and datamanager.reference_azimuths == (0.0, 180.0)
    assert two_view_pipeline.model.reference_view_count == 2
    torch.manual_seed(0)
    bundle, batch = datamanager.reference_rays(4000)
    view = batch["indices"][:, 0]
    assert 0.4 < float((view == 1).float().mean()) < 0.6  # both views drawn, evenly
    for index in (0, 1):
        picked = view == index
        rows, cols = batch["indices"][picked, 1], batch["indices"][picked, 2]
        rgba = torch.as_tensor(views[index]["rgba"])
        assert torch.equal(batch["image"][picked], rgba[rows, cols])
        depth = views[index]["depth"][rows, cols]
        assert torch.equal(batch["depth"][picked, 0].isnan(), depth.isnan())
        origin = views[index]["camera"].camera_to_worlds[0, :, 3]
        assert torch.allclose(bundle.origins[picked], origin.expand(int(picked.sum()), 3), atol=1e-5)
        assert bool((bundle.camera_indices[picked] == index).all())
    assert abs(float(views[1]["camera"].camera_to_worlds[0, 0, 3]) + 2.5) < 1e-5  # view 1 looks from behind


def test_novel_windows_centre_on_every_reference_and_prompts_stay_relative_to_the_main_view(two_view_pipeline):
    datamanager = two_view_pipeline.datamanager
    novel = datamanager.config.novel_views
    ranges = datamanager.novel_view_ranges(0)  # the recipe's initial window, not the full circle
    assert ranges.azimuth_half_width < 90.0
    count, novel.views_per_step = novel.views_per_step, 400
    try:
        cameras = datamanager.next_novel_cameras(0)
    finally:
        novel.views_per_step = count
    azimuth = pose_angles(cameras.camera_to_worlds)[0].reshape(-1)
    near_front = wrap_degrees(azimuth).abs() <= ranges.azimuth_half_width + 1e-3
    near_back = wrap_degrees(azimuth - 180.0).abs() <= ranges.azimuth_half_width + 1e-3
    assert bool((near_front | near_back).all())
    assert 0.4 < float(near_back.float().mean()) < 0.6
    # The view prompts read the azimuth relative to the main reference, which every novel camera carries: a camera
    # behind the object is the back, whichever reference its window was centred on.
    assert torch.equal(cameras.metadata["reference_azimuth"], torch.zeros(400, 1))
    relative, elevation = relative_view_angles(cameras)
    names = view_indices(relative, elevation)
    assert bool((names[near_back & (elevation < 60.0)] == VIEWS.index("back")).all())
    assert bool((names[near_front & (elevation < 60.0)] == VIEWS.index("front")).all())


def test_sample_views_draws_each_centre_and_one_centre_as_before():
    ranges = ViewRanges(azimuth_half_width=10.0, elevation=(0.0, 30.0), radius=(2.5, 2.5), fov=(40.0, 40.0))
    single = sample_views(ranges, 500, 90.0, torch.Generator().manual_seed(1))
    listed = sample_views(ranges, 500, [90.0], torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(single, listed))
    azimuth = sample_views(ranges, 3000, [0.0, 90.0, 180.0, 270.0], torch.Generator().manual_seed(1))[0]
    nearest = torch.remainder(torch.round(azimuth / 90.0), 4)
    assert bool((wrap_degrees(azimuth - 90.0 * nearest).abs() <= 10.0 + 1e-4).all())
    counts = torch.bincount(nearest.long(), minlength=4).float() / 3000
    assert bool(((counts - 0.25).abs() < 0.04).all())


def test_depth_loss_is_matched_view_by_view():
    generator = torch.Generator().manual_seed(0)
    truth = torch.rand(200, generator=generator)
    views = torch.arange(200) % 2
    # Each photo's monocular depth: the truth up to its own scale and shift.
    target = torch.where(views == 0, 3.0 * truth + 1.0, 0.2 * truth - 5.0)
    mask = torch.ones(200, dtype=torch.bool)
    assert float(per_view_pearson_depth_loss(truth, target, mask, views, 2)) == pytest.approx(0.0, abs=1e-5)
    assert float(pearson_depth_loss(truth, target, mask)) > 0.1  # pooled, the views' scales disagree
    # A view without depth (NaN) is left out of the mean, not counted as a perfect zero.
    target[views == 1] = float("nan")
    noisy = truth + 0.3 * torch.rand(200, generator=generator)
    alone = pearson_depth_loss(noisy[views == 0], target[views == 0])
    assert float(per_view_pearson_depth_loss(noisy, target, mask, views, 2)) == pytest.approx(float(alone), abs=1e-6)


def test_the_guidance_context_lists_every_view_cut_alike(two_view_pipeline):
    context = two_view_pipeline.guidance_context()
    assert len(context.reference_views) == 2
    azimuths = [float(pose_angles(view.camera.camera_to_worlds)[0]) for view in context.reference_views]
    assert azimuths[0] == pytest.approx(0.0, abs=1e-4) and abs(azimuths[1]) == pytest.approx(180.0, abs=1e-4)
    assert torch.equal(context.reference_photo, context.reference_views[0].photo)
    assert not torch.equal(context.reference_views[0].photo, context.reference_views[1].photo)


def back_view_psnr(root, azimuths, steps):
    torch.manual_seed(0)
    trainer = train(tiny_box_config(root, azimuths, steps))
    back = reference_cameras(ReferenceView(azimuth=180.0, size=SIZE))
    truth = composite(render_known_object(get_known_object("box"), back, supersample=4)["rgba"], (1.0, 1.0, 1.0))
    model = trainer.pipeline.model
    model.eval()
    rendered = E.render_run(model, back, (1.0, 1.0, 1.0))["rgb"]
    return float(-10.0 * torch.log10(((rendered - truth.permute(0, 3, 1, 2)) ** 2).mean()))


def test_a_photo_of_the_back_fits_the_back_without_a_prior(tmp_path):
    one = back_view_psnr(tmp_path / "one", [0.0], steps=60)
    two = back_view_psnr(tmp_path / "two", [0.0, 180.0], steps=60)
    assert math.isfinite(one) and two > one + 4.0, (one, two)  # measured 11.5 and 18.8 dB
