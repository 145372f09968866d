"""`sin-batch`: many photos through the whole chain on Ray, resumable and fault-isolated.

    sin-batch PHOTOS --output OUT

PHOTOS is a folder of images, a glob pattern, one image, or a CSV/JSONL manifest (one row per object: `image` and
optional `name`, `caption`, `prompt`, `guidance`, `steps`, `refine_steps`, `mask_from`, `depth`). Every object runs
preprocess -> coarse -> refine -> mesh (.glb) -> splat (.ply) -> turntable (.gif) with the project's own commands,
in its own folder OUT/<name>/. State lives in OUT/batch.sqlite: rerunning the same command skips what is done,
resumes what was interrupted from its last checkpoint, and runs failed stages again only with --retry-failed.
Ray is an optional extra (pip install -e ".[batch]"). Details: docs/batch.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from single_image_nerf.batch.manifest import MASK_SOURCES
from single_image_nerf.batch.stages import DEFAULT_PRIOR, PRIORS_READING_TEXT, PRIORS_WITHOUT_TEXT
from single_image_nerf.errors import UserInputError

EXIT_USER_ERROR = 2


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _words(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; give some words, or --no-caption")
    return " ".join(text.split())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sin-batch",
        description="Run many photos through preprocess, coarse, refine and the exports on Ray (local by default), "
        "one folder per object under --output; rerun the same command to resume.")
    parser.add_argument("photos", help="a folder of images, a glob pattern (quoted), one image, or a .csv/.jsonl "
                        "manifest with an 'image' column and optional per-object overrides")
    parser.add_argument("--output", "-o", required=True, help="output folder (state store, objects, index.html)")
    parser.add_argument("--tiny", action="store_true", help="the demo's tiny sizes (a check of the chain on a CPU)")
    parser.add_argument("--steps", type=_positive, default=None,
                        help="coarse steps (default: the method's; 6 with --tiny); refine takes half")
    parser.add_argument("--refine-steps", type=_positive, default=None, help="refine steps (default: half of --steps)")
    parser.add_argument("--guidance", default=None, metavar="PRIOR", choices=PRIORS_READING_TEXT + PRIORS_WITHOUT_TEXT,
                        help=f"prior of both training stages: {', '.join(PRIORS_READING_TEXT + PRIORS_WITHOUT_TEXT)} "
                        f"(default {DEFAULT_PRIOR}); a manifest row's 'guidance' wins")
    captions = parser.add_mutually_exclusive_group()
    captions.add_argument("--caption", default=None, metavar="TEXT", type=_words,
                          help="caption of every object whose manifest row gives none (no captioning model runs)")
    captions.add_argument("--no-caption", action="store_true",
                          help="never run the captioning model: objects without a caption or prompt get none (for "
                          "priors that read no text: zero123, none, oracle; the captioner is skipped for those anyway)")
    parser.add_argument("--mask-from", choices=MASK_SOURCES, default="auto",
                        help="foreground source of preprocessing (default auto: the photo's alpha, else SAM)")
    parser.add_argument("--no-depth", action="store_true", help="preprocess without depth estimation")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="device of every stage (default: cuda where the task holds a GPU, else cpu)")
    parser.add_argument("--retry-failed", action="store_true", help="run failed stages again")
    parser.add_argument("--address", default=None,
                        help="join this Ray cluster (e.g. auto, or HOST:6379) instead of starting a local one")
    parser.add_argument("--max-concurrent", type=_positive, default=None,
                        help="objects in flight at once (default: one per GPU; on CPUs, one per 4 CPUs, at least 1)")
    parser.add_argument("--steps-per-save", type=_positive, default=None,
                        help="checkpoint interval of the training stages (default: the method's; 2 with --tiny)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the batch; returns the exit status (0 all done, 1 some object failed, 2 a usage error, 130 interrupted)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    from single_image_nerf.batch import driver  # pylint: disable=import-outside-toplevel

    if not driver.ray_available():
        print(driver.MISSING_RAY, file=sys.stderr)
        return EXIT_USER_ERROR
    from single_image_nerf.batch.stages import Settings  # pylint: disable=import-outside-toplevel

    options = driver.BatchOptions(
        source=args.photos, output=Path(args.output),
        settings=Settings(tiny=args.tiny, steps=args.steps, refine_steps=args.refine_steps, guidance=args.guidance,
                          mask_from=args.mask_from, depth=not args.no_depth, steps_per_save=args.steps_per_save,
                          caption=args.caption, captioner=not args.no_caption),
        device=args.device, retry_failed=args.retry_failed, address=args.address,
        max_concurrent=args.max_concurrent, progress=not args.quiet)
    try:
        return driver.run_batch(options, ["sin-batch", *arguments])
    except UserInputError as error:
        print(f"sin-batch: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("sin-batch: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


def entrypoint() -> None:
    """Console entry point (`sin-batch`)."""
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
