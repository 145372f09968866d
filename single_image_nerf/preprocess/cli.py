"""Command line of preprocessing: `sin-preprocess PHOTO --output data/NAME` (also data_scripts/preprocess_image.py),
or several photos of one object: `sin-preprocess front.jpg back.jpg --azimuths 0 180 --output data/NAME`.

Errors a user can fix (a bad photo, missing weights, an existing folder) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional, Sequence, Tuple

from single_image_nerf.preprocess.caption import DEFAULT_CAPTION_MODEL as _CAPTION_MODEL
from single_image_nerf.preprocess.depth import DEFAULT_DEPTH_MODEL as _DEPTH_MODEL
from single_image_nerf.preprocess.errors import PreprocessError
from single_image_nerf.pretrained import CAPTION_BLIP2_ID, DEFAULT_SAM_MODEL

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (kept separate so that its --help can be tested)."""
    parser = argparse.ArgumentParser(
        prog="sin-preprocess",
        description="Turn a photo of one object into the folder `ns-train single-image-nerf --data` reads: "
        "rgba.png (object recentred, alpha = foreground), depth.npy (+ preview), caption.txt and meta.json. "
        "Several photos of the object (with --azimuths) become extra reference views in views/1, views/2, ...",
    )
    parser.add_argument("photos", nargs="+", metavar="photo",
                        help="the photo (JPEG, PNG, WebP, TIFF, GIF, ...); several photos of one object: the first is "
                        "the main reference, and --azimuths says where each was taken")
    parser.add_argument("--output", "-o", required=True, help="output folder, e.g. data/NAME")
    parser.add_argument("--size", type=int, default=512, help="side of the square output in pixels (default 512)")
    parser.add_argument(
        "--border", type=float, default=0.15,
        help="fraction of the side left empty on each side of the object (default 0.15)",
    )
    parser.add_argument(
        "--elevation", type=float, default=0.0,
        help="elevation of the photo's camera in degrees above the object's horizontal plane, written to meta.json "
        "for the reference camera and the Zero123 priors (default 0: taken level); with several photos, of every photo",
    )
    parser.add_argument(
        "--azimuths", type=float, nargs="+", metavar="DEG", default=None,
        help="several photos: each camera's azimuth in degrees, one per photo in order, measured from the first "
        "photo's camera counter-clockwise seen from above (the camera moving round a still object); taken relative "
        "to the first value, so 90 270 means 0 180. Take the photos from the same distance and zoom, aimed at the "
        "object's centre, uncropped",
    )
    parser.add_argument(
        "--elevations", type=float, nargs="+", metavar="DEG", default=None,
        help="several photos: each camera's elevation in degrees, one per photo (default: --elevation for all)",
    )
    parser.add_argument(
        "--mask-from", choices=("auto", "alpha", "sam", "grabcut"), default="auto",
        help="foreground source: the photo's alpha, SAM, or OpenCV GrabCut (no weights); "
        "auto = alpha when the photo has transparency, else SAM (default auto)",
    )
    parser.add_argument("--sam-model", default=DEFAULT_SAM_MODEL,
                        help=f"SAM model type: vit_b, vit_l or vit_h (default {DEFAULT_SAM_MODEL})")
    parser.add_argument("--sam-checkpoint", default=None,
                        help="SAM checkpoint file (default: the official one, downloaded once into the cache)")
    parser.add_argument(
        "--box", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"), default=None,
        help="box around the object in pixels of the upright photo (prompts SAM or GrabCut)",
    )
    parser.add_argument(
        "--points", nargs="+", metavar="X,Y[,LABEL]", default=None,
        help="prompt points in pixels of the upright photo; LABEL 1 = object (default), 0 = background",
    )
    parser.add_argument(
        "--max-hole-fraction", type=float, default=None,
        help="fill only mask holes smaller than this fraction of its area (default: fill every hole)",
    )
    parser.add_argument("--allow-cut", action="store_true",
                        help="keep an object that the photo's edge cuts off (cut on purpose: a bust, a close-up); "
                        "without it such a photo is refused")
    parser.add_argument("--no-depth", action="store_true", help="skip depth estimation")
    parser.add_argument("--depth-model", default=_DEPTH_MODEL, help=f"DPT hub id or local folder (default {_DEPTH_MODEL})")
    parser.add_argument("--no-caption", action="store_true",
                        help="skip captioning: right when the prior reads no text (zero123, none, oracle) or gets "
                        "--pipeline.guidance.prompt")
    parser.add_argument("--caption", default=None, metavar="TEXT", help="use this caption instead of the model's")
    parser.add_argument(
        "--caption-model", default=_CAPTION_MODEL,
        help=f"BLIP or BLIP-2 hub id or local folder (default {_CAPTION_MODEL}; BLIP-2: {CAPTION_BLIP2_ID})")
    parser.add_argument("--device", default=None, help="torch device (default: a GPU if there is one, else the CPU)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def parse_points(values: Optional[Sequence[str]]) -> Tuple[Optional[Tuple[Tuple[float, float], ...]], Optional[Tuple[int, ...]]]:
    """'X,Y[,LABEL]' strings to points and labels (None, None when there are none)."""
    if not values:
        return None, None
    points: List[Tuple[float, float]] = []
    labels: List[int] = []
    for value in values:
        parts = value.split(",")
        try:
            if len(parts) not in (2, 3):
                raise ValueError
            points.append((float(parts[0]), float(parts[1])))
            label = int(parts[2]) if len(parts) == 3 else 1
            if label not in (0, 1):
                raise ValueError
            labels.append(label)
        except ValueError:
            raise PreprocessError(f"point '{value}' is not X,Y or X,Y,LABEL with LABEL 0 or 1; e.g. --points 320,240") from None
    return tuple(points), tuple(labels)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs preprocessing; returns the exit status (0, or 2 for an error the user can fix)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    try:
        from single_image_nerf.preprocess.pipeline import PreprocessOptions, preprocess_image

        points, labels = parse_points(args.points)
        options = PreprocessOptions(
            size=args.size,
            border=args.border,
            elevation=args.elevation,
            azimuths=tuple(args.azimuths) if args.azimuths is not None else None,
            elevations=tuple(args.elevations) if args.elevations is not None else None,
            mask_from=args.mask_from,
            sam_model=args.sam_model,
            sam_checkpoint=args.sam_checkpoint,
            box=tuple(args.box) if args.box else None,
            points=points,
            point_labels=labels,
            max_hole_fraction=args.max_hole_fraction,
            allow_cut=args.allow_cut,
            depth=not args.no_depth,
            depth_model=args.depth_model,
            caption=not args.no_caption,
            caption_text=args.caption,
            caption_model=args.caption_model,
            device=args.device,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
        result = preprocess_image(args.photos[0] if len(args.photos) == 1 else args.photos, args.output, options)
    except PreprocessError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; nothing was written", file=sys.stderr)
        return 130
    timings = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result.meta["timings_s"].items())
    views = result.meta.get("views")
    extra = f"; {len(views) - 1} more view{'s' if len(views) > 2 else ''} in views/" if views else ""
    print(f"wrote {result.output_dir} ({', '.join(result.meta['files'])}{extra}; {timings})")
    return 0
