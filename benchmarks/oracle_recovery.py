"""A longer oracle run of the coarse stage on a known object at realistic sizes; held-out PSNR per azimuth.

The project's goal is at least 28 dB on held-out views all the way round when the prior is exact. The run goes
through nerfstudio's Trainer like `ns-train single-image-nerf ... pipeline.guidance:oracle` and is scored with
`sin-evaluate`'s functions (held-out views at 22.5 + 360 k / N degrees from the reference, white background).

    .venv/bin/python benchmarks/oracle_recovery.py --object box --steps 1500 --size 128
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def build_config(args: argparse.Namespace, data: Path, output_dir: Path):
    from single_image_nerf.guidance.oracle import OracleGuidanceConfig
    from single_image_nerf.method_configs import coarse_trainer_config, headless

    config = headless(coarse_trainer_config(max_steps=args.steps), args.device, output_dir)
    config.steps_per_save = 10**9
    config.steps_per_eval_image = 10**9
    pipeline = config.pipeline
    pipeline.datamanager.data = data
    pipeline.datamanager.dataparser.image_size = args.size
    pipeline.datamanager.dataparser.recenter = False  # the known object keeps its true scale and place
    novel = pipeline.datamanager.novel_views
    novel.resolution = args.novel_resolution
    novel.views_per_step = args.views_per_step
    novel.widen_steps = 0  # the oracle is right everywhere: no curriculum needed
    model = pipeline.model
    model.background = "white"  # the oracle's ground truth is composited over white
    model.albedo_iters = 10**9  # the oracle renders albedo
    if args.implementation:
        model.implementation = args.implementation
    for group in config.optimizers.values():
        group["optimizer"].lr = args.lr
        group["scheduler"].lr_final = args.lr * args.lr_final_ratio
    pipeline.guidance = OracleGuidanceConfig(known_object=args.object, weight=args.weight)
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--object", default="box")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--size", type=int, default=128, help="reference image side, pixels")
    parser.add_argument("--novel-resolution", type=int, default=64, help="novel-view render side, pixels")
    parser.add_argument("--views-per-step", type=int, default=1)
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
    args = parser.parse_args()

    import torch

    from single_image_nerf.known_objects import ReferenceView, get_known_object, write_reference_folder
    from single_image_nerf.scripts import evaluate as E

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    root = Path(tempfile.mkdtemp(prefix="oracle-"))
    data = write_reference_folder(get_known_object(args.object), root / "data", ReferenceView(size=args.size))
    config = build_config(args, data, root / "outputs")
    config.set_timestamp()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    reports = {}
    for supersample in args.supersample:  # geometry does not depend on it: scored with the first only
        evaluation = E.EvaluateConfig(load_config=Path("unused"), known_object=args.object, num_views=args.num_views,
                                      resolution=args.eval_resolution, supersample=supersample,
                                      geometry_views=0 if reports else 12, geometry_resolution=64, clip_model=None)
        reports[supersample] = E.evaluate_pipeline(trainer.pipeline, evaluation)
    report = reports[args.supersample[0]]
    print(f"{args.object}: {args.steps} steps, reference {args.size} px, novel views {args.novel_resolution} px x "
          f"{args.views_per_step}/step, {train_seconds:.0f} s training on {args.device} "
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
        print(f"{supersample}x{supersample} rays/pixel: held-out mean {summary['held_out']['psnr']:.2f} dB, front "
              f"{summary['front']['psnr']:.2f}, back {summary['back']['psnr']:.2f}, worst "
              f"{min(v['psnr'] for v in held_out):.2f}")
    print(f"F-score {report['geometry']['f_score']:.3f}, Chamfer {report['geometry']['chamfer']:.4f}")
    if args.json is not None:
        E.write_report({"by_supersample": {str(k): v for k, v in reports.items()},
                        "args": {k: str(v) for k, v in vars(args).items()}, "train_seconds": train_seconds}, args.json)


if __name__ == "__main__":
    main()
