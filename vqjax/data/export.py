"""An image folder -> a tfds dataset of array_record files, resized once (`launch/prepare_data.py`).

    export_image_folder("/data/my_images", "/data/tfds", image_size=256)
    # -> /data/tfds/my_images/256/1.0.0/*.array_record: train with
    #    --config.dataset.name=my_images/256 --config.dataset.data_dir=/data/tfds

Why: an image folder decodes full-size files at every step (ImageNet's average JPEG is ~400x350
pixels, larger photo collections far more); the exported files are decoded at the training size,
read sequentially from a few large files instead of one small file per image (network
filesystems, GCS), and need no file list. The output is an ordinary tfds dataset, read through
exactly the code path of imagenet2012 (`tfds.data_source`; no TensorFlow).

Each image is decoded (any mode to RGB, EXIF orientation applied: `pipeline.pil_to_rgb`), its
shorter side resized to `image_size` (Lanczos, antialiased; images already smaller are kept, not
upscaled; the aspect ratio is kept, so random-resized crops still see the whole image) and stored
as JPEG (quality 95) or PNG. Features: {"image": Image([None, None, 3]), "label": ClassLabel(the
folder's class names)}, no label for a flat folder. Unreadable files are skipped, counted and
listed; the tfds writer builds in a temporary folder and renames it into place, so an interrupted
export leaves nothing half-written.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import re
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from vqjax.data import folder
from vqjax.data.errors import DatasetNotFoundError

log = logging.getLogger(__name__)

VERSION = "1.0.0"  # (RELEASE_NOTES below repeats it: tfds wants a str key)


def dataset_name(data_dir: str | os.PathLike) -> str:
    """A tfds name from the folder's name: "My Images-2" -> "my_images_2"."""
    base = os.path.basename(os.path.normpath(os.fspath(data_dir))).lower()
    name = re.sub(r"[^a-z0-9]+", "_", base).strip("_")
    if not name or not name[0].isalpha():
        name = f"images_{name}".rstrip("_")
    return name


def resize_shorter_side(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H, W, 3] with its shorter side resized down to `size` (kept when already smaller)."""
    height, width = image.shape[:2]
    if min(height, width) <= size:
        return image
    scale = size / min(height, width)
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(target, Image.Resampling.LANCZOS))


def encode_resized(path: str, image_size: int, image_format: str = "jpeg",
                   quality: int = 95) -> bytes | str:
    """The file at `path` decoded, resized (`resize_shorter_side`) and re-encoded; the error
    message (a str) when it cannot be read or decoded."""
    from vqjax.data.pipeline import pil_to_rgb

    try:
        with Image.open(path) as pil:
            if pil.format == "JPEG" and image_size > 0:
                pil.draft("RGB", (image_size, image_size))  # DCT-domain downscaling: faster
            image = pil_to_rgb(pil)
    except Exception as error:  # noqa: BLE001 - any unreadable file is skipped and reported
        return f"{path}: {error!r}"
    if image_size > 0:
        image = resize_shorter_side(image, image_size)
    buffer = io.BytesIO()
    if image_format == "png":
        Image.fromarray(image).save(buffer, format="PNG")
    else:
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _encode_star(args):
    return encode_resized(*args)


class _ExportConfig(tfds.core.BuilderConfig):
    def __init__(self, image_size: int, **kwargs):
        name = str(image_size) if image_size > 0 else "original"
        super().__init__(name=name, description=f"shorter side {name}", **kwargs)
        self.image_size = image_size


def _make_builder(name: str, out: str, data_dir: str, splits: Sequence[str], image_size: int,
                  image_format: str, quality: int, workers: int, report: dict):
    """A tfds builder class named `name` that writes the folder's splits (not registered)."""
    sources = {split: folder.ImageFolderSource(data_dir, split) for split in splits}
    class_names = sources[splits[0]].class_names

    class ImageFolderExport(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version(VERSION)
        RELEASE_NOTES = {"1.0.0": "Exported from an image folder by launch.prepare_data."}
        BUILDER_CONFIGS = [_ExportConfig(image_size)]

        @tfds.core.utils.classproperty
        @classmethod
        def code_path(cls) -> epath.Path:  # see builtin.py: tfds 4.9.10 needs it pinned
            return epath.Path(__file__)

        def _info(self) -> tfds.core.DatasetInfo:
            features = {"image": tfds.features.Image(shape=(None, None, 3),
                                                     encoding_format=image_format)}
            if class_names:
                features["label"] = tfds.features.ClassLabel(names=list(class_names))
            return tfds.core.DatasetInfo(
                builder=self,
                description=f"Images of {data_dir}, shorter side resized to {image_size}.",
                features=tfds.features.FeaturesDict(features),
            )

        def _split_generators(self, dl_manager):
            del dl_manager
            return {split: self._generate_examples(split) for split in splits}

        def _generate_examples(self, split) -> Iterator[tuple[str, dict]]:
            source = sources[split]
            jobs = ((source.path(i), image_size, image_format, quality)
                    for i in range(len(source)))
            skipped = report.setdefault("skipped", {}).setdefault(split, [])
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                results = pool.imap(_encode_star, jobs, chunksize=16)
                for i, encoded in enumerate(results):
                    if isinstance(encoded, str):
                        log.warning("prepare_data: skipping unreadable %s", encoded)
                        skipped.append(encoded)
                        continue
                    example = {"image": encoded}
                    if class_names:
                        example["label"] = int(source.labels[i])
                    key = os.fsdecode(bytes(source.files[i]))
                    yield key, example

    ImageFolderExport.name = name
    return ImageFolderExport


def export_image_folder(
    data_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    name: str | None = None,
    image_size: int = 256,
    splits: Sequence[str] | None = None,
    image_format: str = "jpeg",
    quality: int = 95,
    workers: int | None = None,
) -> dict:
    """Writes the image folder `data_dir` as the tfds dataset `name/image_size` in `out`.

    `splits` default: train and, when present, validation (DIR/validation or DIR/val). Returns
    {"name": "NAME/SIZE" to pass as dataset.name, "data_dir": out, "splits": {split: count},
    "skipped": {split: [messages]}, "path": the version folder}.
    """
    data_dir = os.fspath(data_dir)
    out = os.fspath(out)
    if image_format not in ("jpeg", "png"):
        raise ValueError(f"image_format must be 'jpeg' or 'png', got {image_format!r}")
    if image_size < 0:
        raise ValueError(f"image_size must be >= 0 (0: keep the original size), got {image_size}")
    name = name or dataset_name(data_dir)
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"name {name!r}: a tfds name is lower case letters, digits and _ , "
                         "starting with a letter")
    if splits is None:
        splits = ["train"]
        try:
            folder.split_directory(data_dir, "validation")
            splits.append("validation")
        except DatasetNotFoundError:
            log.info("prepare_data: no validation/ or val/ in %s: train only", data_dir)
    workers = workers or os.cpu_count() or 1
    report: dict = {}
    builder_class = _make_builder(name, out, data_dir, list(splits), image_size, image_format,
                                  quality, workers, report)
    builder = builder_class(data_dir=out)
    if builder.is_prepared():
        raise FileExistsError(f"{builder.data_dir} already holds this dataset: delete it to "
                              "export again, or pass another --name/--out")
    builder.download_and_prepare(file_format="array_record")
    return {
        "name": f"{name}/{builder.builder_config.name}",
        "data_dir": out,
        "splits": {split: builder.info.splits[split].num_examples for split in splits},
        "skipped": report.get("skipped", {}),
        "path": str(builder.data_dir),
    }
