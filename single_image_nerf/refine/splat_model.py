"""The refine stage's model: splatfacto's Gaussians (same parameter names, so `ns-export gaussian-splat` and the viewer
treat it as splatfacto) seeded from the coarse field, rendered through `rasterizer.rasterize` (gsplat's CUDA
kernels on a GPU, the dense torch path elsewhere), with the coarse stage's reference losses and novel-view renders
for the guidance.

Every rasteriser input is built on, or copied to, the means' device: nerfstudio builds camera intrinsics on the CPU
whatever the cameras' device. Host-built tensors reach a GPU through pinned memory without blocking, and nothing here
reads a value back from the device in a training step (the strategy's statistics are accumulated densely); the waits
left are gsplat's own (its kernels size their outputs), the trainer's one finite check, densification steps and the
logging interval."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple, Type

import torch
from gsplat.strategy import DefaultStrategy
from torch import Tensor
from torch.nn import Parameter

from nerfstudio.cameras.camera_optimizers import CameraOptimizerConfig
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.scene_box import OrientedBox
from nerfstudio.models.splatfacto import RGB2SH, SplatfactoModel, SplatfactoModelConfig, num_sh_bases
from nerfstudio.utils import colormaps

from single_image_nerf.errors import UserInputError
from single_image_nerf.models.losses import (SharedLossWeights, composite, opacity_regularization,
                                             reference_view_losses)
from single_image_nerf.refine.rasterizer import rasterize
from single_image_nerf.run_length import DEFAULT_REFINE_STEPS, step_at
from single_image_nerf.refine.nerf_to_gaussians import (GaussianSeeds, PinholeView, reference_seeds_from_model,
                                                      seeds_from_model)


@dataclass
class RefineSplatModelConfig(SplatfactoModelConfig, SharedLossWeights):
    """Refine stage: splatfacto's Gaussians seeded from a coarse run, fitted to the reference view and guided elsewhere."""

    _target: Type = field(default_factory=lambda: RefineSplatModel)
    coarse_config: Optional[Path] = None
    """config.yml of the coarse (single-image-nerf) run whose field seeds the Gaussians; its data is used unless
    --data is given."""
    seed_num_points: int = 5000
    """Gaussians seeded from the coarse field on its level set: on the part the reference camera does not see, or
    on all of it when seed_from_reference is off."""
    seed_from_reference: bool = True
    """Seed one Gaussian per foreground pixel of the reference image (at the resolution fitted in this stage) on the
    coarse surface, with the photo's colour (Make-It-3D's textured point cloud)."""
    seed_reference_points: int = 0
    """At most this many reference-view Gaussians, drawn evenly from the foreground pixels (0: every pixel)."""
    seed_reference_opacity: float = 0.99
    """Initial opacity of the reference-view Gaussians (near-opaque: each pixel shows its own seed's colour)."""
    seed_reference_scale: float = 0.5
    """Size of the reference-view Gaussians in reference pixels (standard deviation at their depth): half the pixel
    spacing, so neighbouring seeds still join when the view is rendered larger than the photo (zoomed in); smaller
    seeds are sharper at the photo's own size but break into dots at twice it."""
    seed_hidden_flatness: float = 0.1
    """Thickness of the hidden-surface Gaussians along the surface normal, as a fraction of their width (discs in
    the tangent plane: seen edge-on at the reference silhouette, they do not spill over the photo's outline)."""
    seed_visibility_tolerance: float = 0.03
    """A level-set point counts as seen by the reference camera unless it lies this far (world units) behind the
    surface the reference rays meet first."""
    seed_reference_depth: Literal["level-set", "expected"] = "expected"
    """Where a reference-view Gaussian sits on its pixel's ray: the coarse field's expected ray-termination distance
    (where the coarse render puts the pixel's depth), or the first crossing of the seed level set."""
    seed_hidden_depth: Literal["level-set", "expected"] = "expected"
    """Where a hidden-surface Gaussian sits: moved along its normal to the expected ray termination of the coarse
    field (where a render sees the surface; the level set lies outside it), or on the seed level set."""
    seed_surface_search: float = 0.05
    """How far outside a hidden level-set point (world units) its inward normal ray starts when it is moved onto the
    rendered surface (the ray runs twice this far)."""
    freeze_reference_colours: bool = True
    """Keep the reference-view Gaussians (and their split and cloned children) at the photo's colours; the guidance
    and the contextual loss act on the other Gaussians only."""
    seed_density_level: float = 10.0
    """Density level whose surface carries the seeds."""
    seed_grid_resolution: int = 128
    """Resolution of the density grid the level set is extracted from (marching cubes)."""
    seed_opacity: float = 0.5
    """Initial opacity of every seed."""
    seed_scale_multiplier: float = 1.0
    """Seed scales are this times the mean distance to the 3 nearest seeds."""
    seed: int = 0
    """Seed of the model's own random draws (seed positions, training backgrounds)."""
    rasterizer: Literal["auto", "gsplat", "torch"] = "auto"
    """Rasteriser: auto (gsplat's CUDA kernels on a GPU, the dense pure-torch path on a CPU), or force one."""
    densify_start: float = 0.05
    """Fraction of the run before densification and pruning start (read instead of splatfacto's warmup_length; 100 of
    the stage's 2000 steps)."""
    densify_end: float = 1.0
    """Fraction of the run after which Gaussians are no longer split or cloned (read instead of splatfacto's
    stop_split_at, whose 15000 outlasts the stage's 2000 steps: densification runs to the end)."""
    screen_size_end: float = 1.0
    """Fraction of the run after which the screen-size test of growth and pruning stops (read instead of
    splatfacto's stop_screen_size_at, whose 4000 outlasts the stage)."""
    sh_degree_every: float = 0.5
    """Fraction of the run between the steps that raise the spherical-harmonics degree by one (read instead of
    splatfacto's sh_degree_interval: 1000 of the stage's 2000 steps)."""
    background_color: Optional[Literal["random", "black", "white"]] = None
    """Background of training renders (None: the prior's recipe: white for Zero123-family priors, random colours
    otherwise); renders outside training use white (black when set so)."""
    num_downscales: int = 0
    """Unused by the refine stage: renders are always at the reference and novel-view resolutions."""
    contextual_loss_mult: float = 1.0
    """Weight of the contextual loss between novel-view renders and the reference image on VGG16 features (0: off).
    When its VGG16 weights cannot be had, training says so in one line and goes on without it."""
    contextual_vgg_weights: str = "imagenet"
    """VGG16 weights of the contextual loss: imagenet (torchvision's, downloaded once), a local .pth state dict, or
    random (tests only)."""
    contextual_layers: Tuple[str, ...] = ("relu3_1", "relu4_1")
    """VGG16 activations compared by the contextual loss."""
    contextual_image_size: int = 128
    """Side to which images are resized before the VGG."""
    camera_optimizer: CameraOptimizerConfig = field(default_factory=lambda: CameraOptimizerConfig(mode="off"))
    """Camera optimisation (off: the reference camera is known by construction)."""


class SeededStrategy(DefaultStrategy):
    """gsplat's DefaultStrategy fed by every differentiable render of a step (the reference view and the novel views),
    and without the opacity reset at step 0: the seeds come from a fitted field. Its statistics are accumulated
    densely (no boolean indexing, so no device-to-host wait) with the same values as gsplat's."""

    def step_post_backward_renders(self, params, optimizers, state: Dict[str, Any], step: int,
                                   infos: List[Dict[str, Any]]) -> None:
        """Accumulate the screen-space gradients of all `infos`, then grow, prune and reset as DefaultStrategy does."""
        if step >= self.refine_stop_iter or not infos:
            return
        for info in infos[:-1]:
            self._update_state(params, state, info, packed=False)
        if step == 0:
            self._update_state(params, state, infos[-1], packed=False)
            return
        self.step_post_backward(params, optimizers, state, step, infos[-1], packed=False)

    def _grow_gs(self, params, optimizers, state: Dict[str, Any], step: int) -> Tuple[int, int]:
        """DefaultStrategy's growth, with the reference-view Gaussians left out: one seed per photo pixel already
        samples the photo at its own resolution, and duplicating or splitting them (near-opaque copies, children
        scattered over the parent's extent) only blurs the photo. Their screen-space statistics are zeroed first, so
        neither the gradient test nor the screen-size test picks them; pruning still applies to them."""
        tagged = state.get("reference_visible")
        if tagged is not None and tagged.shape[0] == len(params["means"]):
            for key in ("grad2d", "radii"):
                if state.get(key) is not None:
                    state[key] = torch.where(tagged, torch.zeros_like(state[key]), state[key])
        return super()._grow_gs(params, optimizers, state, step)

    def _update_state(self, params, state: Dict[str, Any], info: Dict[str, Any], packed: bool = False) -> None:
        """DefaultStrategy's running statistics of one render (unpacked): per Gaussian, the sum over the cameras that
        see it (radius > 0) of the norm of its screen-space gradient in [-1, 1] units, the count of those cameras,
        and the largest radius as a fraction of the image side."""
        if packed:
            raise ValueError("SeededStrategy accumulates unpacked renders only (rasterize with packed=False)")
        source = info[self.key_for_gradient]
        grads = source.absgrad if self.absgrad else source.grad
        grads = torch.stack([grads[..., 0] * (info["width"] / 2.0 * info["n_cameras"]),
                             grads[..., 1] * (info["height"] / 2.0 * info["n_cameras"])], dim=-1)
        count = len(params["means"])
        for key in ("grad2d", "count") + (("radii",) if self.refine_scale2d_stop_iter > 0 else ()):
            if state[key] is None:
                state[key] = torch.zeros(count, device=grads.device)
        seen = info["radii"] > 0.0  # [C, N]
        zero = grads.new_zeros(())
        state["grad2d"] += torch.where(seen, grads.norm(dim=-1), zero).sum(dim=0)
        state["count"] += seen.sum(dim=0).to(state["count"].dtype)
        if self.refine_scale2d_stop_iter > 0:
            radii = torch.where(seen, info["radii"].to(grads.dtype), zero) / float(max(info["width"], info["height"]))
            state["radii"] = torch.maximum(state["radii"], radii.amax(dim=0))


def host_to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """`tensor` on `device`; a CPU tensor goes to a CUDA device through pinned memory without blocking the host (a
    plain `.to` waits for every queued kernel first)."""
    device = torch.device(device)
    if tensor.device == device:
        return tensor
    if tensor.device.type == "cpu" and device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def camera_image_size(cameras: Cameras) -> Tuple[int, int]:
    """(width, height) of cameras sharing one resolution (read from the device, a wait, when the cameras live there)."""
    width, height = torch.stack([cameras.width.reshape(-1)[0], cameras.height.reshape(-1)[0]]).tolist()
    return int(width), int(height)


def intrinsics_from_cameras(cameras: Cameras) -> Tensor:
    """Pinhole intrinsics (C, 3, 3) on the cameras' device, equal to nerfstudio's `get_intrinsics_matrices`, which
    builds them on the CPU whatever the cameras' device."""
    fx, fy = cameras.fx.reshape(-1).float(), cameras.fy.reshape(-1).float()
    cx, cy = cameras.cx.reshape(-1).float(), cameras.cy.reshape(-1).float()
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    return torch.stack([fx, zero, cx, zero, fy, cy, zero, zero, one], dim=-1).reshape(-1, 3, 3)


def viewmats_from_cameras(camera_to_worlds: Tensor) -> Tensor:
    """gsplat world-to-camera matrices (C, 4, 4), OpenCV axes, from nerfstudio camera-to-worlds (C, 3, 4), OpenGL axes."""
    axes = camera_to_worlds[:, :3, :3]
    rotation = torch.stack([axes[..., 0], -axes[..., 1], -axes[..., 2]], dim=-1)
    translation = camera_to_worlds[:, :3, 3:4]
    inverse = rotation.transpose(1, 2)
    viewmats = torch.zeros(camera_to_worlds.shape[0], 4, 4, device=camera_to_worlds.device,
                           dtype=camera_to_worlds.dtype)
    viewmats[:, :3, :3] = inverse
    viewmats[:, :3, 3:4] = -inverse @ translation
    viewmats[:, 3, 3] = 1.0
    return viewmats


class RefineSplatModel(SplatfactoModel):
    """SplatfactoModel (its parameters, optimiser groups, checkpoint resizing, viewer and ns-export support) whose
    Gaussians come from the coarse field and whose renders go through `rasterize`, so it also trains on a CPU.

    `populate_modules` is replaced rather than extended: splatfacto's puts its seed colours on `.cuda()` and builds
    an LPIPS network that downloads AlexNet weights, neither of which a CPU or an offline machine allows."""

    config: RefineSplatModelConfig

    def populate_modules(self) -> None:
        dim_sh = num_sh_bases(self.config.sh_degree)
        self.gauss_params = torch.nn.ParameterDict({
            "means": Parameter(torch.zeros(0, 3)),
            "scales": Parameter(torch.zeros(0, 3)),
            "quats": Parameter(torch.zeros(0, 4)),
            "features_dc": Parameter(torch.zeros(0, 3)),
            "features_rest": Parameter(torch.zeros(0, dim_sh - 1, 3)),
            "opacities": Parameter(torch.zeros(0, 1)),
        })
        self.camera_optimizer = self.config.camera_optimizer.setup(num_cameras=self.num_train_data, device="cpu")
        self.step = 0
        self.crop_box: Optional[OrientedBox] = None
        self.eval_median_depth = False
        """Outside training, report the median depth instead of the expected one (the mesh stage's fusion reads it;
        it is rendered by the dense path, see rasterizer.RENDER_MODES)."""
        self.background_color = torch.zeros(3) if self.config.background_color == "black" else torch.ones(3)
        """Background of renders outside training (the viewer may change it)."""
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self.optimizers: Dict[str, torch.optim.Optimizer] = {}
        self.step_infos: List[Dict[str, Any]] = []
        """Rasterisation metadata of this step's differentiable renders, for the densification strategy."""
        self.step_discarded = False
        """Set by the trainer when it skipped this step's optimiser update: the strategy then leaves it out too."""
        self.strategy = SeededStrategy(
            prune_opa=self.config.cull_alpha_thresh,
            grow_grad2d=self.config.densify_grad_thresh,
            grow_scale3d=self.config.densify_size_thresh,
            grow_scale2d=self.config.split_screen_size,
            prune_scale3d=self.config.cull_scale_thresh,
            prune_scale2d=self.config.cull_screen_size,
            refine_scale2d_stop_iter=self.config.stop_screen_size_at,  # set by `run_steps` below
            refine_start_iter=self.config.warmup_length,
            refine_stop_iter=self.config.stop_split_at,
            reset_every=self.config.reset_alpha_every * self.config.refine_every,
            refine_every=self.config.refine_every,
            pause_refine_after_reset=self.num_train_data + self.config.refine_every,
            absgrad=self.config.use_absgrad,
            revised_opacity=False,
            verbose=False,
        )
        self.register_buffer("reference_visible", torch.zeros(0, dtype=torch.bool))
        """(N,) True for the Gaussians that carry the photo's colours. During training it lives in the strategy's
        state, which gsplat's duplicate, split and remove carry to the children; the buffer is its checkpoint copy."""
        self.run_steps = DEFAULT_REFINE_STEPS
        self.strategy_state = self.strategy.initialize_state(scene_scale=1.0)
        self.strategy_state["reference_visible"] = self.reference_visible
        object.__setattr__(self, "_contextual", None)  # frozen VGG, built on first use, never in a checkpoint
        object.__setattr__(self, "_contextual_reference", None)  # the reference RGBA on the device, copied once

    @property
    def run_steps(self) -> int:
        """Steps of the whole run (the pipeline sets it from --max-num-iterations): densification and the
        spherical-harmonics degree follow fractions of it."""
        return self._run_steps

    @run_steps.setter
    def run_steps(self, steps: int) -> None:
        object.__setattr__(self, "_run_steps", int(steps))
        config, strategy = self.config, self.strategy
        strategy.refine_start_iter = step_at(config.densify_start, steps)
        strategy.refine_stop_iter = step_at(config.densify_end, steps)
        strategy.refine_scale2d_stop_iter = step_at(config.screen_size_end, steps)

    # ------------------------------------------------------------------------------------------------- seeding
    @torch.no_grad()
    def seed_from_coarse_model(self, coarse_model, reference_camera: Optional[Cameras] = None) -> GaussianSeeds:
        """Replace the Gaussians by seeds on the coarse model's density level set: with `reference_camera` (and
        seed_from_reference on), the photo's pixels on the surface that camera sees (and those of every further
        reference view of several photos, the view facing a surface more squarely winning it) and the field's
        colours on the rest (`reference_view_seeds`); otherwise the field's colours everywhere
        (`nerf_to_gaussians`)."""
        config = self.config
        common = dict(resolution=config.seed_grid_resolution, opacity=config.seed_opacity,
                      scale_multiplier=config.seed_scale_multiplier, seed=config.seed)
        if config.seed_from_reference and reference_camera is not None:
            metadata = self.kwargs["metadata"]
            rgba = torch.as_tensor(metadata["rgba"], dtype=torch.float32)
            other_views = [(torch.as_tensor(view["rgba"], dtype=torch.float32),
                            PinholeView.from_cameras(view["camera"].to("cpu")))
                           for view in (metadata.get("reference_views") or [])[1:]]
            seeds = reference_seeds_from_model(
                coarse_model, config.seed_density_level, rgba, PinholeView.from_cameras(reference_camera.to("cpu")),
                other_views=other_views,
                num_hidden_points=config.seed_num_points, max_reference_points=config.seed_reference_points,
                reference_opacity=config.seed_reference_opacity, reference_scale=config.seed_reference_scale,
                visibility_tolerance=config.seed_visibility_tolerance, hidden_flatness=config.seed_hidden_flatness,
                reference_depth=config.seed_reference_depth, hidden_depth=config.seed_hidden_depth,
                surface_search=config.seed_surface_search, **common)
        else:
            seeds = seeds_from_model(coarse_model, config.seed_density_level, num_points=config.seed_num_points,
                                     **common)
        self.set_gaussians(seeds)
        return seeds

    @torch.no_grad()
    def set_gaussians(self, seeds: GaussianSeeds) -> None:
        """Gaussians from seeds (activated values): log scales, the seeds' rotations (identity if none), SH (or logit) colours, logit
        opacities, on the model's device. Call before the optimisers are built."""
        device, count = self.device, len(seeds)
        dim_sh = num_sh_bases(self.config.sh_degree)
        colors = seeds.colors.float().clamp(1e-4, 1.0 - 1e-4)
        features_dc = RGB2SH(colors) if self.config.sh_degree > 0 else torch.logit(colors)
        quats = torch.zeros(count, 4)
        quats[:, 0] = 1.0
        if seeds.quats is not None:
            quats = seeds.quats.float()
        values = {
            "means": seeds.means.float(),
            "scales": torch.log(seeds.scales.float().clamp_min(1e-7)),
            "quats": quats,
            "features_dc": features_dc,
            "features_rest": torch.zeros(count, dim_sh - 1, 3),
            "opacities": torch.logit(seeds.opacities.float().clamp(1e-4, 1.0 - 1e-4)),
        }
        for name, value in values.items():
            self.gauss_params[name] = Parameter(value.to(device))
        tagged = seeds.reference_visible if seeds.reference_visible is not None else torch.zeros(count, dtype=torch.bool)
        self.reference_visible = tagged.to(device)
        self.strategy_state = self.strategy.initialize_state(scene_scale=1.0)
        self.strategy_state["reference_visible"] = self.reference_visible

    def load_state_dict(self, dict, **kwargs):  # type: ignore  # pylint: disable=redefined-builtin
        """Splatfacto's resizing load, plus the reference-view tag (absent from runs saved before it existed: none
        of their Gaussians is tagged), which goes back into the strategy's state."""
        means = dict.get("gauss_params.means", dict.get("means"))
        if means is not None:
            dict.setdefault("reference_visible", torch.zeros(means.shape[0], dtype=torch.bool))
            self.reference_visible = torch.zeros(means.shape[0], dtype=torch.bool, device=self.device)
        result = super().load_state_dict(dict, **kwargs)
        self.strategy_state["reference_visible"] = self.reference_visible
        return result

    # ----------------------------------------------------------------------------------------------- training
    def step_cb(self, optimizers, step: int) -> None:
        super().step_cb(optimizers, step)
        self.step_infos = []
        self.step_discarded = False

    def discard_step(self) -> None:
        """Forget this step's renders: the trainer skipped its update (non-finite gradients), so the strategy must
        neither accumulate their screen-space gradients nor densify, prune or reset on them."""
        self.step_infos = []
        self.step_discarded = True

    def step_post_backward(self, step: int) -> None:
        """Densify and prune through gsplat's strategy from the screen-space gradients of this step's renders
        (nothing at all on a discarded step)."""
        if not self.step_discarded:
            self.strategy.step_post_backward_renders(self.gauss_params, self.optimizers, self.strategy_state, step,
                                                     self.step_infos)
            self.reference_visible = self.strategy_state["reference_visible"]  # resized with the Gaussians
        self.step_infos = []
        self.step_discarded = False

    # ---------------------------------------------------------------------------------------------- rendering
    def backgrounds(self, count: int) -> Tensor:
        """`count` background colours (count, 3) on the device: in training random per image (drawn on the CPU from
        the model's generator, so runs repeat across devices) or the configured colour; else the current one (the
        viewer may change it)."""
        if self.training and self.config.background_color == "random":
            return host_to_device(torch.rand(count, 3, generator=self.generator), self.device)
        return host_to_device(self.background_color.reshape(1, 3), self.device).expand(count, 3)

    def held_params(self, novel_views: bool) -> Dict[str, Tensor]:
        """The Gaussians' parameters for a render. In training, with freeze_reference_colours, the reference-view
        Gaussians' colours carry no gradient, and in novel views (`novel_views`) none of their parameters does: the
        photo's texture is kept, and the prior shapes only the rest."""
        params = {name: self.gauss_params[name] for name in ("means", "quats", "scales", "opacities",
                                                             "features_dc", "features_rest")}
        tagged = self.reference_visible
        if not (self.training and self.config.freeze_reference_colours and tagged.shape[0] == self.num_points):
            return params
        held = ("features_dc", "features_rest") + (("means", "quats", "scales", "opacities") if novel_views else ())
        for name in held:
            value = params[name]
            params[name] = torch.where(tagged.reshape((-1,) + (1,) * (value.dim() - 1)), value.detach(), value)
        return params

    def rasterize_cameras(self, cameras: Cameras, render_mode: str = "RGB",
                          size: Optional[Tuple[int, int]] = None, novel_views: bool = False
                          ) -> Tuple[Tensor, Tensor, Dict]:
        """Rasterise every Gaussian (or those in the crop box, outside training) into the cameras, which must share
        one resolution, (width, height) = `size` when the caller knows it (else read from the cameras): (colours
        [C,H,W,D], alphas [C,H,W,1], meta). Differentiable renders are remembered for the densification strategy;
        `novel_views` holds the reference-view Gaussians still (`held_params`)."""
        params = self.held_params(novel_views)
        if self.crop_box is not None and not self.training:
            keep = self.crop_box.within(params["means"]).squeeze(-1)
            params = {name: value[keep] for name, value in params.items()}
        colors = torch.cat([params["features_dc"][:, None, :], params["features_rest"]], dim=1)
        if self.config.sh_degree > 0:
            interval = max(step_at(self.config.sh_degree_every, self.run_steps), 1)
            sh_degree: Optional[int] = min(self.step // interval, self.config.sh_degree)
        else:
            colors, sh_degree = torch.sigmoid(colors[:, 0, :]), None
        width, height = size if size is not None else camera_image_size(cameras)
        viewmats = host_to_device(viewmats_from_cameras(cameras.camera_to_worlds), self.device)
        render, alpha, info = rasterize(
            means=params["means"], quats=params["quats"], scales=torch.exp(params["scales"]),
            opacities=torch.sigmoid(params["opacities"]).squeeze(-1), colors=colors,
            viewmats=viewmats, Ks=host_to_device(intrinsics_from_cameras(cameras), self.device),
            width=width, height=height, near_plane=0.01, far_plane=1e10, sh_degree=sh_degree,
            render_mode=render_mode, absgrad=self.strategy.absgrad, rasterize_mode=self.config.rasterize_mode,
            backend=self.config.rasterizer,
        )
        if self.training and info["means2d"].requires_grad and self.crop_box is None:
            self.strategy.step_pre_backward(self.gauss_params, self.optimizers, self.strategy_state, self.step, info)
            self.step_infos.append(info)
        return render, alpha, info

    def get_outputs(self, camera: Cameras) -> Dict[str, Tensor]:
        """Render one camera: "rgb" (H, W, 3) composited on the background, "accumulation" and "depth" (H, W, 1)
        (expected depth along the camera axis; the median depth with `eval_median_depth` outside training), and
        "background" (3,)."""
        if not isinstance(camera, Cameras):  # a RayBundle: ns-export pointcloud / poisson / tsdf asking for rays
            raise UserInputError(
                "this is a refine run (Gaussians), which renders whole cameras, not rays: export it with `ns-export "
                "gaussian-splat`; pointcloud, poisson and tsdf exports (and sin-export-mesh) take the coarse run's "
                "config.yml, named by this run's pipeline.model.coarse_config")
        if self.num_points == 0:
            width, height = camera_image_size(camera)
            return self.get_empty_outputs(width, height, self.backgrounds(1)[0])
        mode = "RGB+MD" if self.eval_median_depth and not self.training else "RGB+ED"
        render, alpha, _ = self.rasterize_cameras(camera[0:1] if camera.shape else camera.reshape((1,)), mode)
        background = self.backgrounds(1)[0]
        rgb = render[0, ..., :3] + (1.0 - alpha[0]) * background
        return {"rgb": rgb.clamp(0.0, 1.0), "accumulation": alpha[0], "depth": render[0, ..., 3:4],
                "background": background}

    def render_views(self, cameras: Cameras, image_size: Optional[Tuple[int, int]] = None) -> Dict[str, Tensor]:
        """Render whole images from `cameras` (one resolution; `image_size` (height, width) when the caller knows it)
        in one rasterisation, with gradients, for the guidance: "rgb" (B, 3, H, W) composited on one background per
        image, "accumulation" (B, H, W, 1)."""
        size = None if image_size is None else (int(image_size[1]), int(image_size[0]))
        render, alpha, _ = self.rasterize_cameras(cameras, "RGB", size, novel_views=True)
        backgrounds = self.backgrounds(render.shape[0])
        rgb = render[..., :3] + (1.0 - alpha) * backgrounds[:, None, None, :]
        return {"rgb": rgb.clamp(0.0, 1.0).permute(0, 3, 1, 2), "accumulation": alpha}

    # ------------------------------------------------------------------------------------------------- losses
    def reference_target(self, batch: Dict[str, Tensor], background: Tensor) -> Tuple[Tensor, Tensor]:
        """The reference colour composited over `background`, and the mask (alpha), as (H, W, 3) and (H, W, 1)."""
        image = host_to_device(batch["image"], self.device)
        if image.dtype == torch.uint8:
            image = image.float() / 255.0
        alpha = image[..., 3:4]
        return composite(image[..., :3], alpha, background), alpha

    def get_metrics_dict(self, outputs, batch) -> Dict[str, Tensor]:
        target, _ = self.reference_target(batch, outputs["background"])
        mse = torch.mean((outputs["rgb"].detach() - target) ** 2)
        return {"psnr": -10.0 * torch.log10(mse.clamp_min(1e-10)),
                "gaussian_count": torch.tensor(float(self.num_points))}

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        """The coarse stage's reference-view losses: colour, mask, and depth when the data has it."""
        target, alpha = self.reference_target(batch, outputs["background"])
        depth = host_to_device(batch["depth"], self.device) if "depth" in batch else None
        return reference_view_losses(outputs, target, alpha, depth, self.config)

    def get_novel_view_loss_dict(self, views: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Novel-view terms: the opacity regulariser and, when weighted, the contextual loss to the reference."""
        config = self.config
        losses = opacity_regularization(views["accumulation"], config)
        if config.contextual_loss_mult > 0 and self.prepare_contextual_loss():
            losses["contextual_loss"] = config.contextual_loss_mult * self.contextual_loss(views)
        return losses

    def prepare_contextual_loss(self) -> bool:
        """Build the contextual loss's frozen VGG16 once; False (after one line saying why and how to silence it)
        when its weights cannot be had, and the loss is then left out of training."""
        if self._contextual is None and not getattr(self, "_contextual_unavailable", False):
            from single_image_nerf.pretrained import ModelUnavailableError
            from single_image_nerf.refine.contextual_loss import ContextualLoss

            try:
                object.__setattr__(self, "_contextual", ContextualLoss(
                    self.config.contextual_vgg_weights, self.config.contextual_layers,
                    image_size=self.config.contextual_image_size).to(self.device))
            except ModelUnavailableError as error:
                object.__setattr__(self, "_contextual_unavailable", True)
                from nerfstudio.utils.rich_utils import CONSOLE

                CONSOLE.print(f"Contextual loss off: {error} (or pass --pipeline.model.contextual-loss-mult 0)",
                              soft_wrap=True, highlight=False, markup=False)
        return self._contextual is not None

    def contextual_loss(self, views: Dict[str, Tensor]) -> Tensor:
        """Contextual loss of the novel-view renders against the reference image (from the data's metadata), both
        restricted to their masks."""
        if not self.prepare_contextual_loss():
            return views["rgb"].sum() * 0.0
        rgba = self._contextual_reference
        if rgba is None or rgba.device != self.device:
            rgba = host_to_device(torch.as_tensor(self.kwargs["metadata"]["rgba"], dtype=torch.float32), self.device)
            object.__setattr__(self, "_contextual_reference", rgba)
        reference = composite(rgba[..., :3], rgba[..., 3:4], torch.ones(3, device=self.device)).permute(2, 0, 1)
        return self._contextual(views["rgb"], reference, views["accumulation"][..., 0], rgba[..., 3])

    # --------------------------------------------------------------------------------------------- evaluation
    def get_image_metrics_and_images(self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
                                     ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        target, alpha = self.reference_target(batch, outputs["background"].reshape(-1, 3)[0].to(self.device))
        prediction = outputs["rgb"].to(self.device)
        mse = torch.mean((prediction - target) ** 2)
        solid, wanted = outputs["accumulation"] > 0.5, alpha > 0.5
        metrics = {
            "psnr": float(-10.0 * torch.log10(mse.clamp_min(1e-10))),
            "mask_iou": float((solid & wanted).sum() / (solid | wanted).sum().clamp_min(1)),
            "gaussian_count": float(self.num_points),
        }
        images = {
            "img": torch.cat([target, prediction], dim=1),
            "accumulation": torch.cat([alpha.expand_as(prediction), colormaps.apply_colormap(outputs["accumulation"])],
                                      dim=1),
            "depth": colormaps.apply_depth_colormap(outputs["depth"], accumulation=outputs["accumulation"]),
        }
        return metrics, images
