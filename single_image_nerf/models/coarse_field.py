"""Hash-grid field of density and albedo (tiny-cuda-nn when installed, nerfstudio's pure-torch grid otherwise)."""

from __future__ import annotations

from typing import Dict, Literal, Optional, Tuple

import torch
from torch import Tensor, nn

from nerfstudio.cameras.rays import RaySamples
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.field_components.activations import trunc_exp
from nerfstudio.field_components.encodings import HashEncoding
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.field_components.mlp import MLP
from nerfstudio.fields.base_field import Field


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
        self.encoding = HashEncoding(
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
