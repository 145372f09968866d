"""A longer oracle run of the coarse stage on a known object at realistic sizes; held-out PSNR per azimuth.

The project's goal is at least 28 dB on held-out views all the way round when the prior is exact. The run goes
through nerfstudio's Trainer like `ns-train single-image-nerf ... pipeline.guidance:oracle` and is scored with
`sin-evaluate`'s functions (held-out views at 22.5 + 360 k / N degrees from the reference, white background).

    .venv/bin/python benchmarks/oracle_recovery.py --object box --steps 1500 --size 128

With `--refine-steps N` the refine stage (`single-image-refine`, the oracle as its prior too) runs after the coarse
run from its checkpoint, on the same data written at `--photo-size`, and both stages are scored side by side: the
reference view at the photo's resolution against the photo, and the held-out views.

    .venv/bin/python benchmarks/oracle_recovery.py --steps 300 --size 128 --photo-size 512 --refine-steps 100

With `--views A B ...` the known object is photographed from each of those azimuths (degrees, the first the main
reference) and written as the several-photo folder sin-preprocess makes (docs/inputs.md), so that every view gets
the reference losses; `--guidance none` trains without a prior (the photos alone), `--guidance oracle` (the default)
with the pixel oracle. The held-out views leave out every reference azimuth: the default 8 (22.5 + 45 k degrees from
the main view) miss 0/90/180/270 by construction, and with another `--num-views` a view at a photo's azimuth is
dropped (sin-evaluate's rule).

    .venv/bin/python benchmarks/oracle_recovery.py --steps 300 --size 64 --guidance none --views 0 90 180 270

With several `--views`, `--recentre` says how the photos are cut before training. `none` (the default) keeps them
as rendered, every photo framed as a one-photo run's is, so that runs with 1, 2 and 4 photos are scored at one
framing (a cut zooms the object, and a larger object in the frame lowers PSNR for the same errors). The other two
cut at the photo's own size with sin-preprocess's border: `shared` cuts them alike as sin-preprocess does with
several photos (one fraction of every photo, centred), `per-photo` cuts each around its own object as a one-photo
sin-preprocess would, the baseline whose object size and rotation axis change between views. The run's field of
view is the one the main view's crop implies. Besides PSNR, the run is scored by silhouette IoU: its opacity above
one half against the true object's alpha above one half, at every held-out view and, apart, at each reference camera.

Both arms are scored by one rule: the truth is the known object at the run's camera poses, seen through the photo's
camera cut as the main view was cut (the main crop's focal length and principal point). Views cut otherwise than the
main one (per-photo) disagree with that truth, and the run's silhouettes show by how much.

    .venv/bin/python benchmarks/oracle_recovery.py --steps 300 --size 64 --guidance none --views 0 90 180 270 \
        --recentre per-photo
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import tempfile
import time
from pathlib import Path
from typing import List


def decibels(value) -> str:
    """A PSNR to two decimals, or "-" where no view was scored (a half of the circle left to the photos)."""
    return "-" if value is None else f"{value:.2f}"


def guidance_config(args: argparse.Namespace):
    """The prior of `--guidance`: the pixel oracle of the known object, or none."""
    from single_image_nerf.guidance.base import NoGuidanceConfig
    from single_image_nerf.guidance.oracle import OracleGuidanceConfig

    if getattr(args, "guidance", "oracle") == "none":
        return NoGuidanceConfig()
    return OracleGuidanceConfig(known_object=args.object, weight=args.weight)


def build_config(args: argparse.Namespace, data: Path, output_dir: Path):
    from single_image_nerf.method_configs import coarse_trainer_config, headless

    config = headless(coarse_trainer_config(max_steps=args.steps), args.device, output_dir)
    config.steps_per_save = 10**9
    config.steps_per_eval_image = 10**9
    pipeline = config.pipeline
    pipeline.datamanager.data = data
    pipeline.datamanager.dataparser.image_size = args.size
    pipeline.datamanager.dataparser.recenter = False  # the known object keeps its true scale and place
    views = getattr(args, "views", None)  # other benchmarks build on this config without photos of their own
    if views:
        pipeline.datamanager.dataparser.reference_azimuth = views[0]  # where the main photo was taken
    if getattr(args, "reference_fov", None) is not None:
        pipeline.datamanager.dataparser.reference_fov = args.reference_fov  # the main view's crop's
    novel = pipeline.datamanager.novel_views
    novel.resolution = args.novel_resolution
    novel.views_per_step = args.views_per_step
    model = pipeline.model
    if args.implementation:
        model.implementation = args.implementation
    for group in config.optimizers.values():
        group["optimizer"].lr = args.lr
        group["scheduler"].lr_final = args.lr * args.lr_final_ratio
    pipeline.guidance = guidance_config(args)
    return config


def build_refine_config(args: argparse.Namespace, coarse_config: Path, output_dir: Path):
    from single_image_nerf.method_configs import headless, refine_trainer_config

    config = headless(refine_trainer_config(max_steps=args.refine_steps), args.device, output_dir)
    config.steps_per_save = 10**9
    config.steps_per_eval_image = 10**9
    pipeline = config.pipeline
    novel = pipeline.datamanager.novel_views
    novel.resolution = args.refine_novel_resolution or novel.resolution
    novel.views_per_step = args.views_per_step
    model = pipeline.model
    model.coarse_config = coarse_config
    model.background_color = "white"  # the oracle's ground truth is composited over white
    model.seed_num_points = args.hidden_points
    model.contextual_vgg_weights = args.contextual_vgg_weights
    model.contextual_loss_mult = args.contextual_loss_mult
    pipeline.guidance = guidance_config(args)
    return config


@contextlib.contextmanager
def evaluating(model):
    """The model in eval mode for the block, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def photo_psnr(pipeline, photo_rgba, size: int, fov: float) -> float:
    """PSNR of the run's render of the reference camera (field of view `fov`) at `size` pixels against the photo
    (both over white)."""
    import torch

    from single_image_nerf.known_objects import ReferenceView, composite, reference_cameras
    from single_image_nerf.scripts import evaluate as E

    with evaluating(pipeline.model) as model:
        camera = reference_cameras(ReferenceView(size=size, fov=fov))
        rendered = E.render_run(model, camera, (1.0, 1.0, 1.0))["rgb"][0]
    truth = composite(photo_rgba, (1.0, 1.0, 1.0)).permute(2, 0, 1)
    return float(-10.0 * torch.log10(((rendered - truth) ** 2).mean().clamp_min(1e-10)))


def score_stage(pipeline, args: argparse.Namespace, photo_rgba) -> dict:
    from single_image_nerf.scripts import evaluate as E

    evaluation = E.EvaluateConfig(load_config=Path("unused"), known_object=args.object, num_views=args.num_views,
                                  resolution=args.eval_resolution or args.size, supersample=4, geometry_views=0,
                                  clip_model=None)
    report = E.evaluate_pipeline(pipeline, evaluation)
    held_out = [view["psnr"] for view in report["views"] if view["name"] != "reference"]
    return {"reference_photo_psnr": photo_psnr(pipeline, photo_rgba, args.photo_size, args.reference_fov),
            "held_out_psnr": report["summary"]["held_out"]["psnr"], "held_out_worst": min(held_out),
            "views": report["views"]}


def view_crops(alphas, recentre: str, border: float, size: int) -> list:
    """The square each view's photo is cut by (recentre.py's `SquareCrop`s, output `size` pixels): `shared`, as
    sin-preprocess cuts several photos (`common_square_crops`: one fraction of every photo, centred); `per-photo`, as
    a one-photo sin-preprocess cuts each (`square_crop` around its own mask)."""
    from single_image_nerf.preprocess.recentre import common_square_crops, mask_bbox, square_crop

    boxes = [mask_bbox(alpha > 0) for alpha in alphas]
    if recentre == "per-photo":
        return [square_crop(box, border, size) for box in boxes]
    return common_square_crops(boxes, [alpha.shape[:2] for alpha in alphas], border, size)


def crop_fov(crop, photo_side: int, photo_fov: float) -> float:
    """Vertical field of view (degrees) of a photo's camera cut to `crop`: a square `crop.side` pixels of a photo
    whose `photo_side` pixels span `photo_fov` spans 2 atan(tan(photo_fov / 2) side / photo_side)."""
    half = math.tan(math.radians(photo_fov) / 2.0) * crop.side / photo_side
    return math.degrees(2.0 * math.atan(half))


def recentre_views(data: Path, recentre: str, photo_fov: float) -> list:
    """Cuts every view of the several-photo folder `data` (photos of one side, field of view `photo_fov`) as
    `view_crops` says, at the photo's own size with sin-preprocess's border, and rewrites its files: rgba.png as
    sin-preprocess resamples it (`apply_crop`), depth.npy by the same window (nearest-neighbour when enlarged, so edge
    pixels keep the surface's depth rather than mixing in the background's zeros), and in meta.json the crop box and
    the field of view it implies. Returns the crops, main view first."""
    import numpy as np
    from PIL import Image

    from single_image_nerf.preprocess.pipeline import PreprocessOptions
    from single_image_nerf.preprocess.recentre import apply_crop
    from single_image_nerf.preprocess.views import VIEWS_KEY

    folders = [data / view["folder"] for view in json.loads((data / "meta.json").read_text())[VIEWS_KEY]]
    photos = [np.asarray(Image.open(folder / "rgba.png")) for folder in folders]
    side = photos[0].shape[0]
    crops = view_crops([photo[..., 3] for photo in photos], recentre, PreprocessOptions().border, side)
    for folder, photo, crop in zip(folders, photos, crops):
        Image.fromarray(apply_crop(photo[..., :3], photo[..., 3], crop), mode="RGBA").save(folder / "rgba.png")
        if (folder / "depth.npy").is_file():
            np.save(folder / "depth.npy", crop.apply(np.load(folder / "depth.npy"), upscale="nearest"))
        meta = json.loads((folder / "meta.json").read_text())
        meta.update(crop_box=list(crop.box), fov=crop_fov(crop, side, photo_fov))
        (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return crops


def truth_cameras(cameras, crop, photo_side: int, photo_fov: float):
    """`cameras` (square) with the intrinsics of the photo's camera cut to `crop`: the focal length and principal
    point of the crop, scaled to each camera's side."""
    from nerfstudio.cameras.cameras import Cameras

    scale = cameras.width.float() / crop.side
    focal = photo_side / 2.0 / math.tan(math.radians(photo_fov) / 2.0)
    return Cameras(camera_to_worlds=cameras.camera_to_worlds, fx=focal * scale, fy=focal * scale,
                   cx=(photo_side / 2.0 - crop.x0) * scale, cy=(photo_side / 2.0 - crop.y0) * scale,
                   width=cameras.width, height=cameras.height, camera_type=cameras.camera_type)


def silhouette_iou(run_alpha, true_alpha) -> List[float]:
    """IoU of each view's two silhouettes, (B, H, W) opacities each above one half."""
    run, truth = run_alpha > 0.5, true_alpha > 0.5
    overlap = (run & truth).flatten(1).sum(1).float()
    return (overlap / (run | truth).flatten(1).sum(1).clamp_min(1)).tolist()


def camera_ious(model, cameras, obj, main_crop, args: argparse.Namespace) -> List[float]:
    """`silhouette_iou` of the run at `cameras` against `obj` at their `truth_cameras` (the main view's crop)."""
    from single_image_nerf.known_objects import render_known_object
    from single_image_nerf.scripts import evaluate as E

    run_alpha = E.render_run(model, cameras, (1.0, 1.0, 1.0), args.supersample[0])["accumulation"]
    truth = truth_cameras(cameras, main_crop, args.photo_size, args.photo_fov)
    return silhouette_iou(run_alpha, render_known_object(obj, truth, supersample=4)["rgba"][..., 3])


def silhouette_scores(pipeline, main_crop, args: argparse.Namespace) -> dict:
    """Silhouette IoU at sin-evaluate's held-out cameras (none at a photo's azimuth) and, apart, at each reference
    camera, with their mean over the held-out views."""
    from single_image_nerf.known_objects import get_known_object
    from single_image_nerf.scripts import evaluate as E

    obj = get_known_object(args.object)
    reference = E.reference_camera(pipeline).to("cpu")
    cameras = E.held_out_away_from_photos(reference, args.num_views, None, args.eval_resolution,
                                          E.photo_azimuths(pipeline))
    offsets = E.azimuth_offset(cameras, E.camera_orbit(reference)["azimuth"]).reshape(-1).tolist()
    views = pipeline.datamanager.train_dataparser_outputs.metadata.get("reference_views") or [
        {"camera": reference, "azimuth": E.camera_orbit(reference)["azimuth"]}]
    with evaluating(pipeline.model) as model:
        held_out = camera_ious(model, cameras, obj, main_crop, args)
        photographed = [camera_ious(model, view["camera"].to("cpu"), obj, main_crop, args)[0] for view in views]
    return {"held_out_mean": sum(held_out) / len(held_out),
            "held_out": [{"azimuth_offset": offset, "iou": iou} for offset, iou in zip(offsets, held_out)],
            "reference": [{"azimuth": float(view["azimuth"]), "iou": iou} for view, iou in zip(views, photographed)]}


def write_strip(model, reference, obj, count: int, resolution: int, path: Path) -> None:
    """Held-out views of the known object (top) and of the run (bottom), side by side, as a PNG."""
    import numpy as np
    import torch
    from PIL import Image

    from single_image_nerf.known_objects import composite, render_known_object
    from single_image_nerf.scripts import evaluate as E

    cameras = E.held_out_cameras(reference, count, None, resolution)
    truth = composite(render_known_object(obj, cameras, supersample=4)["rgba"], (1.0, 1.0, 1.0))
    was_training = model.training
    model.eval()
    try:
        rendered = E.render_run(model, cameras, (1.0, 1.0, 1.0))["rgb"].permute(0, 2, 3, 1).cpu()
    finally:
        model.train(was_training)
    rows = [torch.cat(list(images.clamp(0, 1)), dim=1) for images in (truth, rendered)]
    strip = (torch.cat(rows, dim=0).numpy() * 255.0 + 0.5).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(strip).resize((strip.shape[1] * 2, strip.shape[0] * 2), Image.NEAREST).save(path)


def run_refine(args: argparse.Namespace, coarse_pipeline, coarse_config: Path, data: Path, root: Path) -> None:
    """Refine after the coarse run (`coarse_pipeline`, saved at `coarse_config`), then both stages side by side
    (printed, and in --json)."""
    import numpy as np
    import torch
    from PIL import Image

    photo = torch.from_numpy(np.asarray(Image.open(data / "rgba.png"), dtype=np.float32) / 255.0)
    coarse_scores = score_stage(coarse_pipeline, args, photo)
    del coarse_pipeline
    refine = build_refine_config(args, coarse_config, root / "outputs")
    refine.set_timestamp()
    refine_trainer = refine.setup(local_rank=0, world_size=1)
    refine_trainer.setup()
    seeded_scores = score_stage(refine_trainer.pipeline, args, photo)
    start = time.perf_counter()
    refine_trainer.train()
    seconds = time.perf_counter() - start
    model = refine_trainer.pipeline.model
    refine_scores = score_stage(refine_trainer.pipeline, args, photo)
    tagged = int(model.reference_visible.sum())
    print(f"refine: {args.refine_steps} steps, novel views {refine.pipeline.datamanager.novel_views.resolution} px, "
          f"{seconds:.0f} s on {args.device} "
          f"({1000 * seconds / max(1, args.refine_steps):.0f} ms/step), {model.num_points} Gaussians "
          f"({tagged} carrying the photo)")
    print(f"| stage | reference PSNR at {args.photo_size} px (vs photo) | held-out mean PSNR, "
          f"{args.eval_resolution or args.size} px | worst held-out |")
    print("|---|---:|---:|---:|")
    print(f"| coarse ({args.steps} steps, {args.size} px reference) | {coarse_scores['reference_photo_psnr']:.2f} | "
          f"{coarse_scores['held_out_psnr']:.2f} | {coarse_scores['held_out_worst']:.2f} |")
    print(f"| refine, as seeded | {seeded_scores['reference_photo_psnr']:.2f} | {seeded_scores['held_out_psnr']:.2f} | "
          f"{seeded_scores['held_out_worst']:.2f} |")
    print(f"| refine ({args.refine_steps} steps, {args.photo_size} px reference) | "
          f"{refine_scores['reference_photo_psnr']:.2f} | {refine_scores['held_out_psnr']:.2f} | "
          f"{refine_scores['held_out_worst']:.2f} |")
    if args.json is not None:
        from single_image_nerf.scripts import evaluate as E

        E.write_report({"coarse_config": str(coarse_config), "coarse": coarse_scores, "refine_seeded": seeded_scores,
                        "refine": refine_scores,
                        "refine_seconds": seconds, "gaussians": model.num_points, "tagged": tagged,
                        "args": {k: str(v) for k, v in vars(args).items()}}, args.json)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--object", default="box")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--size", type=int, default=128, help="reference image side, pixels")
    parser.add_argument("--novel-resolution", type=int, default=64, help="novel-view render side, pixels")
    parser.add_argument("--views-per-step", type=int, default=1)
    parser.add_argument("--views", type=float, nargs="+", default=[0.0],
                        help="azimuths of the reference photos, degrees (the first the main reference; e.g. 0 180)")
    parser.add_argument("--recentre", choices=("none", "shared", "per-photo"), default="none",
                        help="with several --views: keep the photos as rendered, framed as a one-photo run is, so "
                             "that runs with 1, 2 and 4 photos compare (none); cut them alike as sin-preprocess does "
                             "(shared); or each around its own object as a one-photo sin-preprocess would (per-photo, "
                             "the baseline)")
    parser.add_argument("--guidance", choices=("oracle", "none"), default="oracle",
                        help="the prior on novel views: the pixel oracle of the known object, or none (photos alone)")
    parser.add_argument("--eval-resolution", type=int, default=None, help="held-out render side (default: --size)")
    parser.add_argument("--num-views", type=int, default=8, help="held-out azimuths")
    parser.add_argument("--weight", type=float, default=1000.0, help="oracle loss weight (the RGB loss is x1000)")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--lr-final-ratio", type=float, default=0.1)
    parser.add_argument("--implementation", choices=("tcnn", "torch"), default=None)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--supersample", type=int, nargs="+", default=[1, 4],
                        help="rays per pixel side of the run's renders when scored (the ground truth takes 4)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--strip", type=Path, default=None, help="PNG of held-out views, truth above, run below")
    parser.add_argument("--refine-steps", type=int, default=0, help="refine steps after the coarse run (0: none)")
    parser.add_argument("--photo-size", type=int, default=None,
                        help="side of the written photo (rgba.png) the refine stage fits (default: --size)")
    parser.add_argument("--refine-novel-resolution", type=int, default=0,
                        help="novel-view render side of the refine stage, pixels (0: the stage's default, 128; much "
                             "smaller renders smear its photo-pixel seeds and train the Gaussians for that blur)")
    parser.add_argument("--hidden-points", type=int, default=5000, help="refine seeds on the hidden surface")
    parser.add_argument("--contextual-vgg-weights", default="imagenet")
    parser.add_argument("--contextual-loss-mult", type=float, default=1.0)
    parser.add_argument("--coarse-config", type=Path, default=None,
                        help="refine from this earlier coarse run of the benchmark (its config.yml) instead of training "
                             "one; its data folder and settings are reused")
    args = parser.parse_args()
    if args.recentre != "none" and len(args.views) < 2:
        parser.error(f"--recentre {args.recentre} compares how several photos are cut: give two or more --views")

    import torch
    from PIL import Image

    from single_image_nerf.known_objects import ReferenceView, get_known_object, write_reference_views_folder
    from single_image_nerf.preprocess.recentre import SquareCrop
    from single_image_nerf.scripts import evaluate as E

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    root = Path(tempfile.mkdtemp(prefix="oracle-"))
    if args.coarse_config is not None:  # refine an earlier coarse run of this benchmark
        from single_image_nerf.inputs import checkpoint_steps
        from single_image_nerf.runs import load_pipeline

        coarse, pipeline = load_pipeline(args.coarse_config)
        data = Path(coarse.pipeline.datamanager.data)
        args.photo_size = args.photo_size or Image.open(data / "rgba.png").width
        args.steps = checkpoint_steps(args.coarse_config.parent / "nerfstudio_models")[-1] + 1
        args.size = coarse.pipeline.datamanager.dataparser.image_size
        args.reference_fov = coarse.pipeline.datamanager.dataparser.reference_fov
        run_refine(args, pipeline, args.coarse_config, data, root)
        return
    args.photo_size = args.photo_size or args.size
    photo = ReferenceView(size=args.photo_size)
    data = write_reference_views_folder(get_known_object(args.object), root / "data", args.views, photo)
    main_crop = SquareCrop(x0=0, y0=0, side=args.photo_size, size=args.photo_size)  # one photo: used as written
    if args.recentre != "none":
        main_crop = recentre_views(data, args.recentre, photo.fov)[0]
    # The shared crop of the centred object is a square of `side` pixels about the photo's centre: a uniform zoom by
    # photo_size / side, as if the photo had been taken with a field of view of 2 atan(tan(fov / 2) side / photo_size)
    # (crop_fov). The run assumes that field of view, so that every truth it is scored against (sin-evaluate's
    # held-out renders at its cameras, the silhouettes) is at the scale its photos show; per-photo takes the main
    # view's own crop the same way.
    args.photo_fov, args.reference_fov = photo.fov, crop_fov(main_crop, args.photo_size, photo.fov)
    config = build_config(args, data, root / "outputs")
    config.set_timestamp()
    config.save_config()  # the refine stage reads it
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    print(f"coarse run: {config.get_base_dir() / 'config.yml'} (refine it with --coarse-config)")
    if args.refine_steps > 0:
        run_refine(args, trainer.pipeline, config.get_base_dir() / "config.yml", data, root)
        return
    reports = {}
    for supersample in args.supersample:  # geometry does not depend on it: scored with the first only
        evaluation = E.EvaluateConfig(load_config=Path("unused"), known_object=args.object, num_views=args.num_views,
                                      resolution=args.eval_resolution, supersample=supersample,
                                      geometry_views=0 if reports else 12, geometry_resolution=64, clip_model=None)
        reports[supersample] = E.evaluate_pipeline(trainer.pipeline, evaluation)
    report = reports[args.supersample[0]]
    print(f"{args.object}: {args.steps} steps, guidance {args.guidance}, reference photos at "
          f"{' '.join(f'{v:g}' for v in args.views)}, reference {args.size} px, novel views {args.novel_resolution} px "
          f"x {args.views_per_step}/step, {train_seconds:.0f} s training on {args.device} "
          f"({1000 * train_seconds / args.steps:.0f} ms/step)")
    columns = [f"PSNR, {s}x{s} rays/pixel | SSIM, {s}x{s}" for s in args.supersample]
    print("| view | azimuth offset | " + " | ".join(columns) + " |")
    print("|---|---:|" + "---:|---:|" * len(columns))
    for index, view in enumerate(report["views"]):
        scores = " | ".join(f"{r['views'][index]['psnr']:.2f} | {r['views'][index]['ssim']:.3f}"
                            for r in reports.values())
        print(f"| {view['name']} | {view['azimuth_offset']:+.1f} | {scores} |")
    for supersample, each in reports.items():
        summary = each["summary"]
        held_out = [view for view in each["views"] if view["name"] != "reference"]
        print(f"{supersample}x{supersample} rays/pixel: held-out mean {decibels(summary['held_out']['psnr'])} dB, "
              f"front {decibels(summary['front']['psnr'])}, back {decibels(summary['back']['psnr'])}, worst "
              f"{decibels(min(v['psnr'] for v in held_out))}")
    print(f"F-score {report['geometry']['f_score']:.3f}, Chamfer {report['geometry']['chamfer']:.4f}")
    silhouettes = silhouette_scores(trainer.pipeline, main_crop, args)
    cut = f"{args.recentre} recentring" if args.recentre != "none" else "photos as rendered"
    print(f"silhouette IoU ({cut}, field of view {args.reference_fov:.2f} deg): held-out mean "
          f"{silhouettes['held_out_mean']:.3f}; held-out "
          + ", ".join(f"{v['azimuth_offset']:+.1f} {v['iou']:.3f}" for v in silhouettes["held_out"])
          + "; reference views " + ", ".join(f"{v['azimuth']:g} {v['iou']:.3f}" for v in silhouettes["reference"]))
    if args.strip is not None:
        write_strip(trainer.pipeline.model, E.reference_camera(trainer.pipeline).to("cpu"),
                    get_known_object(args.object), args.num_views, args.eval_resolution or args.size, args.strip)
        print(f"strip: {args.strip}")
    if args.json is not None:
        E.write_report({"by_supersample": {str(k): v for k, v in reports.items()}, "silhouette": silhouettes,
                        "args": {k: str(v) for k, v in vars(args).items()}, "train_seconds": train_seconds}, args.json)


if __name__ == "__main__":
    main()
