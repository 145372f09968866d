"""Hash-grid field of density and albedo (tiny-cuda-nn when installed, a vectorised pure-torch grid otherwise)."""

from __future__ import annotations

from typing import Dict, Literal, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nerfstudio.cameras.rays import RaySamples
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.field_components.activations import trunc_exp
from nerfstudio.field_components.encodings import HashEncoding
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.field_components.mlp import MLP
from nerfstudio.fields.base_field import Field
from nerfstudio.fields.density_fields import HashMLPDensityField

HASH_PRIMES_INT32 = (1, 2654435761 - 2**32, 805459861)
"""Instant-NGP's spatial hash primes as int32 (two's complement): the products wrap modulo 2^32 exactly like the
uint32 arithmetic of tiny-cuda-nn, and their low bits equal those of nerfstudio's int64 products."""


class VectorisedHashEncoding(HashEncoding):
    """nerfstudio's HashEncoding (same parameters, same hash function, same trilinear interpolation) with a faster
    pure-torch path: the 8 corners of every level are hashed at once in int32 (the two corners per axis share one
    product), the features of all levels and corners are fetched by one gather, and the interpolation is three
    lerps. Without autograd the gather and the weighting are fused in one `embedding_bag`. tiny-cuda-nn is used
    unchanged when it is installed and asked for."""

    def pytorch_fwd(self, in_tensor: Tensor) -> Tensor:
        assert in_tensor.shape[-1] == 3
        batch = in_tensor.shape[:-1]
        points = in_tensor.reshape(-1, 3)
        scaled = points[:, None, :] * self.scalings.to(points)[:, None]  # (N, L, 3)
        floor = torch.floor(scaled)
        frac = scaled - floor  # (N, L, 3)
        primes = torch.tensor(HASH_PRIMES_INT32, dtype=torch.int32, device=points.device)
        low = floor.to(torch.int32) * primes  # the corner at floor along each axis
        both = torch.stack([low, low + primes], dim=-1)  # (N, L, 3, 2): floor and floor + 1
        index = both[:, :, 0, :, None, None] ^ both[:, :, 1, None, :, None] ^ both[:, :, 2, None, None, :]
        levels = torch.arange(self.num_levels, device=points.device, dtype=torch.int32) * self.hash_table_size
        index = (index & (self.hash_table_size - 1)) + levels[:, None, None, None]  # (N, L, 2, 2, 2)
        index = index.reshape(-1).long()
        if not (torch.is_grad_enabled() and (in_tensor.requires_grad or self.hash_table.requires_grad)):
            weights = torch.stack([1.0 - frac, frac], dim=-1)  # (N, L, 3, 2)
            weights = weights[:, :, 0, :, None, None] * weights[:, :, 1, None, :, None] * weights[:, :, 2, None, None, :]
            encoded = F.embedding_bag(index.view(-1, 8), self.hash_table, per_sample_weights=weights.reshape(-1, 8),
                                      mode="sum")
            return encoded.reshape(*batch, -1)
        corners = self.hash_table.index_select(0, index).view(*frac.shape[:2], 2, 2, 2, self.features_per_level)
        along_z = torch.lerp(corners[..., 0, :], corners[..., 1, :], frac[:, :, 2, None, None, None])
        along_y = torch.lerp(along_z[..., 0, :], along_z[..., 1, :], frac[:, :, 1, None, None])
        encoded = torch.lerp(along_y[..., 0, :], along_y[..., 1, :], frac[:, :, 0, None])  # (N, L, F)
        return encoded.reshape(*batch, -1)


def vectorised(encoding: HashEncoding) -> HashEncoding:
    """The same encoding (sharing its hash table parameter) on the vectorised torch path, unless it runs on
    tiny-cuda-nn."""
    if encoding.tcnn_encoding is not None:
        return encoding
    fast = VectorisedHashEncoding.__new__(VectorisedHashEncoding)
    fast.__dict__.update(encoding.__dict__)
    return fast


class ProposalDensityField(HashMLPDensityField):
    """nerfstudio's proposal density field (same parameters and state-dict names) on the vectorised hash grid."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.encoding = vectorised(self.encoding)
        if not self.use_linear:
            self.mlp_base[0] = self.encoding


def density_blob(positions: Tensor, strength: float, radius: float) -> Tensor:
    """DreamFusion's density blob: a pre-activation bias that starts the optimisation from a ball at the origin,
    `strength * (1 - |x| / radius)` (positive inside the ball, negative outside)."""
    return strength * (1.0 - positions.norm(dim=-1, keepdim=True) / radius)


class CoarseField(Field):
    """Density and albedo at a point: a multiresolution hash grid followed by one small MLP with 1 + 3 outputs."""

    def __init__(
        self,
        aabb: Tensor,
        num_levels: int = 16,
        min_res: int = 16,
        max_res: int = 512,
        log2_hashmap_size: int = 18,
        features_per_level: int = 2,
        hidden_dim: int = 64,
        num_layers: int = 2,
        blob_strength: float = 5.0,
        blob_radius: float = 0.5,
        implementation: Literal["tcnn", "torch"] = "tcnn",
    ) -> None:
        super().__init__()
        self.register_buffer("aabb", aabb.clone())
        self.blob_strength = blob_strength
        self.blob_radius = blob_radius
        self.encoding = VectorisedHashEncoding(
            num_levels=num_levels,
            min_res=min_res,
            max_res=max_res,
            log2_hashmap_size=log2_hashmap_size,
            features_per_level=features_per_level,
            implementation=implementation,
        )
        self.mlp = MLP(
            in_dim=self.encoding.get_out_dim(),
            num_layers=num_layers,
            layer_width=hidden_dim,
            out_dim=4,
            activation=nn.ReLU(),
            out_activation=None,
            implementation=implementation,
        )

    def raw(self, positions: Tensor) -> Tuple[Tensor, Tensor]:
        """Density (N.., 1) and albedo (N.., 3) at world positions, before any masking."""
        normalized = SceneBox.get_normalized_positions(positions, self.aabb)
        inside = ((normalized >= 0.0) & (normalized <= 1.0)).all(dim=-1, keepdim=True)
        flat = normalized.clamp(0.0, 1.0).reshape(-1, 3)
        hidden = self.mlp(self.encoding(flat)).reshape(*positions.shape[:-1], 4).float()
        pre_density = hidden[..., :1] + density_blob(positions, self.blob_strength, self.blob_radius)
        density = trunc_exp(pre_density) * inside
        albedo = torch.sigmoid(hidden[..., 1:])
        return density, albedo

    def density_at(self, positions: Tensor) -> Tensor:
        """Density (N.., 1) at world positions (for exports and the refine stage)."""
        return self.raw(positions)[0]

    def albedo_at(self, positions: Tensor) -> Tensor:
        """Albedo (N.., 3) in [0, 1] at world positions."""
        return self.raw(positions)[1]

    def get_density(self, ray_samples: RaySamples) -> Tuple[Tensor, Tensor]:
        return self.raw(ray_samples.frustums.get_positions())

    def get_outputs(self, ray_samples: RaySamples, density_embedding: Optional[Tensor] = None) -> Dict:
        assert density_embedding is not None
        return {FieldHeadNames.RGB: density_embedding}

    def forward_with_normals(self, ray_samples: RaySamples, create_graph: bool) -> Tuple[Tensor, Tensor, Tensor]:
        """Density, albedo and outward normals (minus the normalised density gradient) at the samples.
        `create_graph` lets losses on the normals reach the geometry (needed in training)."""
        positions = ray_samples.frustums.get_positions().detach().requires_grad_(True)
        with torch.enable_grad():
            density, albedo = self.raw(positions)
            gradient = torch.autograd.grad(density.sum(), positions, create_graph=create_graph)[0]
        normals = -torch.nn.functional.normalize(gradient, dim=-1, eps=1e-6)
        return density, albedo, normals
