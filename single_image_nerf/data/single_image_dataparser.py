"""Dataparser: one RGBA image (or a preprocessed folder) becomes one reference camera on the orbit."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Type

import torch

from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.plugins.registry_dataparser import DataParserSpecification

from single_image_nerf.data.camera_sampling import orbit_cameras
from single_image_nerf.data.reference_image import read_reference
from single_image_nerf.data.reference_views import read_reference_views, view_entries
from single_image_nerf.errors import UserInputError
from single_image_nerf.inputs import check_data, reference_elevation  # noqa: F401  (reference_elevation: re-exported)


@dataclass
class SingleImageDataParserConfig(DataParserConfig):
    """An RGBA image (alpha is the mask) or a folder made by data_scripts/preprocess_image.py."""

    _target: Type = field(default_factory=lambda: SingleImageDataParser)
    data: Path = Path("demo/rgba.png")
    """RGBA image, or a preprocessed folder holding rgba.png (and optionally depth.npy, caption.txt, meta.json)."""
    image_size: int = 128
    """Side of the square reference image after recentring, in pixels."""
    recenter: bool = True
    """Recentre the object and scale it to fill the square minus the border; off uses the image as it is."""
    border: float = 0.15
    """Empty margin on each side of the recentred object, as a fraction of the image side."""
    reference_azimuth: float = 0.0
    """Azimuth of the reference camera in degrees (0: the object's front faces +X)."""
    reference_elevation: Optional[float] = None
    """Elevation of the reference camera in degrees above the XY plane; None: the data's meta.json `elevation_deg`
    (sin-preprocess --elevation), else 0. View-conditioned priors (zero123, magic123) read it from this camera."""
    reference_radius: float = 2.5
    """Distance of the reference camera from the origin."""
    reference_fov: float = 40.0
    """Vertical field of view of the reference camera in degrees."""
    scene_bound: float = 1.0
    """Half the side of the cubic scene box centred at the origin."""

    def validate(self) -> None:
        """Refuse impossible geometry with one line each."""
        if not 0.0 < self.reference_fov < 180.0:
            raise UserInputError(f"reference fov must lie in (0, 180) degrees, got {self.reference_fov}")
        if self.reference_radius <= 0.0:
            raise UserInputError(f"reference radius must be positive, got {self.reference_radius}")
        if not 0.0 <= self.border < 0.5:
            raise UserInputError(f"border must lie in [0, 0.5), got {self.border}")
        if self.image_size < 8:
            raise UserInputError(f"image size must be at least 8 pixels, got {self.image_size}")
        if self.scene_bound <= 0.0:
            raise UserInputError(f"scene bound must be positive, got {self.scene_bound}")
        if self.reference_radius <= self.scene_bound * 3**0.5:
            raise UserInputError(
                f"the reference camera (radius {self.reference_radius}) sits inside the scene box (bound "
                f"{self.scene_bound}): use a radius above {self.scene_bound * 3**0.5:.2f}"
            )


class SingleImageDataParser(DataParser):
    """Every split holds the same single reference view; the novel views come from the datamanager."""

    config: SingleImageDataParserConfig
    downscale_factor: int = 1

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        config = self.config
        config.validate()
        check_data(Path(config.data))  # every file of the data, one line for each problem (docs/inputs.md)
        view = read_reference(Path(config.data), config.image_size, config.border, config.recenter)
        entries = view_entries(Path(config.data))  # several photos: every view cut alike (data/reference_views.py)
        views = read_reference_views(entries, config.image_size, config.border, config.recenter) if entries else []
        if views:
            view.rgba, view.depth = views[0].rgba, views[0].depth
        size = view.rgba.shape[0]
        cameras = self._camera(0.0, reference_elevation(Path(config.data), config.reference_elevation), size)
        bound = config.scene_bound
        metadata = {
            "rgba": view.rgba,
            "depth": None if view.depth is None else torch.from_numpy(view.depth),
            "caption": view.caption,
            "data_dir": view.data_dir,
        }
        if views:  # main first; absent for one photo
            elevations = [reference_elevation(Path(config.data), config.reference_elevation)] + [
                reference_elevation(v.entry.folder, None) for v in views[1:]]
            metadata["reference_views"] = [
                {"rgba": v.rgba, "depth": None if v.depth is None else torch.from_numpy(v.depth),
                 "camera": cameras if index == 0 else self._camera(v.entry.azimuth, elevation, size),
                 "azimuth": config.reference_azimuth + v.entry.azimuth, "elevation": elevation,
                 "folder": v.entry.folder}
                for index, (v, elevation) in enumerate(zip(views, elevations))
            ]
        return DataparserOutputs(
            image_filenames=[Path(config.data)],
            cameras=cameras,
            alpha_color=None,
            scene_box=SceneBox(aabb=torch.tensor([[-bound] * 3, [bound] * 3], dtype=torch.float32)),
            metadata=metadata,
        )

    def _camera(self, azimuth: float, elevation: float, size: int):
        """The orbit camera `azimuth` degrees from the reference azimuth, at `elevation`."""
        config = self.config
        return orbit_cameras(
            azimuth=torch.tensor([config.reference_azimuth + azimuth]),
            elevation=torch.tensor([elevation]),
            radius=torch.tensor([config.reference_radius]),
            fov=torch.tensor([config.reference_fov]),
            width=size,
            height=size,
            reference_azimuth=config.reference_azimuth,
        )


single_image_dataparser = DataParserSpecification(
    config=SingleImageDataParserConfig(),
    description="One RGBA image (alpha = mask) or a folder made by data_scripts/preprocess_image.py.",
)
"""Registered as the `single-image` dataparser (entry point group nerfstudio.dataparser_configs)."""
