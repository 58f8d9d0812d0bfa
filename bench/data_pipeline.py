"""Input pipeline throughput: an image folder of JPEGs vs the same images prepared as array_record.

    python -m bench.data_pipeline                 # 256 ImageNet-sized JPEGs, 256 and 128 px crops
    python -m bench.data_pipeline --images=512 --repeats=3

Measures one process reading, decoding, random-resized-cropping (to --image_size) and flipping
images into batches, in the calling thread (no grain threads or workers), and reports images per
second of CPU time: that is what each grain worker process adds, whatever else the machine runs.
The JPEGs are ImageNet-like: cut from the photographs that ship with scikit-image/scikit-learn,
500x375 or 375x500 (ImageNet's median size), quality 90. The prepared copy is
`launch.prepare_data --image_size=<size>` of them (shorter side resized to the crop size, JPEG 95).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time

import numpy as np

from bench import common


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


@dataclasses.dataclass
class Row:
    image_size: int
    folder: dict  # measure() of the image folder
    prepared: dict  # measure() of the same images after launch.prepare_data
    export_images_per_s: float


def measure_size(images: int, image_size: int, batch_size: int, batches: int) -> Row:
    from vqjax.data.export import export_image_folder

    with tempfile.TemporaryDirectory() as tmp:
        folder_dir, tfds_dir = os.path.join(tmp, "jpegs"), os.path.join(tmp, "tfds")
        make_jpegs(folder_dir, images)
        start = time.perf_counter()
        result = export_image_folder(folder_dir, tfds_dir, name="bench_jpegs",
                                     image_size=image_size, workers=1)
        export_s = time.perf_counter() - start
        return Row(image_size,
                   measure("image_folder", folder_dir, image_size, batch_size, batches),
                   measure(result["name"], tfds_dir, image_size, batch_size, batches),
                   images / export_s)


def format_table(rows: list[Row]) -> str:
    header = ("| crop | image folder, images per CPU-second | prepared, images per CPU-second "
              "| prepared / folder | export, images/s (1 worker) |")
    lines = [f"| {r.image_size} px | {common.significant(r.folder['images_per_cpu_s'])} "
             f"| {common.significant(r.prepared['images_per_cpu_s'])} "
             f"| {r.prepared['images_per_cpu_s'] / r.folder['images_per_cpu_s']:.2g}x "
             f"| {common.significant(r.export_images_per_s)} |" for r in rows]
    return common.markdown_table(header, lines)


def run(quick: bool = False, repeats: int | None = None, write: bool = True,
        command: str = "python -m bench.data_pipeline", images: int = 256,
        batch_size: int = 32, doc=common.DOC) -> list[Row]:
    """Each crop size (256 and 128 px; quick: 64 px over 32 images) measured `repeats` times
    (default 1); a row keeps the median run by folder throughput."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sizes, images = ((64,), 32) if quick else ((256, 128), images)
    batches = max(images // batch_size, 1)

    def one(size):
        runs = [measure_size(images, size, batch_size, batches) for _ in range(repeats or 1)]
        runs.sort(key=lambda r: r.folder["images_per_cpu_s"])
        return runs[len(runs) // 2]

    rows = common.measure_all(
        sizes, one, lambda size, row: (f"{size} px: folder "
                                       f"{row.folder['images_per_cpu_s']:.0f}, prepared "
                                       f"{row.prepared['images_per_cpu_s']:.0f} images/CPU-s"),
        tag="data_pipeline")
    notes = (f"{images} ImageNet-sized JPEGs (500x375 or 375x500, quality 90) read, decoded, "
             f"random-resized-cropped and flipped into batches of {batch_size} by "
             f"`vqjax.data.input_pipeline` in one process with no grain threads or workers, so "
             f"images per CPU-second is what each worker core adds. Prepared: the same images "
             f"after `launch.prepare_data --image_size=<crop>` (shorter side resized, JPEG 95).")
    common.publish("data_pipeline", "Input pipeline", command, format_table(rows), write, notes,
                   doc=doc)
    return rows


def main(argv=None, command: str | None = None) -> list[Row]:
    return common.run_main(run, "bench.data_pipeline", __doc__.splitlines()[0], argv, command,
                           "64 px, 32 images; do not write the doc", "runs per crop size",
                           options=(("--images", dict(type=int, default=256)),
                                    ("--batch_size", dict(type=int, default=32))))


if __name__ == "__main__":
    main()
