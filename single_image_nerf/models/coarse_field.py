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

from single_image_nerf.errors import UserInputError

NormalsMode = Literal["auto", "analytic", "finite-difference"]
"""How the field's normals are taken: carried forward analytically where the field allows it ("auto" falls back to
finite differences elsewhere), or always by central differences of the density."""

TCNN_PARAMETERS = ("encoding.tcnn_encoding.params", "mlp.tcnn_encoding.params")
"""State-dict keys (under the field's prefix) of tiny-cuda-nn's flat parameter vectors of the grid and the MLP."""

TCNN_CHECKPOINT_ERROR = ("it was trained with tiny-cuda-nn, which needs CUDA and tiny-cuda-nn installed to load; "
                         "load it on such a machine, or retrain with --pipeline.model.implementation torch for a "
                         "run that loads anywhere")
"""Why a tiny-cuda-nn checkpoint cannot load into a pure-torch field, and what to do."""

HASH_PRIMES_INT32 = (1, 2654435761 - 2**32, 805459861)
"""Instant-NGP's spatial hash primes as int32 (two's complement): the products wrap modulo 2^32 exactly like the
uint32 arithmetic of tiny-cuda-nn, and their low bits equal those of nerfstudio's int64 products."""


class _WeightedLookup(torch.autograd.Function):
    """Rows `sum_c weights[:, c] * table[index[:, c]]` by one embedding_bag; its backward accumulates into the
    table's gradient with one index_add (torch's own embedding_bag backward sorts the indices and is several
    times slower on the CPU). No gradient to the weights: used where the positions need none."""

    @staticmethod
    def forward(ctx, table: Tensor, index: Tensor, weights: Tensor) -> Tensor:
        ctx.save_for_backward(index, weights)
        ctx.table_shape = table.shape
        return F.embedding_bag(index, table, per_sample_weights=weights, mode="sum")

    @staticmethod
    def backward(ctx, grad: Tensor):
        index, weights = ctx.saved_tensors
        rows = (weights[..., None] * grad[:, None, :]).reshape(-1, grad.shape[-1])
        grad_table = grad.new_zeros(ctx.table_shape).index_add_(0, index.reshape(-1).long(), rows)
        return grad_table, None, None


def trilinear_weights(frac: Tensor) -> Tensor:
    """Weights (N, L, 8) of the 8 corners (x, y, z order) of each level's cell for fractions (N, L, 3)."""
    x, y, z = torch.stack([1.0 - frac, frac], dim=-1).unbind(2)  # 3 x (N, L, 2): the two corners per axis
    yz = y[..., :, None] * z[..., None, :]
    return (x[..., :, None, None] * yz[..., None, :, :]).flatten(-3)


class VectorisedHashEncoding(HashEncoding):
    """nerfstudio's HashEncoding (same parameters, same hash function, same trilinear interpolation) with a faster
    pure-torch path: the 8 corners of every level are hashed at once in int32 (the two corners per axis share one
    product), the features of all levels and corners are fetched by one gather, and the interpolation is three
    lerps. Without autograd the gather and the weighting are fused in one `embedding_bag`. tiny-cuda-nn is used
    unchanged when it is installed and asked for."""

    def _index_layout(self, device: torch.device) -> Tuple[int, Tensor, Tensor, Tensor]:
        """Per level: the integer strides of the three axes, the mask and the table offset of the level (added to
        the x term). Levels whose (resolution + 2)^3 vertices fit the table (the coarse ones, a prefix since the
        resolutions grow) are indexed densely, `x + y R + z R^2` with R = resolution + 2, as tiny-cuda-nn does;
        the others go through the spatial hash. Returns the number of dense levels and the three (L, 3, 1)
        int32 tensors."""
        cache = self.__dict__.get("_layout_cache")
        if cache is not None and cache[0] == device:
            return cache[1]
        size = self.hash_table_size
        resolutions = [int(s) for s in self.scalings.tolist()]
        dense = 0
        while dense < len(resolutions) and (resolutions[dense] + 2) ** 3 <= size:
            dense += 1
        strides, masks, offsets = [], [], []
        for level, resolution in enumerate(resolutions):
            side = resolution + 2
            strides.append([1, side, side * side] if level < dense else list(HASH_PRIMES_INT32))
            masks.append([-1] * 3 if level < dense else [size - 1] * 3)
            offsets.append([level * size, 0, 0])
        as_tensor = lambda rows: torch.tensor(rows, dtype=torch.int32, device=device)[..., None]  # noqa: E731
        layout = (dense, as_tensor(strides), as_tensor(masks), as_tensor(offsets))
        self.__dict__["_layout_cache"] = (device, layout)
        return layout

    def corner_indices(self, points: Tensor) -> Tuple[Tensor, Tensor]:
        """Flat int32 table rows (N, L, 2, 2, 2) of the 8 corners of every level, and the fractions (N, L, 3)."""
        scaled = points[:, None, :] * self.scalings.to(points)[:, None]  # (N, L, 3)
        floor = torch.floor(scaled)
        frac = scaled - floor
        dense, strides, masks, offsets = self._index_layout(points.device)
        low = floor.to(torch.int32)[..., None] * strides  # (N, L, 3, 1): the corner at floor along each axis
        both = torch.cat([low, low + strides], dim=-1)  # (N, L, 3, 2): floor and floor + 1
        # Masking each axis term before the xor equals masking the xor; the level's table offset (a multiple of
        # the power-of-two table size) lies above the mask and so passes through the xor (or the sum) unchanged.
        both = (both & masks) + offsets
        index = torch.empty(points.shape[0], self.num_levels, 2, 2, 2, dtype=torch.int32, device=points.device)
        if dense > 0:
            terms = both[:, :dense]
            torch.add(terms[:, :, 0, :, None, None] + terms[:, :, 1, None, :, None], terms[:, :, 2, None, None, :],
                      out=index[:, :dense])
        if dense < self.num_levels:
            terms = both[:, dense:]
            torch.bitwise_xor(terms[:, :, 0, :, None, None] ^ terms[:, :, 1, None, :, None],
                              terms[:, :, 2, None, None, :], out=index[:, dense:])
        return index, frac

    def pytorch_fwd(self, in_tensor: Tensor) -> Tensor:
        assert in_tensor.shape[-1] == 3
        batch = in_tensor.shape[:-1]
        points = in_tensor.reshape(-1, 3)
        index, frac = self.corner_indices(points)
        if not (torch.is_grad_enabled() and in_tensor.requires_grad):
            # No gradient to the positions (all but autograd's normals): the gather and the weighting are fused in
            # one embedding_bag, whose backward accumulates straight into the table's gradient.
            weights = trilinear_weights(frac).view(-1, 8)
            encoded = _WeightedLookup.apply(self.hash_table, index.view(-1, 8), weights)
            return encoded.reshape(*batch, -1)
        corners = self.hash_table.index_select(0, index.view(-1).long()).view(*frac.shape[:2], 2, 2, 2, self.features_per_level)
        along_z = torch.lerp(corners[..., 0, :], corners[..., 1, :], frac[:, :, 2, None, None, None])
        along_y = torch.lerp(along_z[..., 0, :], along_z[..., 1, :], frac[:, :, 1, None, None])
        encoded = torch.lerp(along_y[..., 0, :], along_y[..., 1, :], frac[:, :, 0, None])  # (N, L, F)
        return encoded.reshape(*batch, -1)

    def encode_with_jacobian(self, points: Tensor) -> Tuple[Tensor, Tensor]:
        """Encoding (N, L F) of points (N, 3) in [0, 1]^3 and its derivatives (3, N, L F) along x, y, z, from one
        gather of the corners: the derivative of a trilinear interpolation along an axis is the interpolation, over
        the other two axes, of the differences across that axis. Both reach the table with first-order autograd,
        so normals need no double backward."""
        index, frac = self.corner_indices(points)
        corners = self.hash_table.index_select(0, index.view(-1).long()).view(*frac.shape[:2], 2, 2, 2,
                                                                                self.features_per_level)
        fx, fy, fz = frac[:, :, 0, None], frac[:, :, 1, None, None], frac[:, :, 2, None, None, None]
        # unbind rather than slicing: the backward of each slice would fill a whole zero tensor.
        low_z, high_z = corners.unbind(-2)  # (N, L, 2, 2, F): x, y, feature
        along_z0, along_z1 = torch.lerp(low_z, high_z, fz).unbind(-2)  # (N, L, 2, F): x, feature
        across_z0, across_z1 = (high_z - low_z).unbind(-2)
        along_y0, along_y1 = torch.lerp(along_z0, along_z1, fy).unbind(-2)  # (N, L, F)
        across_y0, across_y1 = (along_z1 - along_z0).unbind(-2)
        across_zy0, across_zy1 = torch.lerp(across_z0, across_z1, fy).unbind(-2)
        encoded = torch.lerp(along_y0, along_y1, fx)
        derivatives = torch.stack([  # (3, N, L, F), along the scaled positions
            along_y1 - along_y0,
            torch.lerp(across_y0, across_y1, fx),
            torch.lerp(across_zy0, across_zy1, fx),
        ])
        derivatives = derivatives * self.scalings.to(points)[:, None]
        return encoded.reshape(points.shape[0], -1), derivatives.reshape(3, points.shape[0], -1)


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
        normals: NormalsMode = "auto",
        finite_difference_eps: float = 0.005,
    ) -> None:
        super().__init__()
        if normals not in ("auto", "analytic", "finite-difference"):
            raise UserInputError(f"unknown normals {normals!r}: use auto, analytic or finite-difference")
        if not finite_difference_eps > 0.0:
            raise UserInputError(f"finite-difference-eps must be positive, not {finite_difference_eps}")
        self.register_buffer("aabb", aabb.clone())
        self.blob_strength = blob_strength
        self.blob_radius = blob_radius
        self.normals = normals
        self.finite_difference_eps = finite_difference_eps
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
        self.normals_route()  # refuse normals="analytic" on a field without the carried-forward gradient now

    def pre_activation(self, positions: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Pre-activation density (N.., 1) with the blob, albedo logits (N.., 3) and whether each point lies in the
        scene box (N.., 1), at world positions."""
        normalized = SceneBox.get_normalized_positions(positions, self.aabb)
        inside = ((normalized >= 0.0) & (normalized <= 1.0)).all(dim=-1, keepdim=True)
        flat = normalized.clamp(0.0, 1.0).reshape(-1, 3)
        hidden = self.mlp(self.encoding(flat)).reshape(*positions.shape[:-1], 4).float()
        pre_density = hidden[..., :1] + density_blob(positions, self.blob_strength, self.blob_radius)
        return pre_density, hidden[..., 1:], inside

    def raw(self, positions: Tensor) -> Tuple[Tensor, Tensor]:
        """Density (N.., 1) and albedo (N.., 3) at world positions, before any masking."""
        pre_density, albedo_logits, inside = self.pre_activation(positions)
        return trunc_exp(pre_density) * inside, torch.sigmoid(albedo_logits)

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
        """Density, albedo and outward normals (minus the normalised density gradient, zero outside the box) at the
        samples. Both routes reach the field's parameters with first-order autograd alone; `create_graph` False
        (renders outside training) returns the normals detached."""
        positions = ray_samples.frustums.get_positions()
        if self.normals_route() == "analytic":
            density, albedo, normals = self.raw_with_normals(positions)
        else:
            density, albedo, normals = self.raw_with_finite_difference_normals(positions)
        return density, albedo, normals if create_graph else normals.detach()

    def uses_tcnn(self) -> bool:
        """Whether the grid or the MLP is a tiny-cuda-nn module."""
        return any(getattr(module, "tcnn_encoding", None) is not None for module in (self.encoding, self.mlp))

    def has_analytic_gradient(self) -> bool:
        """Whether the density gradient can be carried forward alongside the field (the torch hash grid and a ReLU
        MLP without skips); a tiny-cuda-nn part has no double backward and takes finite differences instead."""
        mlp = self.mlp
        return (isinstance(self.encoding, VectorisedHashEncoding) and self.encoding.tcnn_encoding is None
                and isinstance(mlp, MLP) and mlp.tcnn_encoding is None and isinstance(mlp.activation, nn.ReLU)
                and not mlp._skip_connections and mlp.out_activation is None)  # pylint: disable=protected-access

    def normals_route(self) -> Literal["analytic", "finite-difference"]:
        """The route the normals take with this field and the `normals` setting."""
        if self.normals == "finite-difference":
            return "finite-difference"
        if self.has_analytic_gradient():
            return "analytic"
        if self.normals == "analytic":
            raise UserInputError("normals 'analytic' need the pure-torch hash grid and MLP (tiny-cuda-nn has no "
                                 "double backward): pass --pipeline.model.normals auto (finite differences here) "
                                 "or --pipeline.model.implementation torch")
        return "finite-difference"

    def raw_with_finite_difference_normals(self, positions: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """`raw` plus outward normals from central differences of the pre-activation density along the three axes
        (threestudio's finite-difference normals), one field evaluation of the 7 points per sample. The step is
        `finite_difference_eps` of the box's side per axis; only the field's first-order gradient is needed, so
        any backend (tiny-cuda-nn included) trains through them."""
        step = self.finite_difference_eps * (self.aabb[1] - self.aabb[0]).to(positions)  # (3,)
        offsets = torch.cat([torch.diag(step), -torch.diag(step)])  # +x, +y, +z, -x, -y, -z
        points = torch.cat([positions[..., None, :], positions[..., None, :] + offsets], dim=-2)  # (N.., 7, 3)
        pre_density, albedo_logits, inside = self.pre_activation(points)
        pre_density = pre_density[..., 0]  # (N.., 7)
        gradient = (pre_density[..., 1:4] - pre_density[..., 4:7]) / (2.0 * step)
        inside = inside[..., 0, :]
        density = trunc_exp(pre_density[..., :1]) * inside
        albedo = torch.sigmoid(albedo_logits[..., 0, :])
        normals = -F.normalize(gradient, dim=-1, eps=1e-6) * inside
        return density, albedo, normals

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        """Refuse, with one line, a checkpoint whose grid and MLP are of the other backend: loading it with
        nerfstudio's non-strict fallback would leave the field at its random initialisation without a word."""
        from_tcnn = any(prefix + key in state_dict for key in TCNN_PARAMETERS)
        from_torch = prefix + "encoding.hash_table" in state_dict
        if from_tcnn and not self.uses_tcnn():
            raise UserInputError(f"cannot load this checkpoint here: {TCNN_CHECKPOINT_ERROR}")
        if from_torch and self.uses_tcnn():
            raise UserInputError("cannot load this checkpoint: it holds the pure-torch hash grid but the model was "
                                 "built with tiny-cuda-nn; load it with --pipeline.model.implementation torch")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def raw_with_normals(self, positions: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """`raw` plus outward normals from the density gradient carried forward through the hash grid and the MLP
        (forward-mode differentiation by hand): autograd's normals, differentiable with first-order autograd
        alone, at a fraction of the cost of a double backward."""
        normalized = SceneBox.get_normalized_positions(positions, self.aabb)
        inside = ((normalized >= 0.0) & (normalized <= 1.0)).all(dim=-1, keepdim=True)
        flat = normalized.clamp(0.0, 1.0).reshape(-1, 3)
        hidden, tangent = self.encoding.encode_with_jacobian(flat)  # (M, D), (3, M, D)
        layers = self.mlp.layers
        for index, layer in enumerate(layers):
            hidden = layer(hidden)
            tangent = tangent @ layer.weight.t()
            if index < len(layers) - 1:
                active = (hidden > 0).to(hidden.dtype)
                hidden = hidden * active
                tangent = tangent * active
        hidden = hidden.reshape(*positions.shape[:-1], 4).float()
        # d(pre-density)/d(world position): the MLP's along the normalised axes over the box's size, plus the blob's.
        gradient = tangent[..., 0].t().reshape(positions.shape).float() / (self.aabb[1] - self.aabb[0])
        gradient = gradient - self.blob_strength / self.blob_radius * F.normalize(positions, dim=-1, eps=1e-12)
        pre_density = hidden[..., :1] + density_blob(positions, self.blob_strength, self.blob_radius)
        density = trunc_exp(pre_density) * inside
        albedo = torch.sigmoid(hidden[..., 1:])
        normals = -F.normalize(gradient, dim=-1, eps=1e-6) * inside
        return density, albedo, normals
