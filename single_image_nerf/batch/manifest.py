"""What `sin-batch` runs: one row per object, read from a folder of photos, a glob, a single photo, or a CSV/JSONL
manifest whose rows may override the run's options for their object.

Manifest columns (CSV header or JSON keys): `image` (required; relative paths are read from the manifest's folder)
and, all optional, `name` (the object's folder under the output; default: the image's stem), `caption` (given to
sin-preprocess instead of a captioning model), `prompt` (the Stable Diffusion prior's prompt), `guidance` (a prior
name: `stable-diffusion`, `none`, ...), `steps` (coarse steps), `refine_steps`, `mask_from` (`auto`, `alpha`, `sam`,
`grabcut`) and `depth` (true/false). An empty cell means "not given". Several photos of one object: `image` holds
their paths (CSV: separated by `;`; JSONL: a list), the main photo first, and `azimuths` one angle per photo (CSV:
separated by `;` or spaces; JSONL: a list), optionally `elevations` alike (sin-preprocess --azimuths/--elevations).
Pure Python: no torch, no Ray.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from single_image_nerf.errors import UserInputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif")
"""Files a folder or a glob contributes (sin-preprocess reads these)."""
MASK_SOURCES = ("auto", "alpha", "sam", "grabcut")
"""Values of `mask_from` (sin-preprocess --mask-from)."""


@dataclass(frozen=True)
class ObjectRow:
    """One object as the manifest gives it; None means "the run's default"."""

    name: str
    """Folder of the object under the output (letters, digits, '.', '_' and '-')."""
    image: str
    """Absolute path of the photo."""
    caption: Optional[str] = None
    """Caption written by preprocessing instead of one from the captioning model."""
    prompt: Optional[str] = None
    """Prompt of the Stable Diffusion prior (default: the caption)."""
    guidance: Optional[str] = None
    """Prior of both training stages (default: the project's default prior)."""
    steps: Optional[int] = None
    """Coarse steps."""
    refine_steps: Optional[int] = None
    """Refine steps."""
    mask_from: Optional[str] = None
    """Foreground source of preprocessing."""
    depth: Optional[bool] = None
    """Whether preprocessing estimates depth."""
    extra_images: Tuple[str, ...] = ()
    """Absolute paths of the object's other photos (several photos of one object), after the main `image`."""
    azimuths: Optional[Tuple[float, ...]] = None
    """Azimuth of each photo's camera in degrees, the main photo's first (several photos)."""
    elevations: Optional[Tuple[float, ...]] = None
    """Elevation of each photo's camera in degrees (several photos; default: the same for all)."""

    def overrides(self) -> Dict[str, object]:
        """The options this row sets (those not None), besides its name and photos."""
        return {k: v for k, v in asdict(self).items()
                if k not in ("name", "image", "extra_images", "azimuths", "elevations") and v is not None}


COLUMNS = tuple(f.name for f in fields(ObjectRow))
PHOTOS_EXAMPLE = "front.jpg;back.jpg with azimuths 0;180"
"""How a CSV cell names several photos of one object (shown in the lines that hint at it)."""


def safe_name(text: str) -> str:
    """`text` as a folder name: runs of other characters than letters, digits, '.', '_' and '-' become one '-'."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return name or "object"


def _parse_bool(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "y", "on"):
        return True
    if text in ("0", "false", "no", "n", "off"):
        return False
    raise UserInputError(f"{where}: depth must be true or false, got {value!r}")


def _parse_steps(value: object, column: str, where: str) -> int:
    try:
        steps = int(str(value).strip())
    except ValueError:
        steps = 0
    if steps <= 0:
        raise UserInputError(f"{where}: {column} must be a positive integer, got {value!r}")
    return steps


def _parse_path(value: object, base: Path, where: str) -> str:
    try:
        image = Path(str(value).strip()).expanduser()
        return str((image if image.is_absolute() else base / image).resolve())
    except (ValueError, OSError, RuntimeError) as error:  # a NUL character, a symlink loop
        raise UserInputError(f"{where}: image {str(value)[:80]!r} is not a usable path ({error})") from None


def _split(value: object, separators: str) -> List[object]:
    """A JSON list as it is, or a cell's text split at `separators` (empty parts dropped)."""
    if isinstance(value, list):
        return value
    return [part for part in re.split(f"[{separators}]", str(value)) if part.strip()]


TEXT_COLUMNS = ("name", "image", "caption", "prompt", "guidance", "mask_from")
"""Columns whose values are text (in JSONL, strings; `image` also a list of strings)."""


def _check_text(values: Dict[str, object], where: str) -> None:
    """Refuses a JSON value that is not text where text is read (a number, true/false, an object or a list; in
    `image`'s list, any item but a string): it would become a path or a caption the user never wrote."""
    for column in TEXT_COLUMNS:
        value = values.get(column)
        items = value if column == "image" and isinstance(value, list) else [value]
        for position, item in enumerate(items):
            if item is None and not isinstance(value, list) or isinstance(item, str):
                continue
            what = "null" if item is None else _json_kind(item)
            at = f"item {position + 1} of '{column}'" if isinstance(value, list) else f"'{column}'"
            fix = ('give each photo\'s path as a string: "image": "mug.jpg", or "image": ["front.jpg", "back.jpg"]'
                   if column == "image" else f'give it as a string: "{column}": "..."')
            raise UserInputError(f"{where}: {at} is {what}, not text; {fix}")


def _json_kind(value: object) -> str:
    """How JSON names a value's type, with an article: 'a number', 'an object', ..."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    return {dict: "an object", list: "a list"}.get(type(value), f"a {type(value).__name__}")


def _parse_angles(value: object, column: str, where: str) -> Tuple[float, ...]:
    try:
        return tuple(float(str(part).strip()) for part in _split(value, r";\s"))
    except ValueError:
        raise UserInputError(f"{where}: {column} must be numbers of degrees, one per photo (e.g. 0;180), got "
                             f"{value!r}") from None


def row_from_mapping(values: Dict[str, object], base: Path, where: str) -> ObjectRow:
    """One manifest row (column -> value) as an ObjectRow; relative image paths are taken from `base`."""
    unknown = sorted(set(values) - set(COLUMNS))
    if unknown:
        raise UserInputError(f"{where}: unknown column {unknown[0]!r} (known: {', '.join(COLUMNS)})")
    _check_text(values, where)
    given = {k: v for k, v in values.items() if v is not None and not (isinstance(v, str) and not v.strip())}
    if "image" not in given:
        raise UserInputError(f"{where}: no image given (every row needs an 'image' column)")
    images = [_parse_path(value, base, where) for value in _split(given["image"], ";")]
    if not images:
        raise UserInputError(f"{where}: no image given (every row needs an 'image' column)")
    options: Dict[str, object] = {}
    for column in ("azimuths", "elevations"):
        if column in given:
            options[column] = _parse_angles(given[column], column, where)
    if len(images) > 1 or "azimuths" in options:
        from single_image_nerf.preprocess.errors import PreprocessError
        from single_image_nerf.preprocess.views import relative_azimuths, view_elevations

        try:  # the rules of sin-preprocess, checked before anything runs
            relative_azimuths(images, options.get("azimuths"))
            view_elevations(len(images), 0.0, options.get("elevations"))
        except PreprocessError as error:
            comma = len(images) == 1 and "," in str(given["image"])
            hint = f" (photos in one cell are separated by ';', not ',': {PHOTOS_EXAMPLE})" if comma else ""
            raise UserInputError(f"{where}: {error}{hint}") from None
    for column in ("caption", "prompt", "guidance"):
        if column in given:
            options[column] = str(given[column]).strip()
    for column in ("steps", "refine_steps"):
        if column in given:
            options[column] = _parse_steps(given[column], column, where)
    if "mask_from" in given:
        mask_from = str(given["mask_from"]).strip()
        if mask_from not in MASK_SOURCES:
            raise UserInputError(f"{where}: mask_from must be one of {', '.join(MASK_SOURCES)}, got {mask_from!r}")
        options["mask_from"] = mask_from
    if "depth" in given:
        options["depth"] = _parse_bool(given["depth"], where)
    name = safe_name(str(given.get("name") or Path(images[0]).stem))
    return ObjectRow(name=name, image=images[0], extra_images=tuple(images[1:]), **options)


MANIFEST_SUFFIXES = {".csv": "CSV", ".jsonl": "JSONL", ".ndjson": "JSONL"}
"""Manifest files, by suffix: CSV (a header line names the columns) or JSON Lines (one object per line)."""


def _manifest_text(path: Path) -> str:
    """The text of a manifest, or one UserInputError line saying why it cannot be read: not readable (permissions, a
    folder), binary (NUL bytes: a spreadsheet, an image, an archive), UTF-16, not UTF-8, or empty. A UTF-8 byte-order
    mark (as spreadsheet programs write) is dropped."""
    kind = MANIFEST_SUFFIXES[path.suffix.lower()]
    save_as = f"save it as {kind} text in UTF-8 (a spreadsheet's 'CSV UTF-8' export)" if kind == "CSV" else \
        "save it as UTF-8 text, one JSON object per line"
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserInputError(f"{path}: cannot read the manifest ({error.strerror or type(error).__name__}); check "
                             "its permissions") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UserInputError(f"{path}: the manifest is UTF-16 text, not UTF-8; {save_as}")
    if b"\0" in data:
        raise UserInputError(f"{path}: the manifest is a binary file, not {kind} text; {save_as}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise UserInputError(f"{path}:{line}: the manifest is not UTF-8 text (byte 0x{data[error.start]:02x}); "
                             f"{save_as}") from None
    if not text.strip():
        example = "image,caption" if kind == "CSV" else '{"image": "photos/mug.jpg"}'
        raise UserInputError(f"{path}: the manifest is empty; write one row per object ({example})")
    return text


def _csv_rows(path: Path) -> Iterable[ObjectRow]:
    reader = csv.DictReader(io.StringIO(_manifest_text(path), newline=""))
    try:
        columns = reader.fieldnames
        if not columns or not any(name.strip() for name in columns):
            raise UserInputError(f"{path}: the first line names no columns (e.g. image,caption)")
        for values in reader:
            number = reader.line_num
            if None in values:
                raise UserInputError(f"{path}:{number}: more cells than columns (several photos of one object go in "
                                     f"one cell, separated by ';': {PHOTOS_EXAMPLE})")
            if all(not (v or "").strip() for v in values.values()):
                continue
            yield row_from_mapping({k.strip(): v for k, v in values.items()}, path.parent, f"{path}:{number}")
    except csv.Error as error:
        raise UserInputError(f"{path}:{reader.line_num}: not a CSV row ({error}); save the manifest as CSV text"
                             ) from None


def _jsonl_rows(path: Path) -> Iterable[ObjectRow]:
    for number, line in enumerate(_manifest_text(path).splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            values = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserInputError(f"{path}:{number}: not a JSON object ({error.msg})") from None
        except RecursionError:
            raise UserInputError(f"{path}:{number}: not a JSON object (nested too deeply)") from None
        if not isinstance(values, dict):
            raise UserInputError(f"{path}:{number}: not a JSON object (a JSON {type(values).__name__}); write one "
                                 '{"image": ...} object per line')
        yield row_from_mapping(values, path.parent, f"{path}:{number}")


def _image_rows(paths: Iterable[Path]) -> List[ObjectRow]:
    return [ObjectRow(name=safe_name(p.stem), image=str(p.resolve())) for p in paths]


def read_manifest(source: str) -> List[ObjectRow]:
    """The objects named by `source`: a folder (its images, sorted), a glob pattern, one image, or a .csv/.jsonl
    manifest. Raises UserInputError (one line) for an empty source, a bad row or two objects with one name."""
    path = Path(source).expanduser()
    if path.is_dir():
        rows = _image_rows(sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        if not rows:
            raise UserInputError(f"{source}: no images in this folder ({', '.join(IMAGE_SUFFIXES)})")
    elif path.suffix.lower() in MANIFEST_SUFFIXES and path.is_file():
        rows = list(_csv_rows(path) if MANIFEST_SUFFIXES[path.suffix.lower()] == "CSV" else _jsonl_rows(path))
    elif path.suffix.lower() in MANIFEST_SUFFIXES and path.exists():
        raise UserInputError(f"{source}: not a regular file (a pipe or a device); give the manifest as a file")
    elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        rows = _image_rows([path])
    elif path.is_file():
        hint = "; a .json manifest: write one object per line and name it .jsonl" if path.suffix.lower() == ".json" \
            else ""
        raise UserInputError(f"{source}: neither a photo ({', '.join(IMAGE_SUFFIXES)}) nor a manifest (.csv, .jsonl)"
                             f"{hint}")
    elif glob.has_magic(source):
        matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
        rows = _image_rows(p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not rows:
            raise UserInputError(f"{source}: no images match this pattern")
    else:
        raise UserInputError(f"{source}: no such folder, image, manifest (.csv, .jsonl) or glob pattern")
    if not rows:
        raise UserInputError(f"{source}: the manifest has no rows (only its header, blank lines or comments); add "
                             "one row per object")
    seen: Dict[str, str] = {}
    for row in rows:
        if row.name in seen:
            raise UserInputError(f"two objects are named {row.name!r} ({seen[row.name]} and {row.image}); give each "
                                 "row its own 'name' in a manifest")
        seen[row.name] = row.image
    return rows
