"""The reference view as a nerfstudio dataset: RGBA from memory (already recentred), plus depth when present."""

from __future__ import annotations

from typing import Dict

import numpy as np
import torch

from nerfstudio.data.datasets.base_dataset import InputDataset


class SingleImageDataset(InputDataset):
    """Serves the recentred RGBA held in the dataparser's metadata; alpha stays as the fourth channel."""

    def get_numpy_image(self, image_idx: int) -> np.ndarray:
        rgba = self.metadata["rgba"]
        return np.round(rgba * 255.0).astype(np.uint8)

    def get_image_float32(self, image_idx: int) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.metadata["rgba"], dtype=np.float32))

    def get_metadata(self, data: Dict) -> Dict:
        depth = self.metadata.get("depth")
        if depth is None:
            return {}
        return {"depth": depth[..., None]}
