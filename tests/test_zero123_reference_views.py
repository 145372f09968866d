"""Zero123 with several reference views: every view encoded once, each novel camera conditioned on the view nearest
to it in angle (its image embedding, its latent, its camera numbers relative to that view), checked against a
by-hand UNet evaluation with the tiny Zero123; one photo conditions exactly as before."""

from __future__ import annotations

import pytest
import torch

from single_image_nerf.data.camera_sampling import orbit_cameras
from single_image_nerf.guidance.base import GuidanceContext, ReferenceViewContext
from single_image_nerf.guidance.zero123 import (Zero123GuidanceConfig, camera_vector, nearest_reference,
                                                reference_latent, white_composite)
from tiny_zero123 import tiny_zero123_folder

pytestmark = pytest.mark.usefixtures("offline_hub")


def cams(azimuths, elevations, size=16):
    count = len(azimuths)
    return orbit_cameras(torch.tensor(azimuths, dtype=torch.float32), torch.tensor(elevations, dtype=torch.float32),
                         torch.full((count,), 2.5), torch.full((count,), 40.0), size, size)


def square(colour, size=32):
    rgba = torch.zeros(size, size, 4)
    rgba[8:24, 8:24] = torch.tensor([*colour, 1.0])
    return rgba


FRONT, BACK = square((1.0, 0.0, 0.0)), square((0.0, 0.0, 1.0))


def guidance(views=True, **options):
    front = cams([0.0], [10.0])
    listed = (ReferenceViewContext(image=FRONT, camera=front), ReferenceViewContext(image=BACK, camera=cams([180.0], [30.0])))
    context = GuidanceContext(device=torch.device("cpu"), reference_image=FRONT, reference_cameras=front,
                              reference_views=listed if views else ())
    return Zero123GuidanceConfig(model_path=str(tiny_zero123_folder()), **options).setup(context=context)


def test_nearest_reference_is_the_smallest_angle_between_directions():
    references = cams([0.0, 180.0], [0.0, 0.0]).camera_to_worlds[:, :, 3]
    cameras = cams([20.0, 170.0, -100.0, 80.0, 0.0], [0.0, 0.0, 0.0, 0.0, 85.0]).camera_to_worlds[:, :, 3]
    assert nearest_reference(cameras, references).tolist() == [0, 1, 1, 0, 0]
    four = cams([0.0, 90.0, 180.0, 270.0], [0.0] * 4).camera_to_worlds[:, :, 3]
    assert nearest_reference(cams([40.0, 50.0, 200.0, -60.0], [0.0] * 4).camera_to_worlds[:, :, 3],
                             four).tolist() == [0, 1, 2, 3]


def test_each_view_is_encoded_once_and_each_camera_conditioned_on_its_nearest():
    from diffusers import DDPMScheduler, UNet2DConditionModel

    guide = guidance(guidance_scale=3.0)
    assert guide.reference_latents.shape[0] == 2 and guide.image_embeddings.shape[0] == 2
    back_latent = reference_latent(guide.vae, white_composite(BACK, guide.resolution))
    assert torch.allclose(guide.reference_latents[1:], back_latent, atol=1e-6)
    assert not torch.allclose(guide.reference_latents[0], guide.reference_latents[1], atol=1e-3)
    cameras = cams([30.0, 160.0], [20.0, 0.0])
    assert guide.nearest_views(cameras).tolist() == [0, 1]
    states, latents_in = guide.conditioning(cameras)
    # Camera 1 relative to the back view (azimuth 180, elevation 30): delta azimuth -20, delta polar +30 degrees.
    numbers = torch.stack([camera_vector(20.0, 30.0, 2.5, 10.0, 0.0, 2.5)[0],
                           camera_vector(0.0, 160.0, 2.5, 30.0, 180.0, 2.5)[0]])
    assert numbers[1, 0].item() == pytest.approx(torch.deg2rad(torch.tensor(30.0)).item(), abs=1e-5)
    joined = torch.cat([guide.image_embeddings, numbers[:, None, :]], -1)
    assert torch.allclose(states, guide.projection(joined), atol=1e-5)
    assert torch.equal(latents_in, guide.reference_latents)
    # The score concatenates each camera's own reference latent.
    folder = tiny_zero123_folder()
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet").eval()
    alphas = DDPMScheduler.from_pretrained(folder, subfolder="scheduler").alphas_cumprod
    latents, t, noise = torch.randn(2, 4, 8, 8), torch.tensor([300, 600]), torch.randn(2, 4, 8, 8)
    trace = guide.score(latents, states, step=0, t=t, noise=noise, reference=latents_in)
    noisy = alphas[t].sqrt()[:, None, None, None] * latents + (1 - alphas[t]).sqrt()[:, None, None, None] * noise
    with torch.no_grad():
        cond = unet(torch.cat([noisy, latents_in], 1), t, encoder_hidden_states=states).sample
        uncond = unet(torch.cat([noisy, torch.zeros_like(latents_in)], 1), t,
                      encoder_hidden_states=torch.zeros_like(states)).sample
    assert torch.allclose(trace.eps_hat, uncond + 3.0 * (cond - uncond), atol=1e-4)
    images = torch.rand(2, 3, 16, 16, requires_grad=True)
    loss = guide.loss(images, cameras, step=0)["zero123_sds_loss"]
    loss.backward()
    assert torch.isfinite(loss) and images.grad.abs().sum() > 0


def test_one_photo_conditions_on_the_photo_as_before():
    guide, alone = guidance(), guidance(views=False)
    assert alone.reference_latents.shape[0] == 1
    front_cameras = cams([30.0, -60.0], [20.0, 0.0])  # nearest to the front view in the two-view guidance
    for a, b in zip(guide.conditioning(front_cameras), alone.conditioning(front_cameras)):
        assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(alone.camera_states(cams([160.0], [0.0])),
                          alone.projection(torch.cat([alone.image_embedding, camera_vector(
                              0.0, 160.0, 2.5, 10.0, 0.0, 2.5)[:, None, :]], -1)), atol=1e-5)
