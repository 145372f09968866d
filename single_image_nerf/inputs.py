"""Checks of what the commands read, run before any work: every numeric option of a training config, the files of a
data folder (or the image `--data` names), and checkpoint files. Each problem is one `UserInputError` line that
names the input, what is wrong with it and how to fix it. docs/inputs.md is the inventory these checks implement.

Nothing here imports torch at module level, loads a model, or writes a file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from single_image_nerf.errors import UserInputError

FOLDER_IMAGE = "rgba.png"
PREPROCESS_FIX = "run sin-preprocess PHOTO --output data/NAME, which masks the object (SAM, or --mask-from grabcut)"
MIN_OBJECT_PIXELS = 16
"""A mask with fewer foreground pixels (alpha above one half) than this marks no object that can be recentred."""
MIN_IMAGE_SIDE = 16
"""The shorter side of a reference image must be at least this many pixels (as sin-preprocess requires)."""


# ------------------------------------------------------------------------------------------------ numeric options
@dataclass(frozen=True)
class Range:
    """The valid values of one numeric option: a number (or, with `pair`, an ordered (low, high) pair, or with
    `sequence`, a non-empty tuple, or with `empty` also an empty one, or with `single` also one number) from `low` to `high` (None: unbounded), ends included unless `open_low` /
    `open_high`; `integer` asks for whole numbers, `optional` also allows None. Floats must be finite."""

    low: Optional[float] = None
    high: Optional[float] = None
    integer: bool = False
    open_low: bool = False
    open_high: bool = False
    optional: bool = False
    pair: bool = False
    sequence: bool = False
    empty: bool = False
    single: bool = False

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            text = f"{kind} in {'(' if self.open_low else '['}{_num(self.low)}, {_num(self.high)}{')' if self.open_high else ']'}"
        elif self.low is not None:
            text = f"{kind} {'above' if self.open_low else 'of at least'} {_num(self.low)}"
        elif self.high is not None:
            text = f"{kind} {'below' if self.open_high else 'of at most'} {_num(self.high)}"
        else:
            text = f"{'an integer' if self.integer else 'a finite number'}"
        if self.pair:
            text = f"two values LOW HIGH, LOW <= HIGH, each {text}"
        elif self.sequence:
            text = f"one or more values, each {text}"
        return text + (" (or None)" if self.optional else "")

    def problem(self, value: Any) -> Optional[str]:
        """None when `value` is valid, else what is wrong with it."""
        if value is None:
            return None if self.optional else "is missing"
        if self.single and isinstance(value, (int, float)):
            value = (value,)
        if self.pair or self.sequence:
            if not isinstance(value, (tuple, list)) or not (value or self.empty):
                return "is not a list of numbers"
            if self.pair and len(value) != 2:
                return f"has {len(value)} values, not 2"
            for item in value:
                problem = self._one(item)
                if problem is not None:
                    return f"holds {item!r}, which {problem}"
            if self.pair and not value[0] <= value[1]:
                return "is not ordered (LOW is above HIGH)"
            return None
        return self._one(value)

    def _one(self, value: Any) -> Optional[str]:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "is not a number"
        if self.integer and not isinstance(value, int):
            return "is not an integer"
        if isinstance(value, float) and not math.isfinite(value):
            return "is not a finite number"
        below = value <= self.low if self.open_low else value < self.low if self.low is not None else False
        above = value >= self.high if self.open_high else value > self.high if self.high is not None else False
        return "is out of range" if below or above else None


def _num(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


COUNT = Range(1, None, integer=True)
STEPS = Range(0, None, integer=True)
SEED = Range(0, 2**32 - 1, integer=True)
WEIGHT = Range(0.0, 1e6)
FRACTION = Range(0.0, 1.0)
OPEN_FRACTION = Range(0.0, 1.0, open_low=True, open_high=True)
OPEN_LOW_FRACTION = Range(0.0, 1.0, open_low=True)
ANGLE_FOV = Range(0.0, 180.0, open_low=True, open_high=True)
LR = Range(0.0, 10.0, open_low=True)

NUMERIC_RULES: Dict[str, Range] = {
    # dataparser
    "SingleImageDataParserConfig.image_size": Range(8, 4096, integer=True),
    "SingleImageDataParserConfig.border": Range(0.0, 0.5, open_high=True),
    "SingleImageDataParserConfig.reference_azimuth": Range(-360.0, 360.0),
    "SingleImageDataParserConfig.reference_elevation": Range(-89.0, 89.0, optional=True),
    "SingleImageDataParserConfig.reference_radius": Range(0.0, 1000.0, open_low=True),
    "SingleImageDataParserConfig.reference_fov": ANGLE_FOV,
    "SingleImageDataParserConfig.scene_bound": Range(0.0, 100.0, open_low=True),
    # datamanagers
    "SingleImageDataManagerConfig.train_num_rays_per_batch": Range(1, 1 << 22, integer=True),
    "SingleImageDataManagerConfig.eval_num_rays_per_batch": Range(1, 1 << 22, integer=True),
    "RefineDataManagerConfig.reference_size": Range(0, 4096, integer=True),
    "NovelViewConfig.views_per_step": Range(1, 64, integer=True, sequence=True, single=True, optional=True),
    "NovelViewConfig.resolution": Range(8, 1024, integer=True, sequence=True, single=True, optional=True),
    "NovelViewConfig.stage_starts": Range(0.0, 1.0, open_low=True, open_high=True, sequence=True, empty=True,
                                          optional=True),
    "NovelViewConfig.initial_azimuth_half_width": Range(0.0, 180.0, optional=True),
    "NovelViewConfig.widen_start": FRACTION,
    "NovelViewConfig.widen_end": Range(0.0, 1.0, optional=True),
    "NovelViewConfig.elevation_range": Range(-90.0, 90.0, pair=True),
    "NovelViewConfig.radius_range": Range(0.0, 1000.0, open_low=True, pair=True, optional=True),
    "NovelViewConfig.fov_range": Range(0.0, 180.0, open_low=True, open_high=True, pair=True, optional=True),
    "NovelViewConfig.seed": SEED,
    # loss weights shared by both stages
    "SharedLossWeights.rgb_loss_mult": WEIGHT,
    "SharedLossWeights.mask_loss_mult": WEIGHT,
    "SharedLossWeights.depth_loss_mult": WEIGHT,
    "SharedLossWeights.opacity_loss_mult": WEIGHT,
    # coarse model
    "CoarseModelConfig.finite_difference_eps": Range(0.0, 1.0, open_low=True),
    "CoarseModelConfig.num_levels": Range(1, 32, integer=True),
    "CoarseModelConfig.max_res": Range(16, 1 << 16, integer=True),
    "CoarseModelConfig.log2_hashmap_size": Range(8, 24, integer=True),
    "CoarseModelConfig.hidden_dim": Range(1, 1024, integer=True),
    "CoarseModelConfig.num_proposal_samples_per_ray": Range(1, 1024, integer=True, sequence=True),
    "CoarseModelConfig.proposal_grid_resolutions": Range(2, 1024, integer=True, sequence=True),
    "CoarseModelConfig.num_nerf_samples_per_ray": Range(1, 4096, integer=True),
    "CoarseModelConfig.proposal_update_every": COUNT,
    "CoarseModelConfig.proposal_warmup_end": FRACTION,
    "CoarseModelConfig.proposal_weights_anneal_slope": Range(0.0, 1000.0),
    "CoarseModelConfig.proposal_weights_anneal_end": OPEN_LOW_FRACTION,
    "CoarseModelConfig.blob_strength": Range(0.0, 100.0),
    "CoarseModelConfig.blob_radius": Range(0.0, 10.0, open_low=True),
    "CoarseModelConfig.shading_start": Range(0.0, 1.0, optional=True),
    "CoarseModelConfig.textureless_ratio": FRACTION,
    "CoarseModelConfig.albedo_ratio": FRACTION,
    "CoarseModelConfig.ambient": FRACTION,
    "CoarseModelConfig.orientation_loss_mult": WEIGHT,
    "CoarseModelConfig.normal_smoothness_loss_mult": WEIGHT,
    "CoarseModelConfig.interlevel_loss_mult": WEIGHT,
    "CoarseModelConfig.seed": SEED,
    # refine model
    "RefineSplatModelConfig.densify_start": FRACTION,
    "RefineSplatModelConfig.densify_end": FRACTION,
    "RefineSplatModelConfig.screen_size_end": FRACTION,
    "RefineSplatModelConfig.sh_degree_every": OPEN_LOW_FRACTION,
    "RefineSplatModelConfig.num_downscales": Range(0, 8, integer=True),
    "RefineSplatModelConfig.seed_num_points": Range(1, 10_000_000, integer=True),
    "RefineSplatModelConfig.seed_reference_points": Range(0, 10_000_000, integer=True),
    "RefineSplatModelConfig.seed_reference_opacity": OPEN_FRACTION,
    "RefineSplatModelConfig.seed_reference_scale": Range(0.0, 100.0, open_low=True),
    "RefineSplatModelConfig.seed_visibility_tolerance": Range(0.0, 10.0),
    "RefineSplatModelConfig.seed_hidden_flatness": Range(0.0, 1.0, open_low=True),
    "RefineSplatModelConfig.seed_surface_search": Range(0.0, 10.0, open_low=True),
    "RefineSplatModelConfig.seed_density_level": Range(0.0, 1e6, open_low=True),
    "RefineSplatModelConfig.seed_grid_resolution": Range(8, 1024, integer=True),
    "RefineSplatModelConfig.seed_opacity": OPEN_FRACTION,
    "RefineSplatModelConfig.seed_scale_multiplier": Range(0.0, 100.0, open_low=True),
    "RefineSplatModelConfig.seed": SEED,
    "RefineSplatModelConfig.contextual_loss_mult": WEIGHT,
    "RefineSplatModelConfig.contextual_image_size": Range(32, 1024, integer=True),
    # guidance (any prior)
    "weight": Range(0.0, 1e6, optional=True),
    "guidance_scale": Range(0.0, 1000.0, optional=True),
    "front_threshold": Range(0.0, 180.0),
    "back_threshold": Range(0.0, 180.0),
    "overhead_threshold": Range(0.0, 90.0),
    "t_range": Range(0.0, 1.0, open_low=True, pair=True, optional=True),
    "t_range_end": Range(0.0, 1.0, open_low=True, pair=True, optional=True),
    "anneal_start": Range(0.0, 1.0, optional=True),
    "anneal_end": Range(0.0, 1.0, optional=True),
    "grad_clip": Range(0.0, None, open_low=True, optional=True),
    "resolution": Range(8, 2048, integer=True, optional=True),
    "seed": SEED,
    "supersample": Range(1, 8, integer=True),
    "background_color": Range(0.0, 1.0, sequence=True),
    "ClipGuidanceConfig.image_weight": WEIGHT,
    "ClipGuidanceConfig.text_weight": WEIGHT,
    "ClipGuidanceConfig.max_t": FRACTION,
    "ClipGuidanceConfig.background": FRACTION,
    # sin-export-mesh, sin-render-turntable, sin-evaluate, textual inversion
    "ExportMeshConfig.level": Range(None, None),
    "ExportMeshConfig.resolution": Range(8, 1024, integer=True),
    "ExportMeshConfig.texture_size": Range(16, 8192, integer=True),
    "ExportMeshConfig.chunk": Range(1, 1 << 24, integer=True),
    "ExportMeshConfig.max_faces": Range(4, 10_000_000, integer=True),
    "ExportMeshConfig.depth_views": Range(1, 1024, integer=True),
    "ExportMeshConfig.depth_resolution": Range(8, 4096, integer=True),
    "ExportMeshConfig.bake_views": Range(1, 1024, integer=True),
    "ExportMeshConfig.bake_resolution": Range(8, 4096, integer=True),
    "ExportMeshConfig.fit_steps": Range(0, 100_000, integer=True),
    "ExportMeshConfig.smooth_iterations": Range(0, 10_000, integer=True),
    "TurntableConfig.frames": Range(1, 3600, integer=True),
    "TurntableConfig.resolution": Range(8, 4096, integer=True),
    "TurntableConfig.fps": Range(1, 240, integer=True),
    "TurntableConfig.elevation": Range(-90.0, 90.0, optional=True),
    "TurntableConfig.radius": Range(0.0, 1000.0, open_low=True, optional=True),
    "TurntableConfig.fov": Range(0.0, 180.0, open_low=True, open_high=True, optional=True),
    "TurntableConfig.background": Range(0.0, 1.0, sequence=True),
    "EvaluateConfig.num_views": Range(0, 360, integer=True),
    "EvaluateConfig.elevation": Range(-90.0, 90.0, optional=True),
    "EvaluateConfig.resolution": Range(8, 4096, integer=True, optional=True),
    "EvaluateConfig.geometry_views": Range(0, 1000, integer=True),
    "EvaluateConfig.geometry_resolution": Range(8, 2048, integer=True),
    "EvaluateConfig.num_points": Range(1, 10_000_000, integer=True),
    "EvaluateConfig.f_score_threshold": Range(0.0, 100.0, open_low=True),
    "EvaluateConfig.supersample": Range(1, 8, integer=True),
    "EvaluateConfig.background": Range(0.0, 1.0, sequence=True),
    "EvaluateConfig.seed": SEED,
    "TextualInversionConfig.steps": Range(1, 1_000_000, integer=True),
    "TextualInversionConfig.learning_rate": LR,
    "TextualInversionConfig.batch_size": Range(1, 256, integer=True),
    "TextualInversionConfig.resolution": Range(8, 2048, integer=True, optional=True),
    "TextualInversionConfig.crop_scale": Range(0.0, 1.0, open_low=True, pair=True),
    "TextualInversionConfig.flip_probability": FRACTION,
    "TextualInversionConfig.jitter": FRACTION,
    "TextualInversionConfig.seed": SEED,
    # trainer (nerfstudio's fields that both stages rely on)
    "TrainerConfig.max_num_iterations": COUNT,
    "SingleImageTrainerConfig.max_num_iterations": Range(1, None, integer=True, optional=True),  # None: the recipe's
    "TrainerConfig.steps_per_save": COUNT,
    "TrainerConfig.steps_per_eval_batch": STEPS,
    "TrainerConfig.steps_per_eval_image": STEPS,
    "TrainerConfig.steps_per_eval_all_images": STEPS,
    "TrainerConfig.load_step": Range(0, None, integer=True, optional=True),
    # optimisers and schedules
    "AdamOptimizerConfig.lr": LR,
    "AdamOptimizerConfig.eps": Range(0.0, 1.0, open_low=True),
    "AdamOptimizerConfig.max_norm": Range(0.0, None, open_low=True, optional=True),
    "AdamOptimizerConfig.weight_decay": FRACTION,
    "FloatExponentialDecaySchedulerConfig.lr_pre_warmup": Range(0.0, 10.0),
    "FloatExponentialDecaySchedulerConfig.lr_final": Range(0.0, 10.0, open_low=True, optional=True),
    "FloatExponentialDecaySchedulerConfig.warmup_steps": STEPS,
    "FloatExponentialDecaySchedulerConfig.max_steps": Range(1, None, integer=True, optional=True),
    # the run's length (set from --max-num-iterations)
    "SingleImagePipelineConfig.run_steps": COUNT,
}
"""The valid values of every numeric option of both methods: 'Class.field' (the class that declares the field, or
a base class of the config) or a bare field name (for the priors' shared names). A field of a single_image_nerf
config without a rule here fails the inventory's test."""

NERFSTUDIO_CHECKED = ("TrainerConfig", "AdamOptimizerConfig")
"""nerfstudio classes whose numeric fields are checked (only those with rules); the rest of nerfstudio's options
(machine, logging, viewer, splatfacto's own settings) are nerfstudio's to handle."""


def flag(path: str) -> str:
    """The command-line flag of a dotted config path."""
    return "--" + path.replace("_", "-")


def rule_for(config: Any, name: str) -> Optional[Range]:
    """The rule of field `name` of `config` (by the classes of its MRO, then by the bare name)."""
    for cls in type(config).__mro__:
        rule = NUMERIC_RULES.get(f"{cls.__name__}.{name}")
        if rule is not None:
            return rule
    if type(config).__module__.startswith("single_image_nerf"):
        return NUMERIC_RULES.get(name)
    return None


def numeric_fields(config: Any, prefix: str = "") -> Iterator[Tuple[str, Any, str, Any]]:
    """(dotted path, config object, field name, value) of every number or tuple of numbers in a config tree,
    optimiser dictionaries included; nested configs are walked."""
    for item in dataclasses.fields(config):
        if item.name.startswith("_"):
            continue
        value = getattr(config, item.name, None)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield from numeric_fields(value, f"{prefix}{item.name}.")
        elif isinstance(value, dict):
            for key, group in value.items():
                if isinstance(group, dict):
                    for part, sub in group.items():
                        if dataclasses.is_dataclass(sub) and not isinstance(sub, type):
                            yield from numeric_fields(sub, f"{prefix}{item.name}.{key}.{part}.")
        elif _is_numeric(value, item.type):
            yield f"{prefix}{item.name}", config, item.name, value


def _is_numeric(value: Any, annotation: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    if isinstance(value, (tuple, list)) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                           for v in value):
        return True
    text = str(annotation)
    if isinstance(value, (tuple, list)) and not value:
        return ("float" in text or "int" in text) and "str" not in text
    return value is None and ("float" in text or "int" in text) and "Literal" not in text and "bool" not in text


def declared_by_project(config: Any, name: str) -> bool:
    """Whether field `name` of `config` is declared by a single_image_nerf class (its MRO's first declarer)."""
    for cls in type(config).__mro__:
        if name in cls.__dict__.get("__annotations__", {}):
            return cls.__module__.startswith("single_image_nerf")
    return False


def check_numbers(config: Any) -> None:
    """Every numeric option of a config (a training config, or a command's) against NUMERIC_RULES, and the rules
    that tie two options."""
    for path, owner, name, value in numeric_fields(config):
        rule = rule_for(owner, name)
        if rule is None:
            continue
        problem = rule.problem(value)
        if problem is not None:
            shown = " ".join(map(str, value)) if isinstance(value, (tuple, list)) else value
            raise UserInputError(f"{flag(path)} {shown} {problem}: give {rule.describe()}")
    model = getattr(getattr(config, "pipeline", None), "model", None)
    if model is not None and hasattr(model, "albedo_ratio") and hasattr(model, "textureless_ratio"):
        if model.albedo_ratio + model.textureless_ratio > 1.0:
            raise UserInputError(f"--pipeline.model.albedo-ratio {model.albedo_ratio} and --pipeline.model."
                                 f"textureless-ratio {model.textureless_ratio} add up to more than 1: they are shares "
                                 "of the training views, lower one")


# ---------------------------------------------------------------------------------------------------- data
def check_data(data: Path, fix: str = PREPROCESS_FIX) -> None:
    """The image or preprocessed folder `--data` names: readable, with an alpha channel that marks an object (not
    empty, not fully opaque), and, in a folder, a readable depth.npy, caption.txt and meta.json when present. A
    folder of several photos: every view by the same rules (its elevation too), each problem's fix to make the
    folder again from all the photos."""
    import numpy as np

    from single_image_nerf.data.reference_image import load_rgba
    from single_image_nerf.data.reference_views import view_entries
    from single_image_nerf.preprocess.views import REDO_VIEWS

    data = Path(data)
    folder = data if data.is_dir() and (data / FOLDER_IMAGE).exists() else None
    image = folder / FOLDER_IMAGE if folder is not None else data
    views = view_entries(folder) if folder is not None else None
    fix = REDO_VIEWS if views else fix
    if folder is not None and not image.is_file():
        raise UserInputError(f"{image} is not a file: {fix}")
    rgba = load_rgba(image, None if fix == PREPROCESS_FIX else fix)  # one line: missing, unreadable, alpha-less
    height, width = rgba.shape[:2]
    if min(height, width) < MIN_IMAGE_SIDE:
        raise UserInputError(f"{image} is {width}x{height} pixels: the reference image needs at least "
                             f"{MIN_IMAGE_SIDE} pixels on each side; give a larger image")
    alpha = rgba[..., 3]
    foreground = int((alpha > 0.5).sum())
    if foreground == alpha.size:
        raise UserInputError(f"{image} has an alpha channel that marks nothing (fully opaque), so the object's mask "
                             f"is unknown: {fix}")
    if foreground < MIN_OBJECT_PIXELS:
        what = ("is zero everywhere" if not (alpha > 0).any() else "exceeds one half nowhere" if not foreground
                else f"exceeds one half on {foreground} pixels only, fewer than {MIN_OBJECT_PIXELS}")
        raise UserInputError(f"{image}: the mask is empty (alpha {what}): give an image whose alpha marks the object, "
                             f"or {fix}")
    if folder is None:
        return
    meta = read_meta(folder)
    depth_path = folder / "depth.npy"
    if depth_path.exists():
        depth = read_depth(depth_path)
        if depth.shape != (height, width):
            raise UserInputError(f"{depth_path} has shape {depth.shape} but {image} is {(height, width)}: rerun "
                                 "sin-preprocess so that both come from the same image")
        if not np.isfinite(depth[alpha > 0.5]).any():
            raise UserInputError(f"{depth_path} holds no finite depth on the object: rerun sin-preprocess, or remove "
                                 "depth.npy to train without depth")
        convention = meta.get("depth_convention", "disparity")
        if convention not in (None, "disparity", "depth"):
            raise UserInputError(f"{folder / 'meta.json'}: depth_convention must be 'disparity' or 'depth', not "
                                 f"{convention!r}; rerun sin-preprocess")
    read_caption(folder / "caption.txt")
    for entry in (views or [])[1:]:  # a folder of several photos: every extra view, the same rules
        check_data(entry.folder, REDO_VIEWS)
        reference_elevation(entry.folder, None)


def reference_elevation(data: Path, override: Optional[float]) -> float:
    """The reference camera's elevation in degrees: `override` when given, else `elevation_deg` of the data folder's
    meta.json, else 0; one line if it is not a number in [-89, 89] (the orbit's limit)."""
    value, source = override, "--pipeline.datamanager.dataparser.reference-elevation"
    meta = Path(data) / "meta.json"
    if value is None and Path(data).is_dir() and meta.is_file():
        try:
            value, source = json.loads(meta.read_text()).get("elevation_deg"), f"{meta} elevation_deg"
        except (ValueError, AttributeError) as error:
            raise UserInputError(f"{meta} is not a valid JSON object ({error}): rerun the preprocessing") from None
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -89.0 <= value <= 89.0:
        fix = "" if override is not None else ": set it in meta.json, or rerun sin-preprocess with --elevation (or " \
            "--elevations)"
        raise UserInputError(f"reference elevation ({source}) must be a number of degrees in [-89, 89], got {value!r}"
                             f"{fix}")
    return float(value)


def read_text(path: Path, what: str) -> str:
    """A UTF-8 text file's contents, or one line saying why it cannot be read."""
    if path.is_dir():
        raise UserInputError(f"{path} is a folder, not a {what} file: remove it or rerun sin-preprocess")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UserInputError(f"{path} is not UTF-8 text (byte {error.start}): save it as UTF-8, or rerun "
                             "sin-preprocess") from None
    except OSError as error:
        raise UserInputError(f"cannot read {path}: {error.strerror or error}") from None


def read_caption(path: Path) -> Optional[str]:
    """caption.txt's text (None when absent or blank)."""
    if not path.exists():
        return None
    return read_text(path, "caption").strip() or None


def read_meta(folder: Path) -> Dict[str, Any]:
    """meta.json of a data folder as a dict ({} when absent)."""
    path = folder / "meta.json"
    if not path.exists():
        return {}
    try:
        meta = json.loads(read_text(path, "meta.json"))
    except ValueError as error:
        raise UserInputError(f"{path} is not valid JSON ({error}): rerun sin-preprocess") from None
    if not isinstance(meta, dict):
        raise UserInputError(f"{path} holds a JSON {type(meta).__name__}, not an object: rerun sin-preprocess")
    return meta


def read_depth(path: Path):
    """depth.npy as a float32 array, or one line saying why it cannot be used."""
    import numpy as np

    if path.is_dir():
        raise UserInputError(f"{path} is a folder, not a .npy array: remove it or rerun sin-preprocess")
    try:
        depth = np.load(path, allow_pickle=False)
        if not isinstance(depth, np.ndarray) or depth.dtype.kind not in "biuf":
            raise ValueError(f"a {getattr(depth, 'dtype', type(depth).__name__)} array, not numbers")
        depth = depth.astype(np.float32)
    except (OSError, ValueError, EOFError) as error:
        reason = str(error) or "the file is empty or cut short"
        raise UserInputError(f"{path} is not a readable .npy array of numbers ({reason}): rerun sin-preprocess, "
                             "or remove depth.npy to train without depth") from None
    return depth


def check_token(path: Path) -> None:
    """token.bin (textual inversion): a {token: embedding} file with one finite vector."""
    import torch

    fix = "learn it again with data_scripts/textual_inversion.py, or remove it"
    if path.is_dir():
        raise UserInputError(f"{path} is a folder, not a learned token: {fix}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pylint: disable=broad-except  # any unpickling failure means the same here
        reason = (str(error).splitlines() or [type(error).__name__])[0][:100] or "empty or cut short"
        raise UserInputError(f"{path} is not a readable token file ({reason}): {fix}") from None
    if not isinstance(state, dict) or len(state) != 1:
        raise UserInputError(f"{path} does not hold a single {{token: embedding}} entry: {fix}")
    (token, embedding), = state.items()
    if not isinstance(token, str) or not token.strip() or not isinstance(embedding, torch.Tensor):
        raise UserInputError(f"{path} does not hold a {{token: embedding}} entry: {fix}")
    if embedding.numel() == 0 or not torch.isfinite(embedding.float()).all():
        raise UserInputError(f"{path}: the embedding of {token} is empty or not finite: {fix}")


# ---------------------------------------------------------------------------------------------- checkpoints
_VERIFIED: Dict[Tuple[str, int, int], bool] = {}


def checkpoint_steps(checkpoint_dir: Path) -> list:
    """The steps of the `step-NNNNNNNNN.ckpt` files in a folder, ascending (other files are ignored)."""
    steps = []
    for path in checkpoint_dir.glob("step-*.ckpt"):
        number = path.stem[len("step-"):]
        if number.isdigit():
            steps.append(int(number))
    return sorted(steps)


def check_checkpoint_file(path: Path) -> None:
    """A step-*.ckpt that torch can read: not empty, a complete zip archive whose records match their CRCs
    (torch.save's format). A file cut short (copied incompletely) or another file is refused with one line."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if _VERIFIED.get(key):
        return
    fix = ("copy the run again, or move this file out of the folder to use an earlier checkpoint"
           if path.parent.is_dir() and len(list(path.parent.glob("step-*.ckpt"))) > 1 else
           "copy the run again, or train it again")
    if stat.st_size == 0:
        raise UserInputError(f"the checkpoint {path} is empty (0 bytes): {fix}")
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise UserInputError(f"the checkpoint {path} is cut short or is not a checkpoint ({error}): {fix}") from None
    if broken is not None:
        raise UserInputError(f"the checkpoint {path} is damaged (record {broken} fails its check): {fix}")
    _VERIFIED[key] = True


def check_checkpoint_folder(folder: Path) -> None:
    """A run's nerfstudio_models folder as nerfstudio's loaders read it: only step-NNNNNNNNN.ckpt files (they parse
    every name in it), and the latest checkpoint readable. An absent or empty folder passes (nothing to load)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    strays = sorted(p.name for p in folder.iterdir()
                    if not (p.name.startswith("step-") and p.name.endswith(".ckpt") and p.stem[5:].isdigit()))
    if strays:
        raise UserInputError(f"the checkpoint folder {folder} holds {strays[0]}, which is not a step-*.ckpt "
                             "checkpoint (nerfstudio's loaders read every name there): move it out of the folder")
    steps = checkpoint_steps(folder)
    if steps:
        check_checkpoint_file(folder / f"step-{steps[-1]:09d}.ckpt")


# ------------------------------------------------------------------------------------------- training configs
def check_training_config(config: Any) -> None:
    """What ns-train single-image-nerf / single-image-refine reads, before anything is written or loaded: every
    numeric option, the checkpoint --load-dir points at, the data of a coarse run (and the token the prior would
    read), and the latest checkpoint of the refine stage's coarse run."""
    check_numbers(config)
    load_dir = getattr(config, "load_dir", None)
    if load_dir is not None and Path(load_dir).is_dir():
        steps = checkpoint_steps(Path(load_dir))
        step = config.load_step if config.load_step is not None else (steps[-1] if steps else None)
        if step in steps:
            check_checkpoint_file(Path(load_dir) / f"step-{step:09d}.ckpt")
    pipeline = config.pipeline
    coarse = getattr(pipeline.model, "coarse_config", None)
    if coarse is not None and Path(coarse).is_file():
        checkpoints = Path(coarse).parent / getattr(config, "relative_model_dir", Path("nerfstudio_models"))
        steps = checkpoint_steps(checkpoints) if checkpoints.is_dir() else []
        if steps:
            check_checkpoint_file(checkpoints / f"step-{steps[-1]:09d}.ckpt")
    datamanager = getattr(pipeline, "datamanager", None)
    data = getattr(datamanager, "data", None) or getattr(getattr(datamanager, "dataparser", None), "data", None)
    coarse_stage = not hasattr(pipeline.model, "coarse_config")
    if coarse_stage and data is not None and hasattr(getattr(datamanager, "dataparser", None), "reference_fov"):
        check_data(Path(data))
        reference_elevation(Path(data), getattr(datamanager.dataparser, "reference_elevation", None))
        guidance = getattr(pipeline, "guidance", None)
        token = getattr(guidance, "token_path", None)
        if getattr(guidance, "use_learned_token", False):
            token = Path(token) if token is not None else Path(data) / "token.bin"
            if token.exists():
                check_token(token)


def numeric_inventory(configs: List[Any]) -> List[Tuple[str, str, Optional[Range]]]:
    """(dotted path, declaring rule key, rule) of every numeric option declared by the project in `configs`."""
    rows = []
    for config in configs:
        for path, owner, name, _ in numeric_fields(config):
            if declared_by_project(owner, name) or any(
                    cls.__name__ in NERFSTUDIO_CHECKED for cls in type(owner).__mro__):
                rows.append((path, f"{type(owner).__name__}.{name}", rule_for(owner, name)))
    return rows
