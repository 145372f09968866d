"""Score distillation from Zero-1-to-3 (Zero123, Zero123-XL, Stable Zero123): a prior conditioned on the photo and on
the camera of each novel view relative to the photo's.

Loaded from a diffusers-format folder (hub id or path), component by component with `from_pretrained(folder,
subfolder=...)`, so the custom pipeline class its model_index.json names is never imported: unet/ (8 input channels,
the noisy latent and the reference latent), vae/, image_encoder/ (CLIP vision with projection), feature_extractor/,
scheduler/, and the camera projection (a Linear, image embedding + 4 -> image embedding) read from its weight file,
either `clip_camera_projection/` with keys `proj.*` (ashawkey's, bennyguo's conversions) or `cc_projection/` with
keys `projection.*` (kxic's).

The conditioning follows Zero123's training definition, each convention a pure function below:
- the reference: the preprocessed photo (recentred as the reference view, at its own size, not the smaller training
  reference) composited on white and resized to the prior's image size (256 px), its CLIP image embedding through
  the folder's feature extractor, and its VAE latent (the posterior mode, NOT multiplied by the scaling factor);
- several photos: every reference view is encoded once, and each novel camera is conditioned on the view nearest
  to it in angle (its image and latent), its camera numbers relative to that view;
- the camera: [Δpolar (radians), sin Δazimuth, cos Δazimuth, Δradius] of each novel camera relative to the
  reference, where polar = 90° - elevation and azimuth runs from +X toward +Y about +Z. This is Zero123's own frame
  (Objaverse renders, +Z up, azimuth atan2(y, x)) and ours, so the numbers pass through unchanged. Stable Zero123
  replaces Δradius by the reference's absolute polar angle (radians);
- the unconditional branch: zeros for both the projected embedding and the concatenated latent, first in the batch
  [uncond; cond] that `chunk(2)` splits; eps_hat by `sds.classifier_free_guidance`.

The weight, scale and timestep schedule left unset come from the recipe (guidance/recipes.py): threestudio's current
`configs/zero123.yaml` (weight 0.2 on our scale, scale 3, t annealed from [0.4, 0.85] to [0.2, 0.5] over the first
third of the run), or its `configs/stable-zero123.yaml` for Stable Zero123.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, Literal, Optional, Tuple, Type

import torch
from jaxtyping import Float
from torch import Tensor

from nerfstudio.cameras.cameras import Cameras
from single_image_nerf.errors import UserInputError
from single_image_nerf.guidance import sds
from single_image_nerf.guidance.base import GuidanceContext, ReferenceViewContext
from single_image_nerf.guidance.distillation import ScoreDistillationConfig, ScoreDistillationGuidance, ScoreTrace
from single_image_nerf.guidance.loading import DiffusionParts
from single_image_nerf.pretrained import ZERO123_ID, ModelUnavailableError

MODEL_PATH_FLAG = "pipeline.guidance:zero123 --pipeline.guidance.model-path"
"""The command-line option that points the guidance at a local folder (named in errors)."""
WHAT = "Zero123 prior"
REQUIRED = ("unet/config.json", "vae/config.json", "image_encoder/config.json",
            "feature_extractor/preprocessor_config.json", "scheduler/scheduler_config.json")
"""Files a diffusers-format Zero123 folder must hold (the projection is looked for apart: it has two names)."""
SUBFOLDERS = ("unet", "vae", "image_encoder")
"""The components with large weights."""
PROJECTION_LAYOUTS = (("clip_camera_projection", "proj"), ("cc_projection", "projection"))
"""(subfolder, key prefix) of the camera projection in the public folders, in the order they are looked for."""
CameraEmbedding = Literal["auto", "zero123", "stable-zero123"]


# ------------------------------------------------------------------------------------------- the conditioning
def camera_vector(elevation: Tensor, azimuth: Tensor, radius: Tensor, reference_elevation: Tensor,
                  reference_azimuth: Tensor, reference_radius: Tensor, absolute_polar: bool = False) -> Tensor:
    """Zero123's camera numbers (B, 4) of views at (elevation, azimuth, radius), degrees and scene units, relative to
    the reference view: [Δpolar rad, sin Δazimuth, cos Δazimuth, Δradius] with polar = 90° - elevation. With
    `absolute_polar` (Stable Zero123) the last entry is the reference's polar angle in radians instead."""
    elevation, azimuth, radius = (torch.as_tensor(v, dtype=torch.float32).reshape(-1)
                                  for v in (elevation, azimuth, radius))
    reference_elevation, reference_azimuth, reference_radius = (
        torch.as_tensor(v, dtype=torch.float32).reshape(-1).to(elevation.device)
        for v in (reference_elevation, reference_azimuth, reference_radius))
    delta_polar = torch.deg2rad((90.0 - elevation) - (90.0 - reference_elevation))
    delta_azimuth = torch.deg2rad(azimuth - reference_azimuth)
    if absolute_polar:
        last = torch.deg2rad(90.0 - reference_elevation).expand_as(elevation)
    else:
        last = radius - reference_radius
    return torch.stack([delta_polar, torch.sin(delta_azimuth), torch.cos(delta_azimuth), last], dim=-1)


def relative_camera_vector(cameras: Cameras, reference: Cameras | Tensor, absolute_polar: bool = False,
                           nearest: Optional[Tensor] = None) -> Tensor:
    """`camera_vector` of each camera of `cameras` relative to a reference camera, both read from their
    camera-to-world matrices (on the device of `cameras`; nothing is read back). `reference` holds the reference
    cameras (Cameras, or their (V, 3, 4) matrices); `nearest` (B,) picks each camera's, else the first serves all."""
    from single_image_nerf.data.camera_sampling import pose_angles

    azimuth, elevation, radius = pose_angles(cameras.camera_to_worlds)
    poses = reference if isinstance(reference, Tensor) else reference.camera_to_worlds
    angles = (v.reshape(-1).to(azimuth.device) for v in pose_angles(poses.reshape(-1, 3, 4)))
    ref_azimuth, ref_elevation, ref_radius = (v[:1] if nearest is None else v[nearest] for v in angles)
    return camera_vector(elevation, azimuth, radius, ref_elevation, ref_azimuth, ref_radius, absolute_polar)


def nearest_reference(positions: Tensor, reference_positions: Tensor) -> Tensor:
    """(B,) index of the reference camera whose direction from the origin makes the smallest angle with each
    camera's, for camera positions (B, 3) and reference positions (V, 3) (ties: the earlier reference)."""
    cosine = torch.nn.functional.normalize(positions.reshape(-1, 3), dim=-1) @ torch.nn.functional.normalize(
        reference_positions.reshape(-1, 3).to(positions), dim=-1).T
    return cosine.argmax(dim=-1)


def white_composite(rgba: Float[Tensor, "H W 4"], size: int) -> Float[Tensor, "1 3 S S"]:
    """The reference RGBA in [0, 1] over white, resized to size x size (antialiased when shrinking): Zero123 was
    trained on objects rendered over white."""
    from single_image_nerf.guidance.latents import resize

    rgba = torch.as_tensor(rgba, dtype=torch.float32)
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    white = rgb * alpha + (1.0 - alpha)
    return resize(white.permute(2, 0, 1)[None].contiguous(), size).clamp(0.0, 1.0)


@torch.no_grad()
def reference_latent(vae, image: Float[Tensor, "1 3 S S"]) -> Tensor:
    """The VAE latent of the reference image in [0, 1]: the posterior mode, not multiplied by the scaling factor (as
    Zero123 was trained; fp32 out)."""
    dtype = next(vae.parameters()).dtype
    return vae.encode((image * 2.0 - 1.0).to(dtype)).latent_dist.mode().float()


@torch.no_grad()
def clip_image_embedding(image_encoder, feature_extractor, image: Float[Tensor, "1 3 S S"]) -> Tensor:
    """(1, 1, D) CLIP image embedding of an image in [0, 1], preprocessed by the folder's feature extractor (resize,
    centre crop, CLIP normalisation; no second rescale of values already in [0, 1])."""
    array = image[0].permute(1, 2, 0).float().cpu().numpy()
    pixels = feature_extractor(images=array, do_rescale=False, return_tensors="pt").pixel_values
    parameter = next(image_encoder.parameters())
    return image_encoder(pixels.to(parameter.device, parameter.dtype)).image_embeds.float()[:, None, :]


@torch.no_grad()
def project_camera(projection, image_embedding: Tensor, camera: Tensor) -> Tensor:
    """(B, 1, D) cross-attention states: the projection of [image embedding, camera numbers] for each camera."""
    weight = projection.weight
    count = camera.shape[0]
    joined = torch.cat([image_embedding.to(weight.device).expand(count, -1, -1), camera.to(weight.device)[:, None, :]],
                       dim=-1)
    return projection(joined.to(weight.dtype)).float()


def guidance_batch(noisy: Tensor, reference: Tensor, states: Tensor) -> Tuple[Tensor, Tensor]:
    """The UNet inputs of classifier-free guidance, unconditional half first: ([z_t; z_t] with [0; reference latent]
    concatenated on the channels, [0; states]). `output.chunk(2)` then yields (uncond, cond)."""
    count = noisy.shape[0]
    reference = reference.to(noisy).expand(count, -1, -1, -1)
    latents = torch.cat([torch.cat([noisy, torch.zeros_like(reference)], dim=1), torch.cat([noisy, reference], dim=1)])
    return latents, torch.cat([torch.zeros_like(states), states])


def detect_camera_embedding(model: str, folder: Path) -> str:
    """"stable-zero123" when the hub id, the folder's name (its repository's, in a hub cache) or model_index.json's
    `_name_or_path` says Stable Zero123, else "zero123"."""
    folder = Path(folder)
    names = [Path(model).name if Path(model).expanduser().is_dir() else model, folder.name]
    if folder.parent.name == "snapshots":
        names.append(folder.parent.parent.name)
    try:
        names.append(str(json.loads((Path(folder) / "model_index.json").read_text()).get("_name_or_path", "")))
    except (OSError, ValueError, AttributeError):
        pass
    return "stable-zero123" if any(re.search(r"stable[-_ ]?zero[-_ ]?123", n.lower()) for n in names) else "zero123"


# ------------------------------------------------------------------------------------------------- loading
@dataclass
class Zero123Parts(DiffusionParts):
    """The frozen components of a Zero123 folder."""

    image_encoder: Any = None
    feature_extractor: Any = None
    projection: Any = None


def zero123_folder(model: str, flag: str = MODEL_PATH_FLAG) -> Path:
    """The local folder of `model` (hub id or folder) with the files the guidance needs; one line if there is none."""
    from single_image_nerf.pretrained import resolve_hub_weights

    extra = tuple(f"{name}/*" for name, _ in PROJECTION_LAYOUTS)
    return resolve_hub_weights(model, WHAT, flag, REQUIRED, SUBFOLDERS, extra_patterns=extra)


def _read_weights(path: Path) -> Dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def load_projection(folder: Path, model: str, flag: str = MODEL_PATH_FLAG) -> torch.nn.Linear:
    """The camera projection of a Zero123 folder as a Linear: `clip_camera_projection/` (`proj.*`) or
    `cc_projection/` (`projection.*`), from its safetensors (or, failing that, its PyTorch weights)."""
    for name, prefix in PROJECTION_LAYOUTS:
        sub = Path(folder) / name
        files = sorted(sub.glob("*.safetensors")) or sorted(sub.glob("*.bin"))
        if not files:
            continue
        try:
            tensors = _read_weights(files[0])
        except Exception as error:  # noqa: BLE001 - any unreadable file ends in one line
            raise ModelUnavailableError(f"the {WHAT} '{model}' has an unreadable camera projection {files[0]} "
                                        f"({type(error).__name__}); pass a complete folder with {flag} PATH") from None
        prefixes = [p for p in (prefix, *(other for _, other in PROJECTION_LAYOUTS)) if f"{p}.weight" in tensors]
        if not prefixes:
            raise ModelUnavailableError(
                f"the {WHAT} '{model}' has a camera projection {files[0]} without '{prefix}.weight' (keys: "
                f"{', '.join(sorted(tensors))[:120]}); pass a complete folder with {flag} PATH")
        weight = tensors[f"{prefixes[0]}.weight"]
        bias = tensors.get(f"{prefixes[0]}.bias")
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        with torch.no_grad():
            linear.weight.copy_(weight.float())
            if bias is not None:
                linear.bias.copy_(bias.float())
        return linear
    layouts = " or ".join(f"{name}/ ({prefix}.*)" for name, prefix in PROJECTION_LAYOUTS)
    raise ModelUnavailableError(f"the {WHAT} '{model}' has no camera projection ({layouts}) in {folder}; pass a "
                                f"complete diffusers-format Zero123 folder with {flag} PATH")


def load_zero123(model: str, device, dtype, flag: str = MODEL_PATH_FLAG, folder: Optional[Path] = None) -> Zero123Parts:
    """Every component of `model` (hub id or folder), frozen, on `device`, weights in `dtype`."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    from single_image_nerf.guidance.loading import freeze, load_component

    folder = folder if folder is not None else zero123_folder(model, flag)
    projection = load_projection(folder, model, flag)  # before minutes of loading
    unet = load_component(UNet2DConditionModel.from_pretrained, folder, model, flag, subfolder="unet",
                          torch_dtype=dtype)
    if int(unet.config.in_channels) != 2 * int(unet.config.out_channels):
        raise ModelUnavailableError(
            f"the {WHAT} '{model}' has a UNet with {unet.config.in_channels} input channels, not Zero123's "
            f"{2 * unet.config.out_channels} (noisy and reference latents); pass a Zero123 folder with {flag} PATH")
    vae = load_component(AutoencoderKL.from_pretrained, folder, model, flag, subfolder="vae", torch_dtype=dtype)
    encoder = load_component(CLIPVisionModelWithProjection.from_pretrained, folder, model, flag,
                             subfolder="image_encoder", torch_dtype=dtype)
    extractor = load_component(CLIPImageProcessor.from_pretrained, folder, model, flag, subfolder="feature_extractor")
    embed = int(encoder.config.projection_dim)
    if projection.in_features != embed + 4 or projection.out_features != int(unet.config.cross_attention_dim):
        raise ModelUnavailableError(
            f"the {WHAT} '{model}' has a camera projection {projection.in_features} -> {projection.out_features}, "
            f"not {embed + 4} -> {unet.config.cross_attention_dim} (image embedding + 4 camera numbers -> the UNet's "
            f"cross-attention); pass a consistent folder with {flag} PATH")
    scheduler = load_component(DDPMScheduler.from_pretrained, folder, model, flag, subfolder="scheduler")
    projection = projection.to(dtype=dtype)  # the others were loaded in `dtype`
    modules = {name: freeze(module.to(device)) for name, module in
               (("unet", unet), ("vae", vae), ("image_encoder", encoder), ("projection", projection))}
    return Zero123Parts(feature_extractor=extractor, scheduler=scheduler, folder=folder, **modules)


# -------------------------------------------------------------------------------------------------- guidance
@dataclass
class Zero123GuidanceConfig(ScoreDistillationConfig):
    """Score distillation from Zero-1-to-3 conditioned on the photo and each view's camera relative to it."""

    _target: Type = field(default_factory=lambda: Zero123Guidance)
    model_path: str = ZERO123_ID
    """Hub id or local folder of a diffusers-format Zero123 (Zero123, Zero123-XL, Stable Zero123)."""
    camera_embedding: CameraEmbedding = "auto"
    """Fourth camera number: zero123 (Δradius), stable-zero123 (the reference's absolute polar angle), or auto (
    stable-zero123 when the id or folder names Stable Zero123)."""
    recipe: ClassVar[str] = "zero123"

    def recipe_name(self) -> str:
        """zero123, or stable-zero123 when the camera embedding is (or, auto, the model's name says) Stable Zero123:
        their threestudio configs anneal t differently."""
        kind = self.camera_embedding
        if kind == "auto":
            kind = detect_camera_embedding(self.model_path, Path(self.model_path).expanduser())
        return "stable-zero123" if kind == "stable-zero123" else "zero123"


class Zero123Guidance(ScoreDistillationGuidance):
    """SDS from a frozen Zero123 kept outside the Model; the reference is encoded once at set-up."""

    config: Zero123GuidanceConfig
    name = "zero123"

    def __init__(self, config: Zero123GuidanceConfig, context: GuidanceContext,
                 model_path_flag: str = MODEL_PATH_FLAG) -> None:
        super().__init__(config, context)
        if context.reference_image is None or context.reference_cameras is None:
            raise UserInputError("the zero123 guidance needs the reference image and its camera (a training run "
                                 "with the single-image dataparser)")
        if config.camera_embedding not in ("auto", "zero123", "stable-zero123"):
            raise UserInputError(f"unknown camera embedding {config.camera_embedding!r}: use auto, zero123 or "
                                 "stable-zero123")
        self.folder = folder = zero123_folder(config.model_path, model_path_flag)
        parts = load_zero123(config.model_path, self.device, self.dtype, model_path_flag, folder=folder)
        kind = config.camera_embedding
        self.camera_embedding = detect_camera_embedding(config.model_path, folder) if kind == "auto" else kind
        self.unet, self.vae, self.projection = parts.unet, parts.vae, parts.projection
        self.vae_scale_factor = parts.vae_scale_factor
        resolution = config.resolution or parts.native_resolution
        if resolution <= 0 or resolution % self.vae_scale_factor:
            raise UserInputError(f"pipeline.guidance:zero123 --pipeline.guidance.resolution {resolution}: must be a "
                                 f"positive multiple of {self.vae_scale_factor} (the VAE's pixels per latent)")
        self.resolution, self.latent_size = resolution, resolution // self.vae_scale_factor
        self.use_encoder(self.vae)
        views = context.reference_views or (ReferenceViewContext(
            image=context.reference_image, camera=context.reference_cameras, photo=context.reference_photo),)
        images = [white_composite(view.photo if view.photo is not None else view.image, self.resolution
                                  ).to(self.device) for view in views]
        # Every reference view encoded once, main first; the image encoder is needed only here: not kept.
        self.reference_images = torch.cat(images)
        self.reference_latents = torch.cat([reference_latent(self.vae, image) for image in images])
        self.image_embeddings = torch.cat([clip_image_embedding(parts.image_encoder, parts.feature_extractor, image)
                                           for image in images])
        self.reference_image, self.reference_latent = self.reference_images[:1], self.reference_latents[:1]
        self.image_embedding = self.image_embeddings[:1]
        self.reference_cameras = context.reference_cameras.to(self.device)
        self.view_poses = torch.cat([view.camera.camera_to_worlds.reshape(-1, 3, 4)[:1] for view in views]
                                    ).to(self.device)
        """(V, 3, 4) camera-to-world matrices of the reference views, main first."""
        self.use_noise_schedule(parts.scheduler)

    # ------------------------------------------------------------------------------------------------ steps
    def encode(self, images: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B 4 h w"]:
        """Latents (scaled, as the UNet's noisy input) of renders in [0, 1], differentiable in the renders."""
        from single_image_nerf.guidance.latents import resize, vae_encode

        images = images.to(self.device, torch.float32)
        if self.encoder == "vae":
            return vae_encode(self.vae, resize(images, self.resolution))
        return self.latent_map.encode(resize(images, self.latent_size))

    def nearest_views(self, cameras: Cameras) -> Tensor:
        """(B,) index of the reference view nearest in angle to each camera (0 for one photo), on the device."""
        return nearest_reference(cameras.camera_to_worlds.to(self.device)[..., :3, 3], self.view_poses[:, :3, 3])

    def conditioning(self, cameras: Cameras) -> Tuple[Tensor, Tensor]:
        """Each camera's conditioning on its nearest reference view: the (B, 1, D) cross-attention states (that view's
        image embedding and the camera's numbers relative to that view, projected) and the (B, 4, h, w) latent of
        that view. Nothing is read back to the host."""
        cameras = cameras.to(self.device)
        nearest = self.nearest_views(cameras)
        camera = relative_camera_vector(cameras, self.view_poses, self.camera_embedding == "stable-zero123",
                                        nearest=nearest)
        states = project_camera(self.projection, self.image_embeddings[nearest], camera)
        return states, self.reference_latents[nearest]

    def camera_states(self, cameras: Cameras) -> Tensor:
        """(B, 1, D) cross-attention states of each camera: the image embedding of its nearest reference view and its
        camera numbers relative to that view, projected (the photo's, for one photo)."""
        return self.conditioning(cameras)[0]

    @torch.no_grad()
    def score(self, latents: Tensor, states: Tensor, step: int, t: Optional[Tensor] = None,
              noise: Optional[Tensor] = None, reference: Optional[Tensor] = None) -> ScoreTrace:
        """One UNet evaluation on [uncond; cond]; `t` and `noise` are drawn when not given; `reference` is the
        reference latent of each view ((B, 4, h, w), from `conditioning`; None: the main view's)."""
        count = latents.shape[0]
        if t is None:
            t = sds.sample_timesteps(count, *self.timestep_range(step), self.num_train_timesteps, self.t_generator)
        t = t.to(self.device, non_blocking=True)
        if noise is None:
            noise = torch.randn(latents.shape, generator=self.noise_generator)
        noise = noise.to(self.device, torch.float32, non_blocking=True)
        abar = self.alphas_cumprod[t]
        noisy = sds.add_noise(latents.detach().float(), noise, abar)
        inputs, hidden = guidance_batch(noisy, self.reference_latent if reference is None else reference, states)
        output = self.unet(inputs.to(self.dtype), torch.cat([t, t]), encoder_hidden_states=hidden.to(self.dtype)
                           ).sample.float()
        eps_uncond, eps_cond = (sds.to_epsilon(part, noisy, abar, self.prediction_type) for part in output.chunk(2))
        eps_hat = sds.classifier_free_guidance(eps_uncond, eps_cond, self.config.guidance_scale)
        grad = sds.sds_gradient(eps_hat, noise, sds.sds_weight(abar, self.config.weighting), self.config.grad_clip)
        return ScoreTrace(t=t, noise=noise, noisy=noisy, eps_hat=eps_hat, grad=grad)

    def loss(self, images: Float[Tensor, "B 3 H W"], cameras: Cameras, step: int) -> Dict[str, Tensor]:
        """{"zero123_sds_loss"}: SDS on the renders, zeroed on the device (and counted) when not finite."""
        latents = self.encode(images)
        states, reference = self.conditioning(cameras)
        trace = self.score(latents, states, step, reference=reference)
        ok = sds.all_finite(trace.grad, latents)
        trace.grad = torch.where(ok, trace.grad, torch.zeros_like(trace.grad))
        self.last_trace = trace
        self.count_skipped(ok)
        value = self.config.weight * sds.sds_loss(torch.where(ok, latents, torch.zeros_like(latents)), trace.grad)
        return {"zero123_sds_loss": torch.where(ok, value, torch.zeros_like(value)).to(images.device)}
