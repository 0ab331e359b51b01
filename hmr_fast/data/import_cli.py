"""`hmr-fast import-data`: the command line over the importers (``data/importers.py`` for LSP
and COCO, ``data/mpii.py`` for MPII), in its own module so that neither imports the other's
CLI (see ``data/importers.py`` for the formats, filters and skip reports)."""

from __future__ import annotations

import argparse
import sys

from hmr_fast.data import importers
from hmr_fast.data.formats import save_annotations
from hmr_fast.data.importers import (
    FORMATS,
    MIN_SIZE_PX,
    MIN_VISIBLE,
    SIZE_MEASURES,
    PersonFilter,
    import_coco,
    import_lsp,
)


def _filter_from_args(args) -> PersonFilter:
    """The paper's defaults for the format / split, overridden by the options given."""
    base = PersonFilter.defaults(args.format, args.split if args.format == "lsp" else "train")
    face = args.face_shoulders_only
    return PersonFilter(
        base.min_visible if args.min_visible is None else args.min_visible,
        base.min_size if args.min_size is None else args.min_size,
        base.size_measure if args.size_measure is None else args.size_measure,
        base.drop_face_shoulders_only if face is None else face == "drop",
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hmr-fast import-data",
                                description=importers.__doc__.split("\n")[0])
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument(
        "--src", required=True,
        help="LSP directory / joints.mat, COCO json, or MPII .mat (or its folder) / .h5",
    )  # fmt: skip
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument(
        "--split", default="train", choices=["train", "test"],
        help="LSP only; test turns the paper's filters off unless they are given",
    )  # fmt: skip
    p.add_argument(
        "--image-prefix",
        help="COCO / MPII: prefix for the image file names (default: '' for COCO, 'images/' "
        "for MPII, whose images are in images/ of the release)",
    )
    p.add_argument(
        "--min-keypoints", type=int, default=0,
        help="COCO only: keep people with at least this many of the 12 body keypoints "
        "labelled (SPIN's rule is 12; default 0, off: the paper's filters apply instead)",
    )  # fmt: skip
    p.add_argument(
        "--min-visible", type=int,
        help=f"keep people with at least this many visible keypoints (default {MIN_VISIBLE}, "
        "the paper's; COCO counts v == 2, as the original code; 0 = off)",
    )  # fmt: skip
    p.add_argument(
        "--min-size", type=float,
        help=f"keep people larger than this many pixels (default {MIN_SIZE_PX:g}, the original "
        "COCO converter's; 0 = off)",
    )  # fmt: skip
    p.add_argument(
        "--size-measure", choices=SIZE_MEASURES,
        help="what --min-size measures: the box height (default: the original's test) or its "
        "larger side. MPII: 200 x its annotated person scale",
    )  # fmt: skip
    p.add_argument(
        "--face-shoulders-only", choices=["drop", "keep"],
        help="people with no ankle, knee, hip, elbow or wrist labelled (default: drop for "
        "COCO, as the original; keep for the others)",
    )  # fmt: skip
    p.add_argument(
        "--mpii-people", choices=["single", "all"],
        help="MPII .mat only: the images' 'single_person' people (default, as the original "
        "HMR) or every annotated person",
    )  # fmt: skip
    args = p.parse_args(argv)
    try:
        flt = _filter_from_args(args)
        if args.mpii_people is not None and args.format != "mpii":
            raise ValueError("--mpii-people applies to --format mpii only")
        if args.format == "coco":
            ann, skips = import_coco(args.src, args.image_prefix or "", args.min_keypoints, flt)
        elif args.format == "mpii":
            from hmr_fast.data.mpii import DEFAULT_IMAGE_PREFIX, import_mpii

            prefix = DEFAULT_IMAGE_PREFIX if args.image_prefix is None else args.image_prefix
            ann, skips = import_mpii(args.src, flt, prefix, args.mpii_people)
        else:
            ann, skips = import_lsp(
                args.src, args.split, extended=args.format == "lsp-extended", flt=flt
            )
    except (FileNotFoundError, ValueError, ImportError) as exc:
        print(f"hmr-fast import-data: error: {exc}", file=sys.stderr)
        return 2
    n = len(ann["imgname"])
    if n == 0:
        print(
            f"hmr-fast import-data: error: no row to write from {args.src}; skipped: "
            f"{skips.report()}; filters: {flt.describe()}",
            file=sys.stderr,
        )
        return 1
    try:
        path = save_annotations(args.out, **ann)
    except OSError as exc:
        print(f"hmr-fast import-data: error: cannot write {args.out}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {n} rows to {path}; skipped: {skips.report()}; filters: {flt.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
