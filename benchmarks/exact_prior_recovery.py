"""The coarse stage with an exact diffusion prior of a known object: truth through the real guidance code.

The guidance (stable-diffusion, zero123, stable-zero123 or magic123) is loaded by its own classes from folders in
the public diffusers layouts (`exact_prior_folders.py`), and only its UNet's prediction is replaced, by the
closed-form denoiser of the object's true renders (`exact_prior.py`). Everything else runs as with real weights:
the prompt or camera conditioning, the encoder, classifier-free guidance, timestep sampling and annealing, the
weighting and the balance with the reference losses. Two settings:

- control: the pixel oracle benchmark's settings (`oracle_recovery.build_config` and the oracle's recipe: white
  background, the full circle from step 0, albedo only, its learning rate), with the novel cameras fixed at the
  reference's field of view and radius; the prior's recipe sets the rest (its weight, scale and t schedule);
- default: the method's defaults, except what scoring needs: no recentring, the reference size given here.

It reports held-out PSNR per view (`sin-evaluate`'s scoring, as oracle_recovery), the front and back means, the worst
view, the F-score, steps and wall time, the widest azimuth the novel cameras reached, and writes a strip of held-out
views (truth above, recovered below) as a PNG.

With `--views A B ...` the known object is photographed from each of those azimuths (degrees, the first the main
reference) into the several-photo folder (as in oracle_recovery): every view gets the reference losses, and Zero123
conditions each novel camera on its nearest photo, which the exact prior decodes from the latent it is given. The
held-out views leave out every photo's azimuth (the default 8 miss 0/90/180/270).

    .venv/bin/python benchmarks/exact_prior_recovery.py --prior zero123 --setting default --object box --steps 300 \
        --views 0 90 180 270
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
PRIORS = ("stable-diffusion", "zero123", "stable-zero123", "magic123")


def reference_position(view) -> tuple:
    """The reference camera's centre from its orbit angles, by the world's definition (azimuth from +X toward +Y,
    elevation above the XY plane)."""
    azimuth, elevation = math.radians(view.azimuth), math.radians(view.elevation)
    return (view.radius * math.cos(elevation) * math.cos(azimuth), view.radius * math.cos(elevation) * math.sin(azimuth),
            view.radius * math.sin(elevation))


def prior_config(args: argparse.Namespace, folders: dict):
    """The guidance config of `args.prior`, its model paths at the exact priors' folders; scales as asked."""
    from single_image_nerf.guidance.magic123 import Magic123GuidanceConfig
    from single_image_nerf.guidance.stable_diffusion import StableDiffusionGuidanceConfig
    from single_image_nerf.guidance.zero123 import Zero123GuidanceConfig

    def stable_diffusion(config):
        config.model_path = str(folders["stable-diffusion"])
        if args.sd_guidance_scale is not None:
            config.guidance_scale = args.sd_guidance_scale
        return config

    def zero123(config, name):
        config.model_path = str(folders[name])
        if args.zero123_guidance_scale is not None:
            config.guidance_scale = args.zero123_guidance_scale
        return config

    if args.prior == "stable-diffusion":
        return stable_diffusion(StableDiffusionGuidanceConfig())
    if args.prior in ("zero123", "stable-zero123"):
        return zero123(Zero123GuidanceConfig(), args.prior)
    config = Magic123GuidanceConfig()
    stable_diffusion(config.stable_diffusion)
    zero123(config.zero123, "zero123")
    return config


def build_config(args: argparse.Namespace, data: Path, output_dir: Path, view, folders: dict):
    """The coarse trainer config of the chosen setting, with the prior's config in place."""
    from single_image_nerf.method_configs import coarse_trainer_config, headless

    if args.setting == "control":
        sys.path.insert(0, str(HERE))
        import oracle_recovery  # pylint: disable=import-outside-toplevel

        oracle_args = SimpleNamespace(steps=args.steps, device=args.device, size=args.size,
                                      novel_resolution=args.novel_resolution, views_per_step=args.views_per_step,
                                      implementation=None, lr=args.lr, lr_final_ratio=args.lr_final_ratio,
                                      object=args.object, weight=1.0)
        config = oracle_recovery.build_config(oracle_args, data, output_dir)
        # What the oracle's recipe sets, set here: the prior's own recipe would fill these otherwise.
        novel = config.pipeline.datamanager.novel_views
        novel.initial_azimuth_half_width, novel.widen_end = 180.0, 0.0
        novel.fov_range = (view.fov, view.fov)
        novel.radius_range = (view.radius, view.radius)
        config.pipeline.model.background = "white"
        config.pipeline.model.shading_start = 1.0  # albedo only
    else:
        config = headless(coarse_trainer_config(max_steps=args.steps), args.device, output_dir)
        config.pipeline.datamanager.data = data
        config.pipeline.datamanager.dataparser.image_size = args.size
        config.pipeline.datamanager.dataparser.recenter = False  # the known object keeps its true scale and place
    config.pipeline.datamanager.dataparser.reference_azimuth = args.views[0]  # where the main photo was taken
    config.steps_per_save = 10**9
    config.steps_per_eval_image = 10**9
    config.pipeline.guidance = prior_config(args, folders)
    apply_overrides(config, args.set)
    return config


def apply_overrides(config, assignments) -> None:
    """Set `path.to.field=value` assignments on the trainer config (values read as Python literals, else strings):
    the ablations of the default recipe."""
    import ast

    for assignment in assignments:
        path, _, text = assignment.partition("=")
        *parents, name = path.split(".")
        target = config
        for part in parents:
            target = getattr(target, part)
        if not hasattr(target, name):
            raise SystemExit(f"--set {assignment}: {type(target).__name__} has no field {name!r}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        setattr(target, name, value)


def record_azimuths(datamanager) -> list:
    """Wrap the datamanager's novel-camera draws so that every drawn azimuth (relative to the reference) is kept."""
    from single_image_nerf.data.camera_sampling import pose_angles, wrap_degrees

    drawn: list = []
    original = datamanager.next_novel_cameras

    def recording(step):
        cameras = original(step)
        azimuth, _, _ = pose_angles(cameras.camera_to_worlds.cpu())
        reference = (cameras.metadata or {}).get("reference_azimuth")
        offset = azimuth.reshape(-1) - (reference.reshape(-1).cpu() if reference is not None else 0.0)
        drawn.extend(wrap_degrees(offset).tolist())
        return cameras

    datamanager.next_novel_cameras = recording
    return drawn


def score_along_the_run(trainer, evaluation, steps) -> list:
    """Score the held-out mean after each of `steps` during training (a callback; its time is not the run's); returns
    the list it fills: step, views and pixels rendered so far, held-out mean, seconds spent scoring."""
    from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation

    from single_image_nerf.scripts import evaluate as E

    curve: list = []
    rendered = {"views": 0, "pixels": 0}
    datamanager = trainer.pipeline.datamanager
    original = datamanager.next_novel_cameras

    def counting(step):
        cameras = original(step)
        rendered["views"] += len(cameras)
        rendered["pixels"] += len(cameras) * int(cameras.height.reshape(-1)[0]) * int(cameras.width.reshape(-1)[0])
        return cameras

    datamanager.next_novel_cameras = counting

    def score(step: int) -> None:
        start = time.perf_counter()
        summary = E.evaluate_pipeline(trainer.pipeline, evaluation)["summary"]
        point = {"step": step + 1, **rendered, "held_out": summary["held_out"]["psnr"],
                 "eval_seconds": time.perf_counter() - start}
        curve.append(point)
        print(f"step {point['step']}: {point['views']} views, {point['pixels'] / 1e6:.2f} Mpx rendered, held-out "
              f"mean {point['held_out']:.2f} dB", flush=True)

    if steps:
        trainer.callbacks.append(TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], score,
                                                  iters=tuple(step - 1 for step in steps)))
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prior", choices=PRIORS, default="zero123")
    parser.add_argument("--setting", choices=("control", "default"), default="default")
    parser.add_argument("--object", default="box")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--size", type=int, default=64, help="reference image side the run trains on, pixels")
    parser.add_argument("--photo-size", type=int, default=256, help="side of the written photo (rgba.png), pixels")
    parser.add_argument("--views", type=float, nargs="+", default=[0.0],
                        help="azimuths of the reference photos, degrees (the first the main reference; e.g. 0 180)")
    parser.add_argument("--novel-resolution", type=int, default=64, help="novel-view side in the control setting")
    parser.add_argument("--views-per-step", type=int, default=1, help="novel views per step in the control setting")
    parser.add_argument("--lr", type=float, default=1e-2, help="learning rate in the control setting")
    parser.add_argument("--lr-final-ratio", type=float, default=0.1)
    parser.add_argument("--sd-guidance-scale", type=float, default=None, help="Stable Diffusion's scale (default: its)")
    parser.add_argument("--zero123-guidance-scale", type=float, default=None, help="Zero123's scale (default: its)")
    parser.add_argument("--sigma-degrees", type=float, default=2.5, help="Zero123 kernel width in camera direction")
    parser.add_argument("--sigma-radius", type=float, default=0.1, help="Zero123 kernel width in camera distance")
    parser.add_argument("--folders", type=Path, default=None,
                        help="exact prior folders (built there when missing; default: in the bank cache)")
    parser.add_argument("--cache", type=Path, default=None, help="bank cache folder")
    parser.add_argument("--num-views", type=int, default=8, help="held-out azimuths")
    parser.add_argument("--eval-resolution", type=int, default=None, help="held-out render side (default: --size)")
    parser.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                        help="override a config field, e.g. pipeline.model.background=white (repeatable)")
    parser.add_argument("--eval-steps", type=int, nargs="*", default=[],
                        help="also score the held-out mean after these steps (one line each, and in --json)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--strip", type=Path, default=None, help="PNG of held-out views, truth above, run below")
    args = parser.parse_args()

    import torch

    sys.path.insert(0, str(HERE))
    from exact_prior import ExactPriorOptions, default_cache_dir, install_exact_priors  # noqa: E402
    from exact_prior_folders import build_exact_prior_folders  # noqa: E402
    from oracle_recovery import write_strip  # noqa: E402

    from single_image_nerf.known_objects import ReferenceView, get_known_object, write_reference_views_folder
    from single_image_nerf.scripts import evaluate as E

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cache = args.cache or default_cache_dir()
    folders = build_exact_prior_folders(args.folders or cache / "folders")
    root = Path(tempfile.mkdtemp(prefix="exact-prior-"))
    view = ReferenceView(size=args.photo_size)
    obj = get_known_object(args.object)
    data = write_reference_views_folder(obj, root / "data", args.views, view)
    config = build_config(args, data, root / "outputs", view, folders)
    config.set_timestamp()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    pipeline = trainer.pipeline
    novel = pipeline.datamanager.config.novel_views
    main_view = replace(view, azimuth=args.views[0])
    options = ExactPriorOptions(object_name=args.object, reference_position=reference_position(main_view),
                                reference_fov=view.fov, resolution=max(novel.resolution),
                                elevation_range=tuple(novel.elevation_range), radius_range=tuple(novel.radius_range),
                                fov_range=tuple(novel.fov_range), sigma_degrees=args.sigma_degrees,
                                sigma_radius=args.sigma_radius, cache_dir=cache)
    start = time.perf_counter()
    install_exact_priors(pipeline.guidance, options)
    bank_seconds = time.perf_counter() - start
    drawn = record_azimuths(pipeline.datamanager)
    resolution = args.eval_resolution or args.size
    evaluation = E.EvaluateConfig(load_config=Path("unused"), known_object=args.object, num_views=args.num_views,
                                  resolution=resolution, supersample=1, geometry_views=12, geometry_resolution=64,
                                  clip_model=None)
    curve = score_along_the_run(trainer, replace(evaluation, geometry_views=0), args.eval_steps)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start - sum(point["eval_seconds"] for point in curve)
    report = E.evaluate_pipeline(pipeline, evaluation)
    held_out = [v for v in report["views"] if v["name"] != "reference"]
    widest = max((abs(a) for a in drawn), default=0.0)
    reached = [v["azimuth_offset"] for v in held_out if abs(v["azimuth_offset"]) <= widest]
    summary = report["summary"]
    label = f"{args.prior}" + (f" (SD scale {args.sd_guidance_scale:g})" if args.sd_guidance_scale is not None else "")
    label += "".join(f", {assignment}" for assignment in args.set)
    print(f"{args.object}, {label}, {args.setting} setting, reference photos at "
          f"{' '.join(f'{v:g}' for v in args.views)}: {args.steps} steps in {seconds:.0f} s "
          f"({1000 * seconds / args.steps:.0f} ms/step; bank {bank_seconds:.0f} s), novel views {novel.views_per_step} at "
          f"{novel.resolution} px from {novel.stage_starts} of the run, "
          f"widest novel azimuth {widest:.1f} deg")
    print("| view | " + " | ".join(f"{v['azimuth_offset']:+.1f}" for v in held_out) + " |")
    print("|---|" + "---:|" * len(held_out))
    print("| PSNR | " + " | ".join(f"{v['psnr']:.2f}" for v in held_out) + " |")
    print(f"held-out mean {summary['held_out']['psnr']:.2f} dB, front {summary['front']['psnr']:.2f}, back "
          f"{summary['back']['psnr']:.2f}, worst {min(v['psnr'] for v in held_out):.2f}, reference "
          f"{summary['reference']['psnr']:.2f}; F-score {report['geometry']['f_score']:.3f}; held-out azimuths "
          f"reached by the novel cameras: {', '.join(f'{a:+.1f}' for a in reached) or 'none'}")
    if args.strip is not None:
        write_strip(pipeline.model, E.reference_camera(pipeline).to("cpu"), obj, args.num_views, resolution, args.strip)
        print(f"strip: {args.strip}")
    if args.json is not None:
        E.write_report({"report": report, "train_seconds": seconds, "bank_seconds": bank_seconds,
                        "widest_azimuth": widest, "reached": reached, "steps": args.steps, "views": args.views,
                        "curve": curve,
                        "args": {k: str(v) for k, v in vars(args).items()}}, args.json)


if __name__ == "__main__":
    main()
