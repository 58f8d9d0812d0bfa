r"""Write an image folder as tfds array_record files, resized once, for large datasets.

    python -m launch.prepare_data --from=image_folder --data_dir=/data/imagenet --out=/data/tfds \
        --image_size=256
    # prints: --config.dataset.name=imagenet/256 --config.dataset.data_dir=/data/tfds

The folder layout is `image_folder`'s (DIR/train/<class>/*.jpg, DIR/validation/ or DIR/val/; see
docs/data.md). Each image's shorter side is resized to --image_size (never upscaled; 0 keeps the
original size) and stored as JPEG (--format=png for lossless); unreadable files are skipped and
listed. When to prefer this over training on the folder directly: docs/data.md.
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", required=True, choices=["image_folder"],
                        help="what to convert (image_folder: DIR/train/<class>/*.jpg ...)")
    parser.add_argument("--data_dir", required=True, help="the image folder (holds train/)")
    parser.add_argument("--out", required=True, help="the tfds data_dir to write into")
    parser.add_argument("--name", default=None,
                        help="tfds dataset name (default: from the folder's name)")
    parser.add_argument("--image_size", type=int, default=256,
                        help="shorter side in pixels (default: %(default)s; 0: original size)")
    parser.add_argument("--splits", default=None,
                        help="comma-separated (default: train, and validation when present)")
    parser.add_argument("--format", dest="image_format", default="jpeg", choices=["jpeg", "png"])
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality")
    parser.add_argument("--workers", type=int, default=0,
                        help="processes decoding and resizing (0: one per CPU core)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("absl", "tensorflow_datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from vqjax.data import DatasetNotFoundError
    from vqjax.data.export import export_image_folder
    from vqjax.paths import resolve

    try:
        result = export_image_folder(
            resolve(args.data_dir), resolve(args.out), name=args.name,
            image_size=args.image_size,
            splits=args.splits.split(",") if args.splits else None,
            image_format=args.image_format, quality=args.quality, workers=args.workers or None)
    except (DatasetNotFoundError, FileExistsError, ValueError) as error:
        raise SystemExit(f"launch.prepare_data: {error}") from None
    for split, count in result["splits"].items():
        skipped = result["skipped"].get(split, [])
        print(f"{split}: {count} images" + (f" ({len(skipped)} unreadable, skipped)"
                                             if skipped else ""))
        for message in skipped[:10]:
            print(f"  skipped {message}")
    print(f"wrote {result['path']}\ntrain on it with:\n  --config.dataset.name={result['name']} "
          f"--config.dataset.data_dir={result['data_dir']}")
    sys.stdout.flush()
    return result


if __name__ == "__main__":
    main()
