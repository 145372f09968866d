"""Preprocessing of a photo: foreground, recentring, depth and caption.

`preprocess_image(photo, output_dir, ...)` writes the folder the coarse stage reads (see `pipeline`). Importing
this package loads neither transformers nor segment-anything; each model is imported where it is used.
"""

from single_image_nerf.preprocess.errors import PreprocessError
from single_image_nerf.preprocess.pipeline import PreprocessOptions, PreprocessResult, preprocess_image

__all__ = ["PreprocessError", "PreprocessOptions", "PreprocessResult", "preprocess_image"]
