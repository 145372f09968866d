"""single-image-nerf: a nerfstudio method that turns one photo of an object into a 360° 3D model."""

__version__ = "0.1.0"
