"""Datamanager: each step, reference rays (colour, mask, depth) and a batch of novel cameras on the curriculum."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Type

import torch

from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager, VanillaDataManagerConfig

from single_image_nerf.data.camera_sampling import ViewRanges, cameras_to_device, curriculum_ranges, fov_from_focal, \
    orbit_cameras, pose_angles, sample_views
from single_image_nerf.data.dataset import SingleImageDataset
from single_image_nerf.data.single_image_dataparser import SingleImageDataParserConfig
from single_image_nerf.errors import UserInputError
from single_image_nerf.run_length import DEFAULT_RUN_STEPS, stage_index, stage_value, step_at


def concatenate_rays(bundles: List[RayBundle]) -> RayBundle:
    """Flat ray bundles joined end to end (every tensor field and metadata entry concatenated)."""
    joined = {}
    for item in dataclasses.fields(RayBundle):
        value = getattr(bundles[0], item.name)
        if isinstance(value, torch.Tensor):
            value = torch.cat([getattr(bundle, item.name) for bundle in bundles])
        elif isinstance(value, dict):
            value = {key: torch.cat([getattr(bundle, item.name)[key] for bundle in bundles]) for key in value}
        joined[item.name] = value
    return RayBundle(**joined)


@dataclass
class NovelViewConfig:
    """Where and how the novel cameras are drawn."""

    views_per_step: Optional[Tuple[int, ...]] = None
    """Novel cameras rendered at each training step: one value per stage of the run (`stage-starts`), or one for the
    whole run (None: the prior's recipe for the device: 12, 4, 2 on CUDA for zero123)."""
    resolution: Optional[Tuple[int, ...]] = None
    """Side of the square novel-view renders, in pixels: one value per stage of the run, or one for the whole run
    (None: the prior's recipe for the device: 64, 128, 256 on CUDA for zero123)."""
    stage_starts: Optional[Tuple[float, ...]] = None
    """Fractions of the run at which the second, third, ... stages of `views-per-step` and `resolution` begin
    (threestudio's resolution_milestones) (None: the prior's recipe; empty: one stage)."""
    initial_azimuth_half_width: Optional[float] = None
    """Half width of the azimuth window around the reference view at the start (45: a 90 degree window; 180: the
    full circle from the start) (None: the prior's recipe)."""
    widen_start: float = 0.0
    """Fraction of the run at which the azimuth window starts widening."""
    widen_end: Optional[float] = None
    """Fraction of the run by which the window has widened to the full circle (None: the prior's recipe)."""
    elevation_range: Tuple[float, float] = (-10.0, 45.0)
    """Elevation range of novel cameras, degrees above the XY plane."""
    radius_range: Optional[Tuple[float, float]] = None
    """Distance range of novel cameras from the origin (None: the prior's recipe; a view-conditioned prior keeps the
    reference camera's distance)."""
    fov_range: Optional[Tuple[float, float]] = None
    """Vertical field of view range of novel cameras, degrees (None: the prior's recipe; a view-conditioned prior keeps
    the reference camera's)."""
    uniform_sphere: bool = True
    """Draw directions uniformly over the sphere band (uniform in sin elevation) rather than uniform in angle."""
    seed: int = 0
    """Seed of the novel-camera draws; a step's cameras depend only on the seed and the step."""

    def unresolved(self) -> list:
        """Names of the options still unset (the pipeline fills them from the prior's recipe)."""
        return [name for name in ("views_per_step", "resolution", "stage_starts", "initial_azimuth_half_width",
                                  "widen_end", "radius_range", "fov_range") if getattr(self, name) is None]

    def normalise(self) -> None:
        """One number given for `views_per_step` or `resolution` (a script's assignment, an older config.yml) becomes a
        one-stage tuple; with one value for each and no stage starts (a config.yml written before stages existed),
        the run has one stage."""
        for name in ("views_per_step", "resolution", "stage_starts"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                setattr(self, name, tuple(value) if isinstance(value, list) else (value,))
        one_stage = all(value is not None and len(value) == 1 for value in (self.views_per_step, self.resolution))
        if self.stage_starts is None and one_stage:  # a config.yml written before stages existed: one stage
            self.stage_starts = ()

    def stage_at(self, step: int, run_steps: int) -> Tuple[int, int]:
        """(views, side in pixels) of the novel views at `step` of a run of `run_steps`."""
        index = stage_index(step, self.stage_starts or (), run_steps)
        return int(stage_value(self.views_per_step, index)), int(stage_value(self.resolution, index))

    def validate(self, scene_bound: float) -> None:
        """Refuse impossible ranges with one line each."""
        if self.unresolved():
            raise ValueError(f"novel-view options {', '.join(self.unresolved())} are unset: the pipeline fills them "
                             "from the prior's recipe (SingleImagePipelineConfig.resolve) before the datamanager is built")
        self.normalise()
        stages = len(self.stage_starts) + 1
        starts = (0.0, *self.stage_starts, 1.0)
        checks = [
            (all(len(getattr(self, name)) in (1, stages) for name in ("views_per_step", "resolution")),
             f"views per step {self.views_per_step} and resolution {self.resolution} need one value, or one per stage "
             f"({stages}: stage starts {self.stage_starts})"),
            (all(low < high for low, high in zip(starts, starts[1:])),
             f"stage starts are increasing fractions of the run inside (0, 1), got {self.stage_starts}"),
            (min(self.views_per_step) >= 1, f"views per step must be at least 1, got {self.views_per_step}"),
            (min(self.resolution) >= 8, f"novel-view resolution must be at least 8 pixels, got {self.resolution}"),
            (0.0 <= self.initial_azimuth_half_width <= 180.0,
             f"initial azimuth half width must lie in [0, 180], got {self.initial_azimuth_half_width}"),
            (0.0 <= self.widen_start <= 1.0 and 0.0 <= self.widen_end <= 1.0,
             f"widen start and end are fractions of the run in [0, 1], got {self.widen_start} and {self.widen_end}"),
            (-90.0 <= self.elevation_range[0] <= self.elevation_range[1] <= 90.0,
             f"elevation range must be ordered within [-90, 90], got {self.elevation_range}"),
            (0.0 < self.radius_range[0] <= self.radius_range[1],
             f"radius range must be positive and ordered, got {self.radius_range}"),
            (self.radius_range[0] > scene_bound * 3**0.5,
             f"novel cameras must stay outside the scene box: radius range must start above "
             f"{scene_bound * 3**0.5:.2f}, got {self.radius_range}"),
            (0.0 < self.fov_range[0] <= self.fov_range[1] < 180.0,
             f"fov range must be ordered within (0, 180) degrees, got {self.fov_range}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserInputError(message)

    def ranges_at(self, step: int, run_steps: int) -> ViewRanges:
        """The curriculum's view ranges at `step` of a run of `run_steps`: the window widens from `widen_start` to
        `widen_end` of the run."""
        start = step_at(self.widen_start, run_steps)
        length = max(step_at(self.widen_end, run_steps) - start, 0)
        return curriculum_ranges(step, self.initial_azimuth_half_width, length, self.elevation_range,
                                 self.radius_range, self.fov_range, widen_start=start)


@dataclass
class SingleImageDataManagerConfig(VanillaDataManagerConfig):
    """Reference rays from the one image, novel cameras from the curriculum."""

    _target: Type = field(default_factory=lambda: SingleImageDataManager)
    dataparser: SingleImageDataParserConfig = field(default_factory=SingleImageDataParserConfig)
    """The single-image dataparser."""
    train_num_rays_per_batch: int = 1024
    """Reference-view rays per training step."""
    eval_num_rays_per_batch: int = 1024
    """Reference-view rays per evaluation batch."""
    novel_views: NovelViewConfig = field(default_factory=NovelViewConfig)
    """How novel cameras are drawn."""


class SingleImageDataManager(VanillaDataManager[SingleImageDataset]):
    """VanillaDataManager over the reference view (so ns-export's point cloud and mesh paths work) plus novel cameras."""

    config: SingleImageDataManagerConfig

    def __init__(self, config: SingleImageDataManagerConfig, *args, **kwargs) -> None:
        config.novel_views.validate(config.dataparser.scene_bound)
        super().__init__(config, *args, **kwargs)
        self._orbit_generator: Optional[torch.Generator] = None
        self.run_steps = DEFAULT_RUN_STEPS
        """Steps of the whole run (the pipeline sets it from --max-num-iterations): the curriculum's fractions are of it."""
        self._reference: Optional[Tuple[RayBundle, Dict[str, torch.Tensor]]] = None

    def next_train(self, step: int) -> Tuple[RayBundle, Dict]:
        """Training: reference-view rays and their targets. Outside training (`ns-export pointcloud` and `poisson`
        sample the scene through this call): rays from orbit cameras all around the object and an empty batch, so
        that exported points cover every side rather than only the photographed one."""
        self.train_count += 1
        if self.test_mode == "val":
            return self.reference_rays(self.config.train_num_rays_per_batch)
        sampler = getattr(self, "train_pixel_sampler", None)
        count = sampler.num_rays_per_batch if sampler is not None else self.config.train_num_rays_per_batch
        return self.orbit_rays(count), {}

    def reference_rays(self, count: int) -> Tuple[RayBundle, Dict]:
        """`count` rays through random pixels of the reference views (drawn with replacement by the device's default
        generator, as nerfstudio's pixel sampler does, from every view's pixels pooled) and their "image" (RGBA),
        "depth" (when present) and "indices" (view, row, column; the view is 0 for one photo). Every ray and pixel is
        kept on the device from the first call, so a step only draws and gathers: nothing waits on the device or
        copies from the host."""
        if self._reference is None:
            self._reference = self._reference_pixels()
        bundle, pixels = self._reference
        picked = torch.randint(bundle.shape[0], (count,), device=bundle.origins.device)
        return bundle[picked], {key: value[picked] for key, value in pixels.items()}

    def _reference_pixels(self) -> Tuple[RayBundle, Dict[str, torch.Tensor]]:
        """Every reference view's rays (H*W each) and per-pixel batch entries, flattened and pooled, on the device."""
        views = self.reference_views
        if views is None:
            image = next(self.iter_train_image_dataloader)
            views = [{"camera": self.train_dataset.cameras[0:1], "rgba": image["image"], "depth": image.get("depth")}]
        with_depth = any(isinstance(view.get("depth"), torch.Tensor) for view in views)
        bundles, pooled = [], []
        for index, view in enumerate(views):
            bundle = view["camera"].to(self.device).generate_rays(camera_indices=0, keep_shape=True)
            height, width = bundle.shape
            rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
            pixels = {"indices": torch.stack([torch.full_like(rows, index), rows, cols], dim=-1),
                      "image": torch.as_tensor(view["rgba"], dtype=torch.float32)}
            if with_depth:
                depth = view.get("depth")
                pixels["depth"] = torch.full((height, width), float("nan")) if depth is None else depth.float()
            pixels = {key: value.reshape(height * width, -1).to(self.device) for key, value in pixels.items()}
            bundle = bundle.flatten().to(self.device)
            bundle.camera_indices = torch.full_like(bundle.camera_indices, index)
            bundles.append(bundle)
            pooled.append(pixels)
        bundle = bundles[0] if len(bundles) == 1 else concatenate_rays(bundles)
        return bundle, {key: torch.cat([pixels[key] for pixels in pooled]) for key in pooled[0]}

    @property
    def reference_views(self) -> Optional[List[Dict]]:
        """The dataparser's reference views of a several-photo folder (main first), or None for one photo."""
        return self.train_dataparser_outputs.metadata.get("reference_views")

    @property
    def reference_view_count(self) -> int:
        """How many reference views the reference rays are drawn from."""
        views = self.reference_views
        return 1 if views is None else len(views)

    def orbit_rays(self, count: int, num_cameras: int = 64) -> RayBundle:
        """`count` rays through random pixels of `num_cameras` random cameras spread uniformly over the sphere, at
        the reference camera's radius, field of view and resolution (a generator of its own, seeded from the config)."""
        if self._orbit_generator is None:
            self._orbit_generator = torch.Generator().manual_seed(self.config.novel_views.seed)
        generator = self._orbit_generator
        reference = self.train_dataparser_outputs.cameras[0:1]
        _, _, radius = pose_angles(reference.camera_to_worlds)
        height, width = int(reference.height.reshape(-1)[0]), int(reference.width.reshape(-1)[0])
        fov = fov_from_focal(reference.fy.reshape(-1)[0], height)
        azimuth = 360.0 * torch.rand(num_cameras, generator=generator)
        elevation = torch.rad2deg(torch.asin(2.0 * torch.rand(num_cameras, generator=generator) - 1.0))
        cameras = orbit_cameras(azimuth, elevation, radius.reshape(-1).expand(num_cameras), fov.expand(num_cameras),
                                width, height, reference_azimuth=self.reference_azimuth)
        indices = torch.randint(num_cameras, (count, 1), generator=generator)
        coords = torch.rand(count, 2, generator=generator) * torch.tensor([float(height), float(width)])
        bundle = cameras.generate_rays(camera_indices=indices, coords=coords)
        return bundle.to(self.device)

    @property
    def reference_azimuth(self) -> float:
        """Azimuth of the (main) reference camera, degrees."""
        return self.config.dataparser.reference_azimuth

    @property
    def reference_azimuths(self) -> Tuple[float, ...]:
        """Azimuths of every reference camera, degrees, main first (one for one photo): the novel-view windows are
        centred on them."""
        views = self.reference_views
        return (self.reference_azimuth,) if views is None else tuple(float(view["azimuth"]) for view in views)

    def novel_view_ranges(self, step: int) -> ViewRanges:
        """The curriculum's view ranges at `step`."""
        return self.config.novel_views.ranges_at(step, self.run_steps)

    def novel_view_stage(self, step: int) -> Tuple[int, int]:
        """(views, side in pixels) of the novel views at `step`."""
        return self.config.novel_views.stage_at(step, self.run_steps)

    def next_novel_cameras(self, step: int) -> Cameras:
        """The novel cameras of `step` (as many, and as large, as the stage of the run says), reproducible from the
        seed and the step alone, on the datamanager's device."""
        novel = self.config.novel_views
        count, side = self.novel_view_stage(step)
        generator = torch.Generator().manual_seed(novel.seed * 1_000_003 + step)
        azimuth, elevation, radius, fov = sample_views(
            self.novel_view_ranges(step), count, self.reference_azimuths, generator,
            uniform_sphere=novel.uniform_sphere,
        )
        cameras = orbit_cameras(azimuth, elevation, radius, fov, side, side, reference_azimuth=self.reference_azimuth)
        return cameras_to_device(cameras, self.device)
