"""`sin-render-turntable`: a 360-degree orbit of a run (coarse stage or any SplatfactoModel) as .mp4 or .gif.

The cameras are the project's orbit cameras (data/camera_sampling.orbit_cameras) at the reference camera's
elevation, radius and field of view unless given, starting at the reference azimuth and turning once around +Z.
Every frame is rendered by `pipeline.model.get_outputs_for_camera` and composited over one background colour.
.gif always works (Pillow); .mp4 needs the imageio-ffmpeg package. A GIF stores a run of identical consecutive
frames as one longer frame (Pillow does), so a perfectly symmetric object may read back with fewer frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from single_image_nerf.errors import UserInputError, run_command
from single_image_nerf import runs

VIDEO_SUFFIXES = (".mp4", ".gif")
"""Formats the command writes (chosen by the output's suffix)."""


@dataclass
class TurntableConfig:
    """Render a run turning once around the vertical axis, as a video or GIF."""

    load_config: Path
    """config.yml of a coarse (single-image-nerf) or refine (single-image-refine, any splatfacto) run."""
    output: Path = Path("turntable.gif")
    """Video to write: .mp4 (needs imageio-ffmpeg) or .gif."""
    frames: int = 60
    """Frames in one full turn."""
    resolution: int = 256
    """Side of the square frames in pixels (even, for .mp4)."""
    fps: int = 24
    """Frames per second."""
    elevation: Optional[float] = None
    """Camera elevation in degrees above the XY plane; None uses the reference camera's."""
    radius: Optional[float] = None
    """Camera distance from the origin; None uses the reference camera's."""
    fov: Optional[float] = None
    """Vertical field of view in degrees; None uses the reference camera's."""
    shading: Literal["albedo", "lambertian", "textureless", "normals"] = "albedo"
    """Shading of a coarse run's frames (refine runs render their Gaussians' colours)."""
    background: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Background colour the frames are composited over."""
    overwrite: bool = False
    """Replace an existing output instead of refusing to."""


# --------------------------------------------------------------------------------------------------- cameras


def turntable_cameras(reference, frames: int, resolution: int, elevation: Optional[float] = None,
                      radius: Optional[float] = None, fov: Optional[float] = None):
    """`frames` orbit cameras evenly spaced over one turn, the first at the reference azimuth."""
    from single_image_nerf.scripts.evaluate import camera_orbit
    from single_image_nerf.data.camera_sampling import orbit_cameras

    orbit = camera_orbit(reference)
    azimuth = orbit["azimuth"] + torch.arange(frames, dtype=torch.float32) * (360.0 / frames)

    def constant(value: Optional[float], default: float) -> Tensor:
        return torch.full((frames,), float(default if value is None else value))

    return orbit_cameras(azimuth, constant(elevation, orbit["elevation"]), constant(radius, orbit["radius"]),
                         constant(fov, orbit["fov"]), resolution, resolution, reference_azimuth=orbit["azimuth"])


# --------------------------------------------------------------------------------------------------- render


@torch.no_grad()
def render_frame(model, camera, background: Tensor) -> np.ndarray:
    """One (H, W, 3) uint8 frame from `model.get_outputs_for_camera`, recomposited over `background` when the
    model reports the background it used."""
    outputs = model.get_outputs_for_camera(camera.to(model.device))
    rgb = outputs["rgb"].float().cpu()
    if "accumulation" in outputs and "background" in outputs:
        accumulation = outputs["accumulation"].float().cpu().reshape(rgb.shape[:2] + (1,))
        used = outputs["background"].float().cpu()
        rgb = rgb + (1.0 - accumulation) * (background - used)
    return np.round(rgb.clamp(0.0, 1.0).numpy() * 255.0).astype(np.uint8)


def render_frames(model, cameras, background: Tuple[float, float, float] = (1.0, 1.0, 1.0),
                  shading: Optional[str] = None, progress: bool = True) -> np.ndarray:
    """(F, H, W, 3) uint8 frames of `model` seen from each camera, in eval mode (restored afterwards). For a coarse
    model `shading` picks the viewer shading and normals are only computed when that shading needs them."""
    from tqdm import tqdm

    target = torch.tensor(background, dtype=torch.float32)
    saved = {name: getattr(model, name) for name in ("viewer_shading", "eval_normals") if hasattr(model, name)}
    if "viewer_shading" in saved and shading is not None:
        model.viewer_shading = shading
    if "eval_normals" in saved:
        model.eval_normals = False
    was_training = model.training
    model.eval()
    try:
        frames = [render_frame(model, cameras[index:index + 1], target)
                  for index in tqdm(range(cameras.shape[0]), desc="turntable", unit="frame", disable=not progress)]
    finally:
        model.train(was_training)
        for name, value in saved.items():
            setattr(model, name, value)
    return np.stack(frames)


# ---------------------------------------------------------------------------------------------------- write


def check_video_output(path: Path, overwrite: bool, resolution: int) -> Path:
    """Validate the output before rendering: suffix, overwrite, folder, and the mp4 encoder's presence."""
    path = runs.check_output(path, overwrite, VIDEO_SUFFIXES)
    if path.suffix.lower() == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise UserInputError(f"writing {path.name} needs the imageio-ffmpeg package (pip install imageio-ffmpeg); "
                                 f"or write a GIF: --output {path.with_suffix('.gif')}") from None
        if resolution % 2:
            raise UserInputError(f"an .mp4 needs an even --resolution (H.264 with yuv420p), got {resolution}")
    return path


def write_video(frames: np.ndarray, path: Path, fps: int) -> None:
    """Write (F, H, W, 3) uint8 frames as a looping GIF or an H.264 .mp4, through a temporary file."""
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        if path.suffix.lower() == ".gif":
            from PIL import Image

            images = [Image.fromarray(frame) for frame in frames]
            images[0].save(temporary, save_all=True, append_images=images[1:], duration=max(1, round(1000 / fps)),
                           loop=0)
        else:
            import imageio.v2 as imageio

            with imageio.get_writer(temporary, fps=fps, codec="libx264", quality=8, macro_block_size=1,
                                    pixelformat="yuv420p") as writer:
                for frame in frames:
                    writer.append_data(frame)
        temporary.replace(path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise UserInputError(f"cannot write {path}: {error.strerror or error}") from None


# ------------------------------------------------------------------------------------------------- the command


def render_turntable(config: TurntableConfig, pipeline=None, announce: Callable[[str], None] = print) -> np.ndarray:
    """Run the command; `pipeline` may be given already loaded (tests). Returns the frames it wrote."""
    from single_image_nerf.inputs import check_numbers
    from single_image_nerf.scripts.evaluate import reference_camera

    check_numbers(config)
    for name, value, low in (("--frames", config.frames, 1), ("--resolution", config.resolution, 8),
                             ("--fps", config.fps, 1)):
        if value < low:
            raise UserInputError(f"{name} must be at least {low}, got {value}")
    if config.radius is not None and not config.radius > 0:
        raise UserInputError(f"--radius must be positive, got {config.radius}")
    if config.fov is not None and not 0 < config.fov < 180:
        raise UserInputError(f"--fov must lie in (0, 180) degrees, got {config.fov}")
    if config.elevation is not None and not -90 <= config.elevation <= 90:
        raise UserInputError(f"--elevation must lie in [-90, 90] degrees, got {config.elevation}")
    output = check_video_output(config.output, config.overwrite, config.resolution)
    if pipeline is None:
        run_config = runs.read_run_config(config.load_config)
        runs.check_stage_run(config.load_config, run_config, "the turntable renders single-image-nerf (coarse) "
                             "or Gaussian splatting (refine) runs")
        _, pipeline = runs.load_pipeline(config.load_config, run_config)
    cameras = turntable_cameras(reference_camera(pipeline).to("cpu"), config.frames, config.resolution,
                                config.elevation, config.radius, config.fov)
    frames = render_frames(pipeline.model, cameras, config.background, config.shading)
    write_video(frames, output, config.fps)
    announce(f"wrote {output} ({config.frames} frames of {config.resolution}x{config.resolution} at {config.fps} fps)")
    return frames


def entrypoint() -> None:
    """Console entry point (`sin-render-turntable`)."""
    import tyro

    run_command("sin-render-turntable", lambda: render_turntable(tyro.cli(TurntableConfig, prog="sin-render-turntable")))


if __name__ == "__main__":
    entrypoint()
