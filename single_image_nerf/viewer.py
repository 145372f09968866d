"""What nerfstudio's viewer shows of a single-image run besides the render: the reference camera with its photo, the
novel cameras of the current step (with what the model rendered from them), a shading switch, and the stage, step
and guidance timestep range.

`TrainingViewerPanel` only talks to a viser server (nerfstudio's, or any other): the trainer builds it when the
viewer is on and calls `update(step)` after every training step; updates are throttled so that a CPU run spends
its time training."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

SCALE = 10.0
"""nerfstudio's viewer draws the world ten times larger (VISER_NERFSTUDIO_SCALE_RATIO)."""
SHADINGS = ("albedo", "lambertian", "textureless", "normals")
"""Shading modes of the coarse model's renders outside training."""
ROOT = "/single_image"
"""Scene-tree folder of everything this panel draws."""


def _opencv_wxyz(camera_to_world: np.ndarray) -> np.ndarray:
    """viser's frustums follow OpenCV (+Z forward, +Y down); nerfstudio's cameras OpenGL (-Z forward, +Y up)."""
    import viser.transforms as vtf

    rotation = vtf.SO3.from_matrix(camera_to_world[:3, :3]) @ vtf.SO3.from_x_radians(np.pi)
    return rotation.wxyz


def _uint8_image(image: torch.Tensor, size: int = 96) -> np.ndarray:
    """(H, W, 3|4) or (3, H, W) float image in [0, 1] -> (h, w, 3) uint8, RGBA composited on white, at most `size`."""
    image = image.detach().float().cpu()
    if image.shape[0] in (3, 4) and image.shape[-1] not in (3, 4):
        image = image.permute(1, 2, 0)
    if image.shape[-1] == 4:
        image = image[..., :3] * image[..., 3:] + (1.0 - image[..., 3:])
    height, width = image.shape[:2]
    step = max(1, int(np.ceil(max(height, width) / size)))
    return (image[::step, ::step].clamp(0.0, 1.0).numpy() * 255.0).round().astype(np.uint8)


def stage_name(pipeline: Any) -> str:
    """'coarse' or 'refine', from the model."""
    return "refine" if hasattr(pipeline.model, "gauss_params") else "coarse"


def status_markdown(stage: str, step: int, total: Optional[int], status: Dict[str, float],
                    guidance_name: str) -> str:
    """The panel's text: stage, step, the guidance and its current timestep range when it has one."""
    lines = [f"**Stage:** {stage}", f"**Step:** {step}" + (f" / {total}" if total else "")]
    line = f"**Guidance:** {guidance_name}"
    if "t_min" in status and "t_max" in status:
        line += f", t in [{status['t_min']:.3f}, {status['t_max']:.3f}]"
    lines.append(line)
    others = {k: v for k, v in status.items() if k not in ("t_min", "t_max")}
    if others:
        lines.append(", ".join(f"{k} {v:.4g}" for k, v in sorted(others.items())))
    return "  \n".join(lines)


class TrainingViewerPanel:
    """Draws the reference and novel cameras and the status text on `server`; switches the model's shading."""

    def __init__(self, server: Any, pipeline: Any, total_steps: Optional[int] = None,
                 rerender: Optional[Callable[[], None]] = None, min_interval: float = 0.5,
                 frustum_scale: float = 2.0, show_step: Optional[Callable[[int], None]] = None) -> None:
        self.server = server
        self.pipeline = pipeline
        self.total_steps = total_steps
        self.rerender = rerender or (lambda: None)
        self.show_step = show_step or (lambda step: None)
        self.min_interval = min_interval
        self.frustum_scale = frustum_scale
        self.last_update = -np.inf
        self.last_step: Optional[int] = None
        self.novel_handles: List[Any] = []
        self.stage = stage_name(pipeline)
        guidance = getattr(pipeline, "guidance", None)
        self.guidance_name = "none" if guidance is None or type(guidance).__name__ == "Guidance" else \
            type(guidance).__name__.replace("Guidance", "").lower() or "none"

        folder = server.gui.add_folder("Single image")
        with folder:
            self.status = server.gui.add_markdown(status_markdown(self.stage, 0, total_steps, {}, self.guidance_name))
            self.shading = None
            if hasattr(pipeline.model, "viewer_shading"):
                self.shading = server.gui.add_dropdown("Shading", SHADINGS, initial_value=pipeline.model.viewer_shading,
                                                       hint="How the viewer renders the field (training is unchanged)")
                self.shading.on_update(lambda _: self.set_shading(self.shading.value))
            self.show_novel = server.gui.add_checkbox("Novel cameras", True, hint="This step's sampled cameras")
            self.show_novel.on_update(lambda _: self._set_novel_visible(self.show_novel.value))
        self.reference_handles = self._add_references()
        """One frustum per reference photo, main first (several for a several-photo folder)."""
        self.reference_handle = self.reference_handles[0]
        server.on_client_connect(self.look_from_reference)

    def opening_view(self) -> np.ndarray:
        """Where a new browser's camera starts: beside and above the reference camera, farther out, so that the
        object fills the middle of the view and the reference camera is in sight."""
        c2w = self.pipeline.datamanager.train_dataparser_outputs.cameras[0].camera_to_worlds.cpu().numpy()
        position = c2w[:3, 3].astype(np.float64)
        radius = float(np.linalg.norm(position))
        azimuth = np.arctan2(position[1], position[0]) + np.radians(35.0)
        elevation = np.arcsin(np.clip(position[2] / max(radius, 1e-9), -1.0, 1.0)) + np.radians(20.0)
        distance = 1.6 * radius
        return SCALE * distance * np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                                            np.sin(elevation)])

    def look_from_reference(self, client: Any) -> None:
        """Open a new browser's view near the reference camera, looking at the object, +Z up."""
        with client.atomic():
            client.camera.up_direction = (0.0, 0.0, 1.0)
            client.camera.position = self.opening_view()
            client.camera.look_at = (0.0, 0.0, 0.0)

    def adopt_training_cameras(self, viewer: Any) -> None:
        """Replace the frustum nerfstudio's viewer draws for the training image (its RGBA shown on black) by the
        reference frustums, so that its Hide/Show Train Cams buttons and click-to-view act on ours."""
        handles = getattr(viewer, "camera_handles", None) or {}
        for handle in handles.values():
            handle.remove()
        for index, handle in enumerate(self.reference_handles):
            handle.on_click(lambda event, index=index: self._view_from(event, viewer, index))
        viewer.camera_handles = dict(enumerate(self.reference_handles))

    @staticmethod
    def _view_from(event: Any, viewer: Any, index: int = 0) -> None:
        with event.client.atomic():
            event.client.camera.position = event.target.position
            event.client.camera.wxyz = event.target.wxyz
            viewer.current_camera_idx = index

    # ----------------------------------------------------------------------------------------------- scene
    def _add_references(self) -> List[Any]:
        """Every reference camera as a frustum carrying its photo, labelled: the main one "reference", each other
        photo of a several-photo folder "reference NNN°" (its azimuth relative to the main one)."""
        outputs = self.pipeline.datamanager.train_dataparser_outputs
        handles = [self._add_reference("reference", "reference", outputs.cameras[0], outputs.metadata.get("rgba"))]
        views = outputs.metadata.get("reference_views") or []
        for index, view in enumerate(views[1:], start=1):
            relative = (float(view["azimuth"]) - float(views[0]["azimuth"])) % 360.0
            handles.append(self._add_reference(f"reference_{index}", f"reference {relative:g}°",
                                               view["camera"][0], view["rgba"]))
        return handles

    def _add_reference(self, name: str, label: str, camera: Any, rgba: Any) -> Any:
        """One reference camera as a frustum carrying its photo, labelled."""
        c2w = camera.camera_to_worlds.cpu().numpy()
        height, width = float(camera.height.reshape(-1)[0]), float(camera.width.reshape(-1)[0])
        fov = 2.0 * float(np.arctan(height / (2.0 * float(camera.fy.reshape(-1)[0]))))
        image = _uint8_image(torch.as_tensor(np.asarray(rgba))) if rgba is not None else None
        handle = self.server.scene.add_camera_frustum(
            f"{ROOT}/{name}", fov=fov, aspect=width / height, scale=self.frustum_scale * 1.5,
            color=(255, 170, 0), image=image, wxyz=_opencv_wxyz(c2w), position=c2w[:3, 3] * SCALE)
        self.server.scene.add_label(f"{ROOT}/{name}/label", label)
        return handle

    def _set_novel_visible(self, visible: bool) -> None:
        for handle in self.novel_handles:
            handle.visible = visible

    def set_shading(self, shading: str) -> None:
        """Render the field in `shading` outside training (albedo, lambertian, textureless, normals)."""
        if shading not in SHADINGS:
            raise ValueError(f"unknown shading {shading!r}")
        self.pipeline.model.viewer_shading = shading
        self.rerender()

    def draw_novel_cameras(self, cameras: Any, images: Optional[torch.Tensor] = None) -> None:
        """Replace the drawn novel cameras by `cameras` (nerfstudio Cameras), each with its render when given."""
        c2ws = cameras.camera_to_worlds.detach().cpu().numpy()
        heights = cameras.height.reshape(-1).cpu().numpy()
        widths = cameras.width.reshape(-1).cpu().numpy()
        focals = cameras.fy.reshape(-1).cpu().numpy()
        with self.server.atomic():
            for index in range(len(c2ws)):
                fov = 2.0 * float(np.arctan(heights[index] / (2.0 * focals[index])))
                image = _uint8_image(images[index]) if images is not None and index < len(images) else None
                handle = self.server.scene.add_camera_frustum(
                    f"{ROOT}/novel/{index:02d}", fov=fov, aspect=float(widths[index] / heights[index]),
                    scale=self.frustum_scale, color=(60, 140, 255), image=image, wxyz=_opencv_wxyz(c2ws[index]),
                    position=c2ws[index][:3, 3] * SCALE, visible=bool(self.show_novel.value))
                if index < len(self.novel_handles):
                    self.novel_handles[index] = handle
                else:
                    self.novel_handles.append(handle)
            for handle in self.novel_handles[len(c2ws):]:
                handle.remove()
            del self.novel_handles[len(c2ws):]

    # ------------------------------------------------------------------------------------------------ updates
    def update(self, step: int, force: bool = False) -> bool:
        """After a training step: the step's novel cameras (and renders) and the status text. Returns whether it
        drew (at most once per `min_interval` seconds unless forced)."""
        now = time.monotonic()
        if not force and now - self.last_update < self.min_interval:
            return False
        self.last_update = now
        self.last_step = step
        pipeline = self.pipeline
        last = getattr(pipeline, "last_novel_views", None)
        if last is not None and last[0] == step:
            cameras, images = last[1], last[2]
        else:
            cameras, images = pipeline.datamanager.next_novel_cameras(step), None
        self.draw_novel_cameras(cameras, images)
        guidance = getattr(pipeline, "guidance", None)
        status = {}
        if guidance is not None:
            status = {k: float(v) for k, v in guidance.status(step).items()}
        skipped = getattr(pipeline, "skipped_steps", 0)
        if skipped:
            status["skipped_steps"] = float(skipped)
        self.status.content = status_markdown(self.stage, step, self.total_steps, status, self.guidance_name)
        self.show_step(step)
        return True
