"""The exported mesh against the model it was made from: a coarse run and a refine run on a known object (the oracle
benchmark's refine command), each exported by `sin-export-mesh` and scored by `sin-evaluate --mesh`.

    .venv/bin/python benchmarks/mesh_export.py --object box --root /tmp/mesh-box --threads 1

The runs are trained into `--root` once (the command of docs/benchmarks.md, "Refine after coarse": 300 coarse steps
at 64 px, photo at 512 px, 300 refine steps, oracle prior) and reused when they are already there.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import oracle_recovery as oracle  # noqa: E402  (the benchmark whose runs this one exports)


def written_files(path: Path):
    """The files an export to `path` writes (an OBJ brings its MTL and texture image; nothing else of the stem,
    which an earlier export in another format may have left)."""
    return [path, path.with_suffix(".mtl"), path.with_suffix(".png")] if path.suffix == ".obj" else [path]


def train_args(object_name: str, device: str, steps: int, refine_steps: int) -> argparse.Namespace:
    """oracle_recovery's options for `--object OBJ --steps 300 --size 64 --photo-size 512 --novel-resolution 64
    --refine-steps 300` (docs/benchmarks.md)."""
    return argparse.Namespace(object=object_name, steps=steps, size=64, photo_size=512, novel_resolution=64,
                              views_per_step=1, views=[0.0], reference_fov=None, implementation=None, lr=1e-2,
                              lr_final_ratio=0.1, device=device, weight=1000.0, guidance="oracle",
                              refine_steps=refine_steps, refine_novel_resolution=0, hidden_points=5000,
                              contextual_vgg_weights="imagenet", contextual_loss_mult=1.0)


def find_config(root: Path, method: str):
    """The newest config.yml of `method` under `root`, or None."""
    found = sorted((root / "outputs").glob(f"*/{method}/*/config.yml"))
    return found[-1] if found else None


def train(config, stage: str, steps: int) -> Path:
    """Train one stage's config to the end, saving its run; returns its config.yml."""
    config.set_timestamp()
    config.save_config()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    start = time.perf_counter()
    trainer.train()
    print(f"{stage}: {steps} steps in {time.perf_counter() - start:.0f} s", flush=True)
    return config.get_base_dir() / "config.yml"


def train_runs(args: argparse.Namespace, root: Path):
    """(coarse config.yml, refine config.yml) under `root`, trained unless already there."""
    from single_image_nerf.known_objects import ReferenceView, get_known_object, write_reference_views_folder

    options = train_args(args.object, args.device, args.steps, args.refine_steps)
    coarse = find_config(root, "single-image-nerf")
    if coarse is None:
        photo = ReferenceView(size=options.photo_size)
        options.reference_fov = photo.fov
        data = write_reference_views_folder(get_known_object(args.object), root / "data", options.views, photo)
        coarse = train(oracle.build_config(options, data, root / "outputs"), "coarse", options.steps)
    refine = find_config(root, "single-image-refine")
    if refine is None:
        refine = train(oracle.build_refine_config(options, coarse, root / "outputs"), "refine", options.refine_steps)
    return coarse, refine


def scores(pipeline, args: argparse.Namespace, photo) -> dict:
    """Reference PSNR at the photo's size, held-out mean and F-score of a pipeline (a run, or a mesh in its
    model's place), as oracle_recovery scores a stage."""
    from single_image_nerf.scripts import evaluate as E

    evaluation = E.EvaluateConfig(load_config=Path("unused"), known_object=args.object, num_views=4, resolution=64,
                                  supersample=4, geometry_views=12, geometry_resolution=64, clip_model=None)
    report = E.evaluate_pipeline(pipeline, evaluation)
    fov = pipeline.datamanager.train_dataparser_outputs.cameras.fy  # the reference camera's field of view
    from single_image_nerf.data.camera_sampling import fov_from_focal

    reference_fov = float(fov_from_focal(fov.reshape(-1)[0], int(pipeline.datamanager.train_dataparser_outputs
                                                                   .cameras.height.reshape(-1)[0])))
    held_out = [view["psnr"] for view in report["views"] if view["name"] != "reference"]
    return {"reference": oracle.photo_psnr(pipeline, photo, photo.shape[0], reference_fov),
            "held_out": report["summary"]["held_out"]["psnr"], "worst": min(held_out),
            "front": report["summary"]["front"]["psnr"], "back": report["summary"]["back"]["psnr"],
            "f_score": report["geometry"]["f_score"], "chamfer": report["geometry"]["chamfer"]}


def export(config: Path, output: Path, **options) -> float:
    """sin-export-mesh on a run (its defaults unless `options`); seconds taken."""
    from single_image_nerf.scripts.export_mesh import ExportMeshConfig, export_mesh

    start = time.perf_counter()
    export_mesh(ExportMeshConfig(load_config=config, output=output, overwrite=True, **options))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--object", default="box")
    parser.add_argument("--root", type=Path, required=True, help="folder of the runs (trained there when missing)")
    parser.add_argument("--steps", type=int, default=300, help="coarse steps")
    parser.add_argument("--refine-steps", type=int, default=300)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument("--formats", nargs="+", default=[".glb"], help="mesh formats to export and score")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    coarse, refine = train_runs(args, args.root)
    print(f"coarse run {coarse}\nrefine run {refine}", flush=True)
    if args.train_only:
        return
    import numpy as np
    from types import SimpleNamespace

    from PIL import Image

    from single_image_nerf.runs import load_pipeline
    from single_image_nerf.scripts.evaluate import mesh_pipeline

    _, pipeline = load_pipeline(refine)
    data = Path(pipeline.datamanager.train_dataparser_outputs.metadata["data_dir"])
    photo = torch.from_numpy(np.asarray(Image.open(data / "rgba.png"), dtype=np.float32) / 255.0)
    exports = args.root / "exports"
    rows = {"refine model": scores(pipeline, args, photo)}
    print(f"refine model: {rows['refine model']}", flush=True)
    meshes = {"refine, fused depth (default)": (refine, {}),
              "coarse level set (today's coarse mesh)": (coarse, {"texture": "uv"})}
    for name, (config, options) in meshes.items():
        for suffix in args.formats:
            path = exports / f"{args.object}-{'refine' if config == refine else 'coarse'}{suffix}"
            chosen = dict(options, texture="vertex") if options.get("texture") and suffix == ".ply" else options
            seconds = export(config, path, **chosen)  # PLY holds vertex colours, no texture image
            drawn = mesh_pipeline(pipeline, path).model
            row = scores(SimpleNamespace(datamanager=pipeline.datamanager, model=drawn), args, photo)
            row.update(seconds=seconds, faces=len(drawn.faces),
                       megabytes=sum(f.stat().st_size for f in written_files(path)) / 1e6)
            rows[f"{name} {suffix}"] = row
            print(f"{name} {suffix}: {row}", flush=True)
    print("| what | reference PSNR, 512 px | held-out mean, 64 px | F-score | Chamfer | faces | export s | MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, row in rows.items():
        extra = f"{row['faces']} | {row['seconds']:.0f} | {row['megabytes']:.1f}" if "seconds" in row else " | | "
        print(f"| {name} | {row['reference']:.2f} | {row['held_out']:.2f} | {row['f_score']:.3f} | "
              f"{row['chamfer']:.4f} | {extra} |")


if __name__ == "__main__":
    main()
