"""The coarse model: proposal sampling over a hash-grid field, shading modes, backgrounds and the reference losses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional, Tuple, Type

import torch
from torch import Tensor, nn
from torch.nn import Parameter

from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.model_components.losses import interlevel_loss, orientation_loss
from nerfstudio.model_components.ray_samplers import ProposalNetworkSampler, UniformSampler
from nerfstudio.model_components.renderers import AccumulationRenderer, DepthRenderer
from nerfstudio.model_components.scene_colliders import AABBBoxCollider
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.utils import colormaps

from single_image_nerf.data.camera_sampling import pinhole_ray_bundle
from single_image_nerf.models.coarse_field import CoarseField
from single_image_nerf.models.losses import (SharedLossWeights, composite, normal_smoothness_2d, opacity_regularization,
                                             reference_view_losses)
from single_image_nerf.models.proposal_grid import DenseDensityGrid
from single_image_nerf.run_length import DEFAULT_RUN_STEPS, step_at

Shading = Literal["albedo", "lambertian", "textureless", "normals"]


SHADING_CODES: Tuple[Shading, ...] = ("albedo", "textureless", "lambertian")
"""The shadings a training view draws, by code: albedo below albedo_ratio, then textureless, then lambertian."""


@dataclass(eq=False)
class ViewDraws:
    """The random choices of one step's novel views, drawn together (`CoarseModel.draw_views`), on the device."""

    backgrounds: Optional[Tensor] = None
    """(B, 3) background of each view; None: the model's default (white, or the learned one)."""
    shading: Optional[Tensor] = None
    """(B,) index into SHADING_CODES of each view; None: albedo for all (before shading begins)."""
    light_jitter: Optional[Tensor] = None
    """(B, 3) offset of each view's light from its camera position (with `shading`)."""

    def select(self, index: int) -> ViewDraws:
        """The draws of view `index` alone."""
        return ViewDraws(*(None if value is None else value[index:index + 1]
                           for value in (self.backgrounds, self.shading, self.light_jitter)))


def lit(normals: Tensor, light: Tensor, ambient: float) -> Tensor:
    """Light level ambient + (1 - ambient) max(n . l, 0) of each sample (..., 1), for unit light directions."""
    lambert = (normals * light).sum(-1, keepdim=True).clamp_min(0.0)
    return ambient + (1.0 - ambient) * lambert


@dataclass(eq=False)
class RayShading:
    """Each ray's shading in a batch of views: a code into SHADING_CODES and a unit light direction."""

    codes: Tensor
    """(N,) shading code of each ray."""
    lights: Tensor
    """(N, 3) unit light direction of each ray."""

    def shade(self, albedo: Tensor, normals: Optional[Tensor], ambient: float) -> Tensor:
        """Colour of each sample (N, S, 3) under its ray's shading, chosen on the device (no host decision)."""
        if normals is None:
            return albedo
        level = lit(normals, self.lights[:, None, :], ambient)
        code = self.codes.reshape(-1, 1, 1)
        return torch.where(code == 0, albedo, torch.where(code == 1, level.expand_as(albedo), albedo * level))


def _per_ray(per_view: Tensor, rays_per_view: int) -> Tensor:
    """(B, ...) values repeated for each of a view's rays, in the order of the flattened (B, H, W) rays."""
    return per_view[:, None].expand(per_view.shape[0], rays_per_view, *per_view.shape[1:]).reshape(
        -1, *per_view.shape[1:])


def _common_size(cameras: Cameras) -> Tuple[int, int]:
    """(height, width) shared by all `cameras` (read back from them: a caller in a loop passes the size instead)."""
    heights, widths = cameras.height.reshape(-1).tolist(), cameras.width.reshape(-1).tolist()
    if len(set(heights)) != 1 or len(set(widths)) != 1:
        raise ValueError(f"views rendered together must share one size, got heights {heights} and widths {widths}")
    return int(heights[0]), int(widths[0])


@dataclass
class CoarseModelConfig(ModelConfig, SharedLossWeights):
    """Coarse stage: a hash-grid radiance field fitted to the reference view and shaped by a guidance elsewhere."""

    _target: Type = field(default_factory=lambda: CoarseModel)
    implementation: Literal["tcnn", "torch"] = "tcnn"
    """Hash grid and MLP backend: tiny-cuda-nn when installed, else nerfstudio's pure-torch grid."""
    normals: Literal["auto", "analytic", "finite-difference"] = "auto"
    """Normals of the shaded phase: carried forward with the torch grid, finite differences with tiny-cuda-nn (auto)."""
    finite_difference_eps: float = 0.005
    """Step of finite-difference normals as a fraction of the scene box's side (threestudio's 0.01 for side 2)."""
    num_levels: int = 16
    """Hash-grid levels of the main field."""
    max_res: int = 512
    """Finest hash-grid resolution of the main field."""
    log2_hashmap_size: int = 18
    """Log2 of the hash table size per level."""
    hidden_dim: int = 64
    """Width of the field's MLP."""
    num_proposal_samples_per_ray: Tuple[int, ...] = (128, 64)
    """Samples per ray for each proposal network."""
    proposal_grid_resolutions: Tuple[int, ...] = (128, 256)
    """Side of each proposal sampler's dense log-density grid, in the order of num_proposal_samples_per_ray (the
    last one serves any further proposal)."""
    num_nerf_samples_per_ray: int = 32
    """Samples per ray for the main field."""
    proposal_update_every: int = 5
    """Proposal networks are updated every this many steps after warm-up."""
    proposal_warmup_end: float = 0.2
    """Fraction of the run over which the proposal update interval grows from 1 to proposal_update_every (nerfacto:
    1000 of its 30000 steps; ours 1000 of the coarse stage's 5000)."""
    proposal_weights_anneal_slope: float = 10.0
    """Slope of the proposal-weight annealing."""
    proposal_weights_anneal_end: float = 0.1
    """Fraction of the run over which the proposal weights are annealed (500 of the coarse stage's 5000 steps)."""
    blob_strength: float = 5.0
    """Strength of the initial density blob at the origin (pre-activation)."""
    blob_radius: float = 0.5
    """Radius of the initial density blob."""
    background: Optional[Literal["random", "white", "learned"]] = None
    """Background behind the object in training renders (None: the prior's recipe: white for Zero123-family priors,
    random colours otherwise); views for the viewer and evaluation use white (or the learned one)."""
    shading_start: Optional[float] = None
    """Fraction of the run rendered in albedo only before shading (lambertian, textureless) begins on novel views
    (1: never) (None: the prior's recipe)."""
    textureless_ratio: float = 0.2
    """Once shading has begun, share of novel views rendered textureless (white albedo, lit)."""
    albedo_ratio: float = 0.2
    """Once shading has begun, share of novel views still rendered with albedo only."""
    ambient: float = 0.1
    """Ambient light of the lambertian and textureless shadings."""
    orientation_loss_mult: float = 1e-2
    """Weight of the orientation loss (normals must not face away from the camera), once normals are rendered."""
    normal_smoothness_loss_mult: float = 0.5
    """Weight of the 2D smoothness of rendered normal maps on novel views, once normals are rendered."""
    interlevel_loss_mult: float = 1.0
    """Weight of the proposal networks' interlevel loss."""
    novel_view_interlevel: bool = True
    """Train the proposal sampler on the novel-view rays too (the interlevel loss on every rendered batch), so the
    unseen side is sampled where its density is, as the references' occupancy grids do for every direction."""
    seed: int = 0
    """Seed of the model's own random draws (backgrounds, light directions, shading choices)."""


class CoarseModel(Model):
    """Renders albedo/shaded colour, opacity, depth and normals; computes the reference-view and novel-view losses."""

    config: CoarseModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        config = self.config
        aabb = self.scene_box.aabb
        self.field = CoarseField(
            aabb,
            num_levels=config.num_levels,
            max_res=config.max_res,
            log2_hashmap_size=config.log2_hashmap_size,
            hidden_dim=config.hidden_dim,
            blob_strength=config.blob_strength,
            blob_radius=config.blob_radius,
            implementation=config.implementation,
            normals=config.normals,
            finite_difference_eps=config.finite_difference_eps,
        )
        num_proposals = len(config.num_proposal_samples_per_ray)
        resolutions = config.proposal_grid_resolutions
        self.proposal_networks = nn.ModuleList(
            DenseDensityGrid(aabb, resolutions[min(i, len(resolutions) - 1)]) for i in range(num_proposals)
        )

        def update_schedule(step: int) -> float:
            warmup = step_at(config.proposal_warmup_end, self.run_steps)
            if warmup <= 0:
                return float(config.proposal_update_every)
            ramp = step / warmup * config.proposal_update_every
            return float(min(max(ramp, 1.0), config.proposal_update_every))

        self.proposal_sampler = ProposalNetworkSampler(
            num_nerf_samples_per_ray=config.num_nerf_samples_per_ray,
            num_proposal_samples_per_ray=config.num_proposal_samples_per_ray,
            num_proposal_network_iterations=num_proposals,
            single_jitter=True,
            update_sched=update_schedule,
            initial_sampler=UniformSampler(single_jitter=True),
        )
        self.collider = AABBBoxCollider(self.scene_box, near_plane=0.05)
        self.renderer_accumulation = AccumulationRenderer()
        self.renderer_depth = DepthRenderer(method="expected")
        if config.background == "learned":
            self.background_mlp = nn.Sequential(nn.Linear(3, 32), nn.ReLU(), nn.Linear(32, 3), nn.Sigmoid())
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.run_steps = DEFAULT_RUN_STEPS
        """Steps of the whole run (the pipeline sets it from --max-num-iterations): the schedules are fractions of it."""
        self.reference_view_count = 1
        """Reference views the reference rays come from (the pipeline sets it from the data): the depth loss is
        matched view by view."""
        self.viewer_shading: Shading = "albedo"
        """Shading of renders outside training (the viewer switches it)."""
        self.eval_normals = True
        """Render normals outside training too (shown by the viewer, read by `ns-export --normal-method
        model_output`); a caller that wants colour alone (a turntable) may switch them off to halve the cost."""

    # ----------------------------------------------------------------------------------------------- training state
    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        groups = {"proposal_networks": list(self.proposal_networks.parameters()), "fields": list(self.field.parameters())}
        if self.config.background == "learned":
            groups["fields"] += list(self.background_mlp.parameters())
        return groups

    def update_to_step(self, step: int) -> None:
        self.step = step

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes) -> List[TrainingCallback]:
        config = self.config

        def before_step(step: int) -> None:
            self.step = step
            anneal_steps = max(step_at(config.proposal_weights_anneal_end, self.run_steps), 1)
            fraction = min(max(step / anneal_steps, 0.0), 1.0)
            slope = config.proposal_weights_anneal_slope
            self.proposal_sampler.set_anneal(slope * fraction / ((slope - 1.0) * fraction + 1.0))

        return [
            TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], before_step, update_every_num_iters=1),
            TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], self.proposal_sampler.step_cb,
                             update_every_num_iters=1),
        ]

    @property
    def shading_begun(self) -> bool:
        """Whether the current step is past the albedo-only start of the run (`shading_start`)."""
        return self.config.shading_start < 1.0 and self.step >= step_at(self.config.shading_start, self.run_steps)

    # -------------------------------------------------------------------------------------------------- rendering
    def _rand(self, *shape: int) -> Tensor:
        """Uniform draws from the model's (host) generator, queued to the device without waiting on it."""
        return torch.rand(*shape, generator=self.generator).to(self.device, non_blocking=True)

    def training_background(self, count: int) -> Tensor:
        """One background colour for a whole batch (training), as (3,)."""
        if self.config.background == "random":
            return self._rand(3)
        return torch.ones(3, device=self.device)

    def draw_views(self, count: int) -> ViewDraws:
        """The random choices of `count` novel views at the current step, from the model's generator in a fixed
        order (backgrounds, then shadings and lights once shading has begun). Nothing is read back to the host."""
        config = self.config
        if config.background == "random":
            backgrounds = self._rand(count, 3)
        else:  # white, and white for novel views of a learned background too (the guidance sees plain views)
            backgrounds = torch.ones(count, 3, device=self.device)
        if not self.shading_begun:
            return ViewDraws(backgrounds)
        draw = torch.rand(count, generator=self.generator)
        codes = (draw >= config.albedo_ratio).long() + (draw >= config.albedo_ratio + config.textureless_ratio).long()
        jitter = 0.5 * torch.randn(count, 3, generator=self.generator)
        return ViewDraws(backgrounds, codes.to(self.device, non_blocking=True),
                         jitter.to(self.device, non_blocking=True))

    def get_outputs(self, ray_bundle: RayBundle, shading: Optional[Shading | RayShading] = None,
                    background: Optional[Tensor] = None) -> Dict[str, Tensor | List]:
        """Render rays. Outside training the viewer's shading and a white (or learned) background are used."""
        if shading is None:
            shading = "albedo" if self.training else self.viewer_shading
        ray_samples, weights_list, ray_samples_list = self.proposal_sampler(
            ray_bundle, density_fns=[network.density_fn for network in self.proposal_networks]
        )
        need_normals = shading != "albedo" or (self.training and self.shading_begun
                                               and self.config.orientation_loss_mult > 0)
        need_normals = need_normals or (not self.training and self.eval_normals)
        if need_normals:
            density, albedo, normals = self.field.forward_with_normals(ray_samples, create_graph=self.training)
        else:
            density, albedo = self.field.raw(ray_samples.frustums.get_positions())
            normals = None
        weights = ray_samples.get_weights(density)
        weights_list.append(weights)
        ray_samples_list.append(ray_samples)
        accumulation = self.renderer_accumulation(weights).clamp(0.0, 1.0)
        colour = self._shade(albedo, normals, shading, ray_bundle)
        rgb = torch.sum(weights * colour, dim=-2)
        if background is None:
            background = self._default_background(ray_bundle)
        background = background.expand_as(rgb)
        outputs: Dict[str, Tensor | List] = {
            "rgb": rgb + (1.0 - accumulation) * background,
            "accumulation": accumulation,
            "depth": self.renderer_depth(weights, ray_samples),
            "background": background,
        }
        if normals is not None:
            # nerfstudio's convention for a "normals" output (its viewer and exporters read it): mapped to [0, 1].
            outputs["normals"] = 0.5 * (torch.sum(weights * normals, dim=-2) + 1.0)
            if self.training:
                outputs["orientation"] = orientation_loss(weights.detach(), normals, ray_bundle.directions)
        if self.training:
            outputs["weights_list"] = weights_list
            outputs["ray_samples_list"] = ray_samples_list
        return outputs

    def _default_background(self, ray_bundle: RayBundle) -> Tensor:
        if self.config.background == "learned":
            return self.background_mlp(ray_bundle.directions)
        if self.training:
            return self.training_background(1)
        return torch.ones(3, device=self.device)

    def _shade(self, albedo: Tensor, normals: Optional[Tensor], shading: Shading | RayShading,
               ray_bundle: RayBundle) -> Tensor:
        if isinstance(shading, RayShading):
            return shading.shade(albedo, normals, self.config.ambient)
        if shading == "albedo" or normals is None:
            return albedo
        if shading == "normals":
            return 0.5 * (normals + 1.0)
        # A light near the camera, jittered (DreamFusion): the shading reveals the geometry from every side.
        jitter = 0.5 * torch.randn(3, generator=self.generator).to(self.device, non_blocking=True)
        light = torch.nn.functional.normalize(ray_bundle.origins.reshape(-1, 3)[0] + jitter, dim=-1)
        light_level = lit(normals, light, self.config.ambient)
        if shading == "textureless":
            return light_level.expand_as(albedo)
        return albedo * light_level

    def render_views(self, cameras: Cameras, shading: Optional[Shading] = None, draws: Optional[ViewDraws] = None,
                     image_size: Optional[Tuple[int, int]] = None) -> Dict[str, Tensor]:
        """Render whole images from `cameras` (undistorted pinhole cameras of one size) with gradients, all views in
        one pass: the rays of every pixel of every view, one collider and one `get_outputs`.

        In training, each view has its own background and, once shading has begun, its own shading (albedo,
        textureless or lambertian with its own light), as `draws` says (drawn by `draw_views` when not given);
        `shading` forces one shading on every view. Outside training: `shading` or the viewer's, on white (or the
        learned background) unless `draws` gives backgrounds. `image_size` (height, width) saves reading the
        size back from the cameras. Returns "rgb" as (B, 3, H, W) and "accumulation", "depth", ["normals",
        "orientation"] as (B, H, W, C), and in training the proposal sampler's "interlevel" loss on these rays."""
        count = len(cameras)
        height, width = image_size if image_size is not None else _common_size(cameras)
        if draws is None and self.training:
            draws = self.draw_views(count)
        bundle = self.collider(pinhole_ray_bundle(cameras, height, width).flatten())
        per_view = height * width
        background = None
        if draws is not None and draws.backgrounds is not None:
            background = _per_ray(draws.backgrounds, per_view)
        if shading is None and self.training:
            if draws.shading is None:
                shading = "albedo"
            else:
                lights = torch.nn.functional.normalize(cameras.camera_to_worlds.reshape(-1, 3, 4)[:, :, 3]
                                                       + draws.light_jitter, dim=-1)
                shading = RayShading(_per_ray(draws.shading, per_view), _per_ray(lights, per_view))
        outputs = self.get_outputs(bundle, shading=shading or self.viewer_shading, background=background)
        views = {key: outputs[key].reshape(count, height, width, -1)
                 for key in ("rgb", "accumulation", "depth", "normals", "orientation") if key in outputs}
        views["rgb"] = views["rgb"].permute(0, 3, 1, 2)
        if self.training and self.config.novel_view_interlevel and "weights_list" in outputs:
            views["interlevel"] = interlevel_loss(outputs["weights_list"], outputs["ray_samples_list"])
        return views

    # ---------------------------------------------------------------------------------------------------- losses
    @staticmethod
    def reference_target(batch: Dict[str, Tensor], background: Tensor) -> Tuple[Tensor, Tensor]:
        """The reference colour composited over `background`, and the mask (alpha), for the batch's rays."""
        image = batch["image"].to(background.device)
        alpha = image[..., 3:4]
        return composite(image[..., :3], alpha, background), alpha

    def get_metrics_dict(self, outputs, batch) -> Dict[str, Tensor]:
        target, _ = self.reference_target(batch, outputs["background"])
        mse = torch.mean((outputs["rgb"].detach() - target) ** 2)
        return {"psnr": -10.0 * torch.log10(mse.clamp_min(1e-10))}

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        """Reference-view losses: colour, mask, depth (when present), and the proposal interlevel loss."""
        config = self.config
        target, alpha = self.reference_target(batch, outputs["background"])
        depth = batch["depth"].to(self.device) if "depth" in batch else None
        views = batch["indices"][..., 0] if "indices" in batch else None
        losses = reference_view_losses(outputs, target, alpha, depth, config, views, self.reference_view_count)
        if self.training and config.interlevel_loss_mult > 0:
            losses["interlevel_loss"] = config.interlevel_loss_mult * interlevel_loss(
                outputs["weights_list"], outputs["ray_samples_list"])
        if "orientation" in outputs and config.orientation_loss_mult > 0:
            losses["orientation_loss"] = config.orientation_loss_mult * outputs["orientation"].mean()
        return losses

    def get_novel_view_loss_dict(self, views: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Regularisers on the novel-view renders: opacity, orientation, 2D normal smoothness, and the proposal
        sampler's interlevel loss on their rays."""
        config = self.config
        losses = opacity_regularization(views["accumulation"], config)
        if "interlevel" in views and config.interlevel_loss_mult > 0:
            losses["novel_interlevel_loss"] = config.interlevel_loss_mult * views["interlevel"]
        if "normals" in views:
            if config.orientation_loss_mult > 0:
                losses["novel_orientation_loss"] = config.orientation_loss_mult * views["orientation"].mean()
            if config.normal_smoothness_loss_mult > 0:
                losses["normal_smoothness_loss"] = config.normal_smoothness_loss_mult * normal_smoothness_2d(
                    2.0 * views["normals"] - 1.0, views["accumulation"])
        return losses

    # ------------------------------------------------------------------------------------------------- evaluation
    def get_rgba_image(self, outputs: Dict[str, Tensor], output_name: str = "rgb") -> Tensor:
        """Straight (not premultiplied) colour and opacity (..., 4): the render with its background taken back out.
        `ns-export pointcloud`/`poisson` keep the points whose opacity exceeds one half."""
        rgb = outputs[output_name]
        accumulation = outputs[output_name.replace("rgb", "accumulation")].reshape(rgb.shape[:-1] + (1,))
        background = outputs.get("background", torch.ones_like(rgb))
        premultiplied = rgb - (1.0 - accumulation) * background.expand_as(rgb)
        straight = (premultiplied / accumulation.clamp_min(1e-6)).clamp(0.0, 1.0)
        return torch.cat([straight, accumulation], dim=-1)

    def get_image_metrics_and_images(self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
                                     ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        background = outputs["background"].reshape(-1, 3)[0] if "background" in outputs else torch.ones(3)
        target, alpha = self.reference_target(batch, background.to(self.device))
        prediction = outputs["rgb"].to(self.device)
        mse = torch.mean((prediction - target) ** 2)
        metrics = {
            "psnr": float(-10.0 * torch.log10(mse.clamp_min(1e-10))),
            "mask_iou": float(((outputs["accumulation"] > 0.5) & (alpha > 0.5)).sum()
                              / ((outputs["accumulation"] > 0.5) | (alpha > 0.5)).sum().clamp_min(1)),
        }
        images = {
            "img": torch.cat([target, prediction], dim=1),
            "accumulation": torch.cat([alpha.expand_as(prediction), colormaps.apply_colormap(outputs["accumulation"])],
                                      dim=1),
            "depth": colormaps.apply_depth_colormap(outputs["depth"], accumulation=outputs["accumulation"]),
        }
        return metrics, images

    # ---------------------------------------------------------------------------------------- exports and refine
    @torch.no_grad()
    def query_density(self, positions: Tensor) -> Tensor:
        """Density (N, 1) at world positions (N, 3)."""
        return self.field.density_at(positions.to(self.device))

    @torch.no_grad()
    def query_albedo(self, positions: Tensor) -> Tensor:
        """Albedo (N, 3) in [0, 1] at world positions (N, 3)."""
        return self.field.albedo_at(positions.to(self.device))
