"""Exact diffusion priors of known objects: the closed-form denoiser of the object's true renders, put where a
guidance's UNet is, so that every other line of the real guidance runs (prompt or camera conditioning, the encoder,
classifier-free guidance, timestep sampling, weighting, annealing) as it does with real weights.

For data x_i (latents of true renders), each weighted by pi_i under the condition, and
x_t = sqrt(abar) x + sqrt(1 - abar) eps, the minimum-MSE denoiser is

    p_i ∝ pi_i exp(-|x_t - sqrt(abar) x_i|^2 / (2 (1 - abar))),   x0_hat = sum_i p_i x_i,
    eps_hat = (x_t - sqrt(abar) x0_hat) / sqrt(1 - abar):

what a perfect diffusion model of that object predicts. At high noise it is the mean over the views the condition
allows; at low noise it is the nearest of them.

The condition is decoded from what the guidance hands the UNet, never from the project's own camera functions:
- Stable Diffusion: the prompt embedding is matched to the folder's text encoder's embeddings of the view prompts
  (the guidance's prompt with its front, side, back and overhead suffixes). pi is uniform over the bank's renders of
  that view, binned by the same thresholds from each render's camera position; the unconditional branch (the
  negative prompt) is uniform over the whole bank.
- Zero123: the camera numbers [Δpolar, sin Δazimuth, cos Δazimuth, Δradius] reach the UNet through the folder's
  projection, whose first four outputs carry them verbatim (`exact_prior_folders.py`). They are relative to the
  reference view whose latent the row carries (the nearest to the camera, with several photos): that view is found
  by matching the row's concatenated latent to the guidance's reference latents, and the numbers are turned back
  into a camera position from it by Zero-1-to-3's own convention (`zero123_target_position`); pi is a Gaussian
  kernel in the angle between camera directions and in radius. Stable Zero123's fourth number is the reference's
  absolute polar angle. The unconditional branch (zero states and a zero reference latent) is uniform over the
  whole bank.

The bank holds true renders over white at the novel views' size, on a grid of azimuth, elevation, radius and field
of view (`BankSpec`), rendered once and cached; they are encoded by the guidance's own `encode` (the affine latent
map on a CPU, the VAE on CUDA).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor

VIEW_NAMES = ("front", "side", "back", "overhead")
"""The Stable Diffusion guidance's view suffixes, by the option that holds each (`<name>_suffix`)."""


# ------------------------------------------------------------------------------------------ the closed form
def exact_denoise(noisy: Tensor, bank: Tensor, log_prior: Tensor, abar: Tensor,
                  bank_norms: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """(eps_hat, x0_hat) of the minimum-MSE denoiser over `bank` (N, D) with prior weights exp(`log_prior`) (B, N),
    for `noisy` latents (B, ...) at cumulative alphas `abar` (B,). Computed in float64; the |x_t|^2 term, the same
    for every i, is left out of the softmax. `bank_norms`: the bank's squared norms (N,), when kept."""
    shape = noisy.shape
    x = noisy.reshape(shape[0], -1).double()
    data = bank.double()
    norms = (data * data).sum(1) if bank_norms is None else bank_norms.double()
    abar = abar.double().reshape(-1, 1)
    scale = abar.sqrt()
    logits = log_prior.double() + (2.0 * scale * (x @ data.T) - abar * norms[None]) / (2.0 * (1.0 - abar))
    weights = torch.softmax(logits, dim=1)
    x0 = weights @ data
    eps = (x - scale * x0) / (1.0 - abar).sqrt()
    return eps.reshape(shape).float(), x0.reshape(shape).float()


# ------------------------------------------------------------------------------------------ Zero123's convention
def zero123_spherical(position: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """(polar from +Z, azimuth atan2(y, x), distance) of camera positions (..., 3): Zero-1-to-3's
    `cartesian_to_spherical` (zero123/ldm/data/simple.py), applied to the camera centre `-R^T T` in Objaverse's
    +Z-up world."""
    x, y, z = position.unbind(-1)
    planar = x * x + y * y
    return torch.atan2(planar.sqrt(), z), torch.atan2(y, x), (planar + z * z).sqrt()


def zero123_target_position(numbers: Tensor, reference_position: Tensor, absolute_polar: bool = False) -> Tensor:
    """The camera position (B, 3) that Zero123's camera numbers (B, 4) stand for, relative to the reference camera at
    `reference_position` (3,), or to each row's own at (B, 3). Zero-1-to-3's `get_T` defines [θ_target - θ_cond,
    sin(φ_target - φ_cond), cos(φ_target - φ_cond), z_target - z_cond]; Stable Zero123 (threestudio's
    stable_zero123_guidance.get_cond) puts the reference's polar angle deg2rad(90 - elevation) in the last entry and
    keeps the reference's distance."""
    theta_ref, azimuth_ref, distance_ref = zero123_spherical(reference_position.reshape(-1, 3).double())
    numbers = numbers.double()
    delta_theta, sine, cosine, last = numbers.unbind(-1)
    if absolute_polar:
        theta, distance = last + delta_theta, distance_ref.expand_as(last)
    else:
        theta, distance = theta_ref + delta_theta, distance_ref + last
    azimuth = azimuth_ref + torch.atan2(sine, cosine)
    return torch.stack([distance * torch.sin(theta) * torch.cos(azimuth), distance * torch.sin(theta) * torch.sin(azimuth),
                        distance * torch.cos(theta)], dim=-1)


# ------------------------------------------------------------------------------------------ the bank
@dataclass(frozen=True)
class BankSpec:
    """The grid of cameras (looking at the origin) the bank is rendered from."""

    azimuth_step: float
    """Degrees between azimuths (the full circle)."""
    elevations: Tuple[float, ...]
    """Elevations, degrees above the XY plane."""
    radii: Tuple[float, ...]
    """Camera distances from the origin."""
    fovs: Tuple[float, ...]
    """Vertical fields of view, degrees."""
    resolution: int
    """Side of the renders, pixels (the novel views' size: the guidance encodes them as it encodes a render)."""
    supersample: int = 2
    """Rays per pixel side."""

    @property
    def size(self) -> int:
        """Number of renders."""
        return round(360.0 / self.azimuth_step) * len(self.elevations) * len(self.radii) * len(self.fovs)


def spread(low: float, high: float, step: float) -> Tuple[float, ...]:
    """Values from `low` to `high` inclusive, evenly spaced, at most `step` apart (one value when low == high)."""
    if high <= low:
        return (float(low),)
    count = int(math.ceil((high - low) / step - 1e-9)) + 1
    return tuple(float(low + (high - low) * k / (count - 1)) for k in range(count))


@dataclass
class RenderBank:
    """True renders over white and the cameras they were taken from."""

    images: Tensor
    """(N, 3, H, W) in [0, 1]."""
    positions: Tensor
    """(N, 3) camera centres, read from the cameras' camera-to-world matrices."""
    fovs: Tensor
    """(N,) vertical fields of view, degrees."""


def bank_cameras(spec: BankSpec):
    """The bank's cameras: every (azimuth, elevation, radius, fov) of the grid."""
    from single_image_nerf.data.camera_sampling import orbit_cameras

    azimuths = torch.arange(round(360.0 / spec.azimuth_step), dtype=torch.float32) * spec.azimuth_step
    grid = torch.cartesian_prod(azimuths, torch.tensor(spec.elevations), torch.tensor(spec.radii), torch.tensor(spec.fovs))
    return orbit_cameras(grid[:, 0], grid[:, 1], grid[:, 2], grid[:, 3], spec.resolution, spec.resolution), grid[:, 3]


def default_cache_dir() -> Path:
    """Where banks are kept: $SINGLE_IMAGE_NERF_CACHE/exact-prior-banks (default ~/.cache/single-image-nerf)."""
    root = Path(os.environ.get("SINGLE_IMAGE_NERF_CACHE", Path.home() / ".cache" / "single-image-nerf"))
    return root / "exact-prior-banks"


def render_bank(object_name: str, spec: BankSpec, cache_dir: Optional[Path] = None, chunk: int = 64) -> RenderBank:
    """The bank of `object_name` on `spec`'s grid, rendered once and kept in `cache_dir` (keyed by both)."""
    from single_image_nerf.known_objects import composite, get_known_object, render_known_object

    key = hashlib.sha256(json.dumps({"object": object_name, **asdict(spec), "version": 1}, sort_keys=True).encode())
    stem = Path(object_name.partition("@")[0]).stem  # a mesh file's path names it by its stem
    path = Path(cache_dir or default_cache_dir()) / f"{stem}-{key.hexdigest()[:16]}.pt"
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        return RenderBank(images=saved["images"].float(), positions=saved["positions"], fovs=saved["fovs"])
    cameras, fovs = bank_cameras(spec)
    obj = get_known_object(object_name)
    images = []
    for start in range(0, cameras.shape[0], chunk):
        rgba = render_known_object(obj, cameras[start:start + chunk], supersample=spec.supersample)["rgba"]
        images.append(composite(rgba, (1.0, 1.0, 1.0)).permute(0, 3, 1, 2).contiguous())
    bank = RenderBank(images=torch.cat(images), positions=cameras.camera_to_worlds[:, :3, 3].clone(), fovs=fovs)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    torch.save({"images": bank.images.half(), "positions": bank.positions, "fovs": bank.fovs}, partial)
    partial.replace(path)
    return bank


@torch.no_grad()
def encode_bank(guidance, images: Tensor, chunk: int = 64) -> Tensor:
    """(N, C, h, w) latents of the bank's images through the guidance's own `encode`."""
    return torch.cat([guidance.encode(images[start:start + chunk].to(guidance.device)).float()
                      for start in range(0, images.shape[0], chunk)])


# ------------------------------------------------------------------------------------------ conditions
def view_bins(positions: Tensor, reference_position: Tensor, front: float, back: float,
              overhead: float) -> Dict[str, Tensor]:
    """Which bank cameras each view prompt names (bool masks over N): overhead above `overhead` degrees of
    elevation, else front within `front` degrees of the reference's azimuth, back within `back` of the opposite one,
    side otherwise. Angles come from the camera positions themselves."""
    x, y, z = positions.double().unbind(-1)
    azimuth = torch.rad2deg(torch.atan2(y, x))
    reference_azimuth = math.degrees(math.atan2(float(reference_position[1]), float(reference_position[0])))
    relative = torch.remainder(azimuth - reference_azimuth + 180.0, 360.0) - 180.0
    elevation = torch.rad2deg(torch.atan2(z, (x * x + y * y).sqrt()))
    is_overhead = elevation > overhead
    is_front = ~is_overhead & (relative.abs() <= front)
    is_back = ~is_overhead & (relative.abs() >= 180.0 - back)
    return {"front": is_front, "back": is_back, "side": ~is_overhead & ~is_front & ~is_back, "overhead": is_overhead}


class PromptCondition:
    """pi of the Stable Diffusion exact prior: the prompt embedding is decoded to a view by the nearest of the view
    prompts' embeddings, which must match to `tolerance` (relative): an embedding of any other text is refused."""

    def __init__(self, embeddings: Dict[str, Tensor], unconditional: Tensor, bins: Dict[str, Tensor],
                 tolerance: float = 1e-3) -> None:
        self.names = list(embeddings) + ["unconditional"]
        self.table = torch.stack([*embeddings.values(), unconditional]).flatten(1).double()
        count = next(iter(bins.values())).shape[0]
        masks = [bins[name] for name in embeddings] + [torch.ones(count, dtype=torch.bool)]
        self.log_priors = torch.stack([torch.where(mask, 0.0, -math.inf) for mask in masks]).double()
        self.tolerance = tolerance
        self.last_views: list = []

    def decode(self, states: Tensor) -> Tensor:
        """Index into `names` of each prompt embedding (B, L, D)."""
        flat = states.flatten(1).double().cpu()
        distance = torch.cdist(flat, self.table)
        index = distance.argmin(dim=1)
        relative = distance.gather(1, index[:, None])[:, 0] / self.table[index].norm(dim=1).clamp_min(1e-12)
        if bool((relative > self.tolerance).any()):
            raise ValueError(f"a prompt embedding matches none of the view prompts (relative distance "
                             f"{float(relative.max()):.3g}): the exact prior knows only {', '.join(self.names)}")
        return index

    def log_prior(self, sample: Tensor, states: Tensor) -> Tensor:
        index = self.decode(states)
        self.last_views = [self.names[i] for i in index.tolist()]
        if bool(torch.isinf(self.log_priors[index]).all(dim=1).any()):
            raise ValueError(f"the bank holds no render of the view(s) {self.last_views}; widen its grid")
        return self.log_priors[index]


class CameraCondition:
    """pi of the Zero123 exact prior: a Gaussian kernel about the camera position its numbers decode to, in the
    angle between directions (`sigma_degrees`) and in distance (`sigma_radius`). The numbers are relative to the
    reference view whose latent the row carries, one of `reference_latents` (V, C, h, w) taken from
    `reference_positions` (V, 3)."""

    def __init__(self, positions: Tensor, reference_positions: Tensor, reference_latents: Tensor,
                 sigma_degrees: float = 2.5, sigma_radius: float = 0.1, absolute_polar: bool = False,
                 latent_channels: int = 4, tolerance: float = 1e-2) -> None:
        self.directions = torch.nn.functional.normalize(positions.double(), dim=-1)
        self.distances = positions.double().norm(dim=-1)
        self.reference_positions = reference_positions.double().reshape(-1, 3).cpu()
        self.reference_latents = reference_latents.flatten(1).double().cpu()
        if self.reference_latents.shape[0] != self.reference_positions.shape[0]:
            raise ValueError(f"{self.reference_latents.shape[0]} reference latents for "
                             f"{self.reference_positions.shape[0]} reference positions")
        self.sigma = math.radians(sigma_degrees)
        self.sigma_radius = sigma_radius
        self.absolute_polar = absolute_polar
        self.latent_channels = latent_channels
        self.tolerance = tolerance
        self.last_targets: Optional[Tensor] = None
        self.last_references: Optional[Tensor] = None

    def reference_views(self, concat: Tensor, conditional: Tensor) -> Tensor:
        """(B,) index of the reference view whose latent each row's concatenated latent `concat` (B, ...) is: the
        nearest in L2, which must match to `tolerance` (relative) on the `conditional` rows; 0 on the others."""
        distance = torch.cdist(concat.flatten(1).double().cpu(), self.reference_latents)
        index = distance.argmin(dim=1)
        relative = distance.gather(1, index[:, None])[:, 0] / self.reference_latents[index].norm(dim=1).clamp_min(1e-12)
        conditional = conditional.cpu()
        if bool((relative[conditional] > self.tolerance).any()):
            raise ValueError(f"a concatenated latent matches none of the reference views' latents (relative distance "
                             f"{float(relative[conditional].max()):.3g})")
        return torch.where(conditional, index, torch.zeros_like(index))

    def log_prior(self, sample: Tensor, states: Tensor) -> Tensor:
        concat = sample[:, self.latent_channels:].flatten(1)
        unconditional = (concat == 0).all(dim=1) & (states.flatten(1) == 0).all(dim=1)
        self.last_references = self.reference_views(concat, ~unconditional)
        target = zero123_target_position(states[:, 0, :4].cpu(), self.reference_positions[self.last_references],
                                         self.absolute_polar)
        self.last_targets = target
        direction = torch.nn.functional.normalize(target, dim=-1)
        angle = torch.acos((direction @ self.directions.T).clamp(-1.0, 1.0))
        radius = target.norm(dim=-1, keepdim=True) - self.distances[None]
        log_prior = -0.5 * (angle / self.sigma) ** 2 - 0.5 * (radius / self.sigma_radius) ** 2
        return torch.where(unconditional.cpu()[:, None], torch.zeros_like(log_prior), log_prior)


# ------------------------------------------------------------------------------------------ the module
class ExactDenoiser(torch.nn.Module):
    """The UNet's call signature and output, with the exact eps_hat over a bank of encoded true renders."""

    def __init__(self, bank_latents: Tensor, condition, alphas_cumprod: Tensor, prediction_type: str = "epsilon",
                 latent_channels: int = 4) -> None:
        super().__init__()
        if prediction_type != "epsilon":
            raise ValueError(f"the exact prior predicts epsilon; the folder's scheduler says {prediction_type!r}")
        self.latent_shape = tuple(bank_latents.shape[1:])
        self.register_buffer("bank", bank_latents.flatten(1).double(), persistent=False)
        self.register_buffer("bank_norms", (self.bank * self.bank).sum(1), persistent=False)
        self.register_buffer("alphas_cumprod", alphas_cumprod.double().clone(), persistent=False)
        self.condition = condition
        self.latent_channels = latent_channels
        self.last_x0: Optional[Tensor] = None

    def forward(self, sample: Tensor, timestep: Tensor, encoder_hidden_states: Tensor, return_dict: bool = True,
                **_: object):
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        noisy = sample[:, :self.latent_channels]
        if tuple(noisy.shape[1:]) != self.latent_shape:
            raise ValueError(f"latents {tuple(noisy.shape[1:])} do not match the bank's {self.latent_shape}: render "
                             "the bank at the size the guidance encodes")
        timestep = torch.as_tensor(timestep, device=self.bank.device).reshape(-1).expand(sample.shape[0]).long()
        log_prior = self.condition.log_prior(sample.float(), encoder_hidden_states.float()).to(self.bank.device)
        eps, x0 = exact_denoise(noisy.to(self.bank.device), self.bank, log_prior, self.alphas_cumprod[timestep],
                                self.bank_norms)
        self.last_x0 = x0
        eps = eps.to(sample.device, sample.dtype)
        return UNet2DConditionOutput(sample=eps) if return_dict else (eps,)


# ------------------------------------------------------------------------------------------ installing
@dataclass
class ExactPriorOptions:
    """How the exact priors are built for a run."""

    object_name: str
    """The known object whose renders are the data."""
    reference_position: Tuple[float, float, float]
    """The main reference camera's centre (the main photo's camera), in world units."""
    reference_fov: float
    """The reference camera's vertical field of view (Zero123 answers at it: it is blind to the field of view)."""
    resolution: int
    """Side of the novel-view renders (the bank is rendered at it)."""
    elevation_range: Tuple[float, float]
    """The novel cameras' elevations."""
    radius_range: Tuple[float, float]
    """The novel cameras' distances."""
    fov_range: Tuple[float, float]
    """The novel cameras' fields of view (Stable Diffusion's bank spans them)."""
    zero123_azimuth_step: float = 5.0
    """Degrees between the Zero123 bank's azimuths (the nearest render is within 2.5 degrees)."""
    zero123_elevation_step: float = 5.0
    """Degrees between the Zero123 bank's elevations (it reaches half a step beyond the novel range)."""
    zero123_radius_step: float = 0.2
    """Largest gap between the Zero123 bank's distances across the novel range."""
    sd_azimuth_step: float = 10.0
    """Degrees between the Stable Diffusion bank's azimuths."""
    sd_elevation_step: float = 10.0
    """Largest gap between the Stable Diffusion bank's elevations across the novel range."""
    sd_radius_levels: int = 3
    """Distances in the Stable Diffusion bank, spanning the novel range."""
    sd_fov_levels: int = 3
    """Fields of view in the Stable Diffusion bank, spanning the novel range."""
    sigma_degrees: float = 2.5
    """Zero123's kernel width in the angle between camera directions (half its bank's azimuth step)."""
    sigma_radius: float = 0.1
    """Zero123's kernel width in camera distance (half its bank's radius step)."""
    cache_dir: Optional[Path] = None
    """Where banks are kept (None: `default_cache_dir()`)."""


def _levels(low: float, high: float, count: int) -> Tuple[float, ...]:
    return (float(low),) if high <= low else tuple(float(v) for v in torch.linspace(low, high, count).tolist())


def zero123_bank_spec(options: ExactPriorOptions) -> BankSpec:
    low, high = options.elevation_range
    return BankSpec(azimuth_step=options.zero123_azimuth_step,
                    elevations=spread(low - options.zero123_elevation_step / 2,
                                      high + options.zero123_elevation_step / 2, options.zero123_elevation_step),
                    radii=spread(*options.radius_range, options.zero123_radius_step), fovs=(options.reference_fov,),
                    resolution=options.resolution)


def stable_diffusion_bank_spec(options: ExactPriorOptions) -> BankSpec:
    return BankSpec(azimuth_step=options.sd_azimuth_step,
                    elevations=spread(*options.elevation_range, options.sd_elevation_step),
                    radii=_levels(*options.radius_range, options.sd_radius_levels),
                    fovs=_levels(*options.fov_range, options.sd_fov_levels), resolution=options.resolution)


@torch.no_grad()
def text_embeddings(folder: Path, tokenizer, texts: Sequence[str]) -> Tensor:
    """Embeddings of `texts` by the folder's own text encoder (max-length padding, as the guidance encodes)."""
    from transformers import CLIPTextModel

    encoder = CLIPTextModel.from_pretrained(str(Path(folder) / "text_encoder")).eval()
    ids = tokenizer(list(texts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    return encoder(ids)[0].float()


def exact_stable_diffusion(guidance, options: ExactPriorOptions) -> ExactDenoiser:
    """The exact denoiser for a `StableDiffusionGuidance`: its view prompts decoded, its bank encoded by it."""
    config = guidance.config
    reference = torch.tensor(options.reference_position)
    bank = render_bank(options.object_name, stable_diffusion_bank_spec(options), options.cache_dir)
    bins = view_bins(bank.positions, reference, config.front_threshold, config.back_threshold,
                     config.overhead_threshold)
    if config.view_dependent_prompts:
        names = list(VIEW_NAMES)
        texts = [guidance.prompt + getattr(config, f"{name}_suffix") for name in names]
    else:
        names, texts = ["any"], [guidance.prompt]
        bins = {"any": torch.ones(bank.positions.shape[0], dtype=torch.bool)}
    embeddings = text_embeddings(Path(config.model_path), guidance.tokenizer, [*texts, config.negative_prompt])
    condition = PromptCondition(dict(zip(names, embeddings[:-1])), embeddings[-1], bins)
    return ExactDenoiser(encode_bank(guidance, bank.images), condition, guidance.alphas_cumprod.cpu(),
                         guidance.prediction_type).to(guidance.device)


def reference_positions(guidance, options: ExactPriorOptions, tolerance: float = 1e-3) -> Tensor:
    """(V, 3) centres of a `Zero123Guidance`'s reference views, main first; the main one must be
    `options.reference_position` (to `tolerance`, world units), where the bank's world puts the photo's camera."""
    positions = guidance.view_poses[:, :3, 3].double().cpu()
    expected = torch.tensor(options.reference_position, dtype=torch.float64)
    if not torch.allclose(positions[0], expected, rtol=0.0, atol=tolerance):
        raise ValueError(f"the guidance's main reference camera is at {positions[0].tolist()}, the exact prior's at "
                         f"{expected.tolist()}: the data's world and the bank's disagree")
    return positions


def exact_zero123(guidance, options: ExactPriorOptions) -> ExactDenoiser:
    """The exact denoiser for a `Zero123Guidance`: its camera numbers decoded relative to the reference view whose
    latent each row carries, its bank encoded by it."""
    references = reference_positions(guidance, options)
    bank = render_bank(options.object_name, zero123_bank_spec(options), options.cache_dir)
    condition = CameraCondition(bank.positions, references, guidance.reference_latents, options.sigma_degrees,
                                options.sigma_radius, absolute_polar=guidance.camera_embedding == "stable-zero123")
    return ExactDenoiser(encode_bank(guidance, bank.images), condition, guidance.alphas_cumprod.cpu(),
                         guidance.prediction_type).to(guidance.device)


def install_exact_priors(guidance, options: ExactPriorOptions) -> Dict[str, ExactDenoiser]:
    """Replace the UNet of every score-distillation prior inside `guidance` (Stable Diffusion, Zero123, or both in
    Magic123) by its exact denoiser; nothing else of the guidance changes. Returns them by prior."""
    from single_image_nerf.guidance.magic123 import Magic123Guidance
    from single_image_nerf.guidance.stable_diffusion import StableDiffusionGuidance
    from single_image_nerf.guidance.zero123 import Zero123Guidance

    if isinstance(guidance, Magic123Guidance):
        return {"sd": install_exact_priors(guidance.stable_diffusion, options)["sd"],
                "zero123": install_exact_priors(guidance.zero123, options)["zero123"]}
    if isinstance(guidance, StableDiffusionGuidance):
        guidance.unet = exact_stable_diffusion(guidance, options)
        return {"sd": guidance.unet}
    if isinstance(guidance, Zero123Guidance):
        guidance.unet = exact_zero123(guidance, options)
        return {"zero123": guidance.unet}
    raise TypeError(f"no exact prior for {type(guidance).__name__}: use stable-diffusion, zero123 or magic123")
