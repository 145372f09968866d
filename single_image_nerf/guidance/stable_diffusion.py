"""Score distillation from a diffusers Stable Diffusion checkpoint (SD 1.5 and 2.x; a hub id or a local folder).

The weights are loaded when the guidance is built (only when training), frozen, in fp16 on CUDA and fp32 elsewhere,
and live outside the Model, so they never reach a checkpoint. Each step: renders -> latents (through the VAE at the
native size, or straight at latent size), t drawn from the annealed range, noise added, the UNet run once on the
batch [uncond; cond] without gradients, eps_hat = eps_uncond + s (eps_cond - eps_uncond), and the loss
0.5 ||z - stopgrad(z - w(t)(eps_hat - eps))||^2 whose gradient reaches the renders through the encoding alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Dict, List, Optional, Tuple, Type

import torch
from jaxtyping import Float
from torch import Tensor

from nerfstudio.cameras.cameras import Cameras
from single_image_nerf.errors import UserInputError
from single_image_nerf.guidance import sds
from single_image_nerf.guidance.base import GuidanceContext
from single_image_nerf.guidance.clip_guidance import ClipGuidanceConfig
from single_image_nerf.guidance.distillation import ScoreDistillationConfig, ScoreDistillationGuidance, ScoreTrace
from single_image_nerf.guidance.loading import GuidanceUnavailableError  # noqa: F401  (re-exported for callers)
from single_image_nerf.guidance.prompts import VIEWS, relative_view_angles, resolve_prompt, view_indices
from single_image_nerf.pretrained import STABLE_DIFFUSION_ID

MODEL_PATH_FLAG = "pipeline.guidance:stable-diffusion --pipeline.guidance.model-path"
"""The command-line option that points the guidance at a local folder (named in errors)."""


@dataclass
class StableDiffusionGuidanceConfig(ScoreDistillationConfig):
    """Score distillation sampling (DreamFusion) from Stable Diffusion, with view-dependent prompts."""

    _target: Type = field(default_factory=lambda: StableDiffusionGuidance)
    recipe: ClassVar[str] = "stable-diffusion"
    model_path: str = STABLE_DIFFUSION_ID
    """Hub id or local folder of a diffusers Stable Diffusion checkpoint (SD 1.5 and 2.x)."""
    prompt: Optional[str] = None
    """Prompt; None: "a photo of <token>" when a learned token is found, else the data's caption.txt."""
    negative_prompt: str = ""
    """Negative prompt, used as the unconditional branch of classifier-free guidance."""
    view_dependent_prompts: bool = True
    """Append a view suffix (front, side, back, overhead) chosen from each camera's pose."""
    front_suffix: str = ", front view"
    """Suffix for views within `front_threshold` degrees of the reference azimuth."""
    side_suffix: str = ", side view"
    """Suffix for the other views."""
    back_suffix: str = ", back view"
    """Suffix for views within `back_threshold` degrees of the azimuth opposite the reference."""
    overhead_suffix: str = ", overhead view"
    """Suffix for views above `overhead_threshold` degrees of elevation."""
    front_threshold: float = 45.0
    """Half-width in degrees of the azimuth window called front."""
    back_threshold: float = 45.0
    """Half-width in degrees of the azimuth window called back."""
    overhead_threshold: float = 60.0
    """Elevation in degrees above which a view is called overhead."""
    use_learned_token: bool = True
    """Use a token learned by data_scripts/textual_inversion.py (token.bin beside the data) when there is one."""
    token_path: Optional[Path] = None
    """A learned token.bin elsewhere; None: the data folder's token.bin, if present."""
    token_template: str = "a photo of {token}"
    """Prompt built around a learned token when no prompt is given ({token}, and {caption} if wanted)."""
    clip: ClipGuidanceConfig = field(default_factory=ClipGuidanceConfig)
    """Make-It-3D's CLIP losses at small timesteps (off by default)."""


def check_resolution(resolution: Optional[int], factor: Optional[int]) -> None:
    """One line unless `resolution` is None or a positive multiple of the VAE's `factor` (None: not known yet)."""
    if resolution is None:
        return
    if resolution <= 0 or (factor is not None and resolution % factor):
        multiple = f"a positive multiple of {factor}" if factor else "positive"
        raise UserInputError(f"pipeline.guidance:stable-diffusion --pipeline.guidance.resolution {resolution}: must be "
                             f"{multiple} (the VAE's pixels per latent)")


class StableDiffusionGuidance(ScoreDistillationGuidance):
    """SDS on novel-view renders; frozen Stable Diffusion kept outside the Model."""

    config: StableDiffusionGuidanceConfig
    name = "stable-diffusion"

    def __init__(self, config: StableDiffusionGuidanceConfig, context: GuidanceContext,
                 model_path_flag: str = MODEL_PATH_FLAG) -> None:
        super().__init__(config, context)
        from single_image_nerf.guidance.loading import (load_stable_diffusion, stable_diffusion_folder,
                                                        vae_scale_factor_of)
        from single_image_nerf.guidance.textual_inversion import add_token

        token = self._find_token()
        self.prompt = resolve_prompt(config.prompt, context.caption, token[0] if token else None,
                                     config.token_template)
        folder = stable_diffusion_folder(config.model_path, model_path_flag)
        check_resolution(config.resolution, vae_scale_factor_of(folder))  # before minutes of loading
        parts = load_stable_diffusion(config.model_path, self.device, self.dtype, model_path_flag, folder=folder)
        if token is not None:
            add_token(parts.tokenizer, parts.text_encoder, token[0], token[1])
        self.unet, self.vae, self.tokenizer = parts.unet, parts.vae, parts.tokenizer
        self.vae_scale_factor = parts.vae_scale_factor
        check_resolution(config.resolution, self.vae_scale_factor)
        self.resolution = config.resolution or parts.native_resolution
        self.latent_size = self.resolution // self.vae_scale_factor
        self.use_encoder(self.vae)
        self.prompts = self._view_prompts()
        self.cond_embeddings = self._encode_text(parts.text_encoder, self.prompts)
        self.uncond_embeddings = self._encode_text(parts.text_encoder, [config.negative_prompt])
        # The prompts are fixed: the text encoder is not kept (it goes with `parts` at the end of __init__).
        self.use_noise_schedule(parts.scheduler)
        self.clip = self._build_clip(token)

    # ------------------------------------------------------------------------------------------------ set-up
    def _find_token(self) -> Optional[Tuple[str, Tensor, Dict]]:
        from single_image_nerf.guidance.textual_inversion import TOKEN_FILE, load_token

        if not self.config.use_learned_token:
            return None
        path = self.config.token_path
        if path is None and self.context.data_dir is not None:
            path = Path(self.context.data_dir) / TOKEN_FILE
        if path is None or not Path(path).exists():
            if self.config.token_path is not None:
                raise UserInputError(f"pipeline.guidance:stable-diffusion --pipeline.guidance.token-path {path} "
                                     "does not exist; pass the token.bin written by data_scripts/textual_inversion.py")
            return None
        return load_token(Path(path))

    def _view_prompts(self) -> List[str]:
        if not self.config.view_dependent_prompts:
            return [self.prompt]
        suffixes = {"front": self.config.front_suffix, "side": self.config.side_suffix,
                    "back": self.config.back_suffix, "overhead": self.config.overhead_suffix}
        return [self.prompt + suffixes[view] for view in VIEWS]

    @torch.no_grad()
    def _encode_text(self, text_encoder, texts: List[str]) -> Tensor:
        ids = self.tokenizer(texts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(self.device)
        return text_encoder(ids)[0].to(self.dtype)

    def _build_clip(self, token):
        if not self.config.clip.enabled:
            return None
        from single_image_nerf.guidance.clip_guidance import ClipGuidance

        if self.context.reference_image is None:
            raise UserInputError("the CLIP option needs the reference image")
        text = self.config.clip.prompt or self.prompt
        if token is not None:
            text = text.replace(token[0], token[2].get("initializer", "object"))
        return ClipGuidance(self.config.clip, self.device, self.context.reference_image, text)

    # ------------------------------------------------------------------------------------------------ steps
    def encode(self, images: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B 4 h w"]:
        """Latents of renders in [0, 1], differentiable in the renders (never in the weights)."""
        from single_image_nerf.guidance.latents import resize, vae_encode

        images = images.to(self.device, torch.float32)
        if self.encoder == "vae":
            return vae_encode(self.vae, resize(images, self.resolution))
        return self.latent_map.encode(resize(images, self.latent_size))

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Images in [0, 1] from latents, by the inverse of the encoding in use."""
        from single_image_nerf.guidance.latents import vae_decode

        if self.encoder == "vae":
            return vae_decode(self.vae, latents)
        return self.latent_map.decode(latents)

    def view_embeddings(self, cameras: Cameras) -> Tensor:
        """Conditional text embeddings, one per camera, with the view's suffix."""
        if not self.config.view_dependent_prompts:
            return self.cond_embeddings.expand(len(cameras), -1, -1)
        return self.cond_embeddings[self.view_indices(cameras).to(self.device)]

    def view_indices(self, cameras: Cameras) -> Tensor:
        """Index into VIEWS of each camera."""
        azimuth, elevation = relative_view_angles(cameras)
        c = self.config
        return view_indices(azimuth, elevation, c.front_threshold, c.back_threshold, c.overhead_threshold)

    @torch.no_grad()
    def score(self, latents: Tensor, cond: Tensor, step: int, t: Optional[Tensor] = None,
              noise: Optional[Tensor] = None) -> ScoreTrace:
        """One UNet evaluation with classifier-free guidance; `t` and `noise` are drawn when not given."""
        count = latents.shape[0]
        if t is None:
            t = sds.sample_timesteps(count, *self.timestep_range(step), self.num_train_timesteps, self.t_generator)
        t = t.to(self.device, non_blocking=True)  # drawn on the host: queued, not waited for
        if noise is None:
            noise = torch.randn(latents.shape, generator=self.noise_generator)
        noise = noise.to(self.device, torch.float32, non_blocking=True)
        abar = self.alphas_cumprod[t]
        noisy = sds.add_noise(latents.detach().float(), noise, abar)
        states = torch.cat([self.uncond_embeddings.expand(count, -1, -1), cond.to(self.dtype)])
        output = self.unet(torch.cat([noisy, noisy]).to(self.dtype), torch.cat([t, t]),
                           encoder_hidden_states=states).sample.float()
        eps_uncond, eps_cond = (sds.to_epsilon(part, noisy, abar, self.prediction_type) for part in output.chunk(2))
        eps_hat = sds.classifier_free_guidance(eps_uncond, eps_cond, self.config.guidance_scale)
        weight = sds.sds_weight(abar, self.config.weighting)
        grad = sds.sds_gradient(eps_hat, noise, weight, self.config.grad_clip)
        return ScoreTrace(t=t, noise=noise, noisy=noisy, eps_hat=eps_hat, grad=grad)

    def loss(self, images: Float[Tensor, "B 3 H W"], cameras: Cameras, step: int) -> Dict[str, Tensor]:
        """SDS on the renders. A non-finite score (an fp16 overflow in the UNet) or encoding zeroes the step's SDS
        gradient on the device and counts the step in `skipped_steps`; nothing is read back to the host."""
        latents = self.encode(images)
        trace = self.score(latents, self.view_embeddings(cameras), step)
        ok = sds.all_finite(trace.grad, latents)
        trace.grad = torch.where(ok, trace.grad, torch.zeros_like(trace.grad))
        self.last_trace = trace
        self.count_skipped(ok)
        losses: Dict[str, Tensor] = {}
        grad = trace.grad
        if self.clip is not None:
            grad, losses = self._clip_losses(images, trace)
        # Zeroed latents when not finite: their gradient is then 0, not NaN (where's backward does not multiply).
        sds_loss = self.config.weight * sds.sds_loss(torch.where(ok, latents, torch.zeros_like(latents)), grad)
        losses["sds_loss"] = torch.where(ok, sds_loss, torch.zeros_like(sds_loss)).to(images.device)
        return losses

    def _clip_losses(self, images: Tensor, trace: ScoreTrace) -> Tuple[Tensor, Dict[str, Tensor]]:
        """CLIP losses on the views with small t; their SDS gradient is dropped when the option replaces it."""
        from single_image_nerf.guidance.latents import resize

        small = trace.t <= self.config.clip.max_t * self.num_train_timesteps
        if not bool(small.any()):
            return trace.grad, {}
        abar = self.alphas_cumprod[trace.t[small]]
        decoded = self.decode(sds.predicted_original(trace.noisy[small], trace.eps_hat[small], abar))
        renders = resize(images[small.to(images.device)].to(self.device, torch.float32), decoded.shape[-1])
        denoised = renders + (decoded - renders).detach()  # the denoising is a constant shift of the render
        losses = {name: value.to(images.device) for name, value in self.clip.loss(denoised).items()}
        grad = trace.grad
        if self.config.clip.replace_sds:
            grad = grad * (~small).reshape(-1, 1, 1, 1).to(grad)
        return grad, losses
