"""Input pipeline throughput: an image folder of JPEGs vs the same images prepared as array_record.

    python -m bench.data_pipeline                 # 256 ImageNet-sized JPEGs, 256 px crops
    python -m bench.data_pipeline --images=512 --image_size=128

Measures one process reading, decoding, random-resized-cropping (to --image_size) and flipping
images into batches, in the calling thread (no grain threads or workers), and reports images per
second of CPU time: that is what each grain worker process adds, whatever else the machine runs.
The JPEGs are ImageNet-like: cut from the photographs that ship with scikit-image/scikit-learn,
500x375 or 375x500 (ImageNet's median size), quality 90. The prepared copy is
`launch.prepare_data --image_size=<size>` of them (shorter side resized to the crop size, JPEG 95).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def make_jpegs(root: str, count: int, seed: int = 0) -> None:
    from PIL import Image

    from vqjax.data import builtin

    photos = list(builtin.load_photos().values())
    rng = np.random.default_rng(seed)
    for i in range(count):
        photo = photos[i % len(photos)]
        width, height = (500, 375) if rng.random() < 0.75 else (375, 500)
        scale = max(width / photo.shape[1], height / photo.shape[0]) * rng.uniform(1.0, 1.6)
        resized = Image.fromarray(photo).resize(
            (max(width, round(photo.shape[1] * scale)), max(height, round(photo.shape[0] * scale))),
            Image.Resampling.BICUBIC)
        left = int(rng.integers(0, resized.width - width + 1))
        top = int(rng.integers(0, resized.height - height + 1))
        crop = resized.crop((left, top, left + width, top + height))
        path = os.path.join(root, "train", f"class_{i % 10}", f"{i:05d}.jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        crop.save(path, quality=90)


def measure(dataset: str, data_dir: str, image_size: int, batch_size: int, batches: int) -> dict:
    from vqjax import data

    it = data.input_pipeline(dataset, "train", batch_size, image_size, seed=0, train=True,
                             process_index=0, process_count=1, data_dir=data_dir)
    next(it)  # warm-up: file list / tfds metadata, first imports
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(it)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    images = batches * batch_size
    return {"images": images, "images_per_cpu_s": images / cpu, "images_per_wall_s": images / wall}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=16)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from vqjax.data.export import export_image_folder

    with tempfile.TemporaryDirectory() as tmp:
        folder_dir, tfds_dir = os.path.join(tmp, "jpegs"), os.path.join(tmp, "tfds")
        make_jpegs(folder_dir, args.images)
        start = time.perf_counter()
        result = export_image_folder(folder_dir, tfds_dir, name="bench_jpegs",
                                     image_size=args.image_size, workers=1)
        export_s = time.perf_counter() - start
        figures = {
            "image_folder": measure("image_folder", folder_dir, args.image_size, args.batch_size,
                                    args.batches),
            "prepared": measure(result["name"], tfds_dir, args.image_size, args.batch_size,
                                args.batches),
        }
    print(f"{args.images} JPEGs 500x375/375x500 q90 -> random-resized crop {args.image_size}px "
          f"+ flip, batches of {args.batch_size}, one process, no workers")
    for name, figure in figures.items():
        print(f"  {name:<13} {figure['images_per_cpu_s']:7.1f} images per CPU-second "
              f"({figure['images_per_wall_s']:.1f}/s wall)")
    print(f"  export (launch.prepare_data, 1 worker, incl. start-up): "
          f"{args.images / export_s:.1f} images/s wall")
    return figures


if __name__ == "__main__":
    main()
