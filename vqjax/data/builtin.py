"""Built-in datasets that need no network: real images that ship inside installed packages.

Two tfds datasets, built as array_record files into a tfds `data_dir` on first use, so that they run
through exactly the code path of ImageNet (`tfds.data_source` -> grain):

- `vqjax_photos/{32,64,128}` (default 64): colour photographs bundled with scikit-image (astronaut,
  coffee, chelsea, rocket, motorcycle, hubble_deep_field, immunohistochemistry) and scikit-learn
  (china, flower), cut into non-overlapping square crops at scales 1, 1/2 and 1/4 of each photo.
  The bottom band of every photo (max(20% of its height, one crop)) is cut off before anything
  else and gives the `validation` crops, the rest the `train` crops, so the splits share no pixels.
  `label` names the photograph the crop comes from (9 classes).
- `vqjax_digits/{32,64}` (default 32): scikit-learn's 1,797 handwritten digits (8x8, 16 grey levels),
  upscaled bicubically to RGB, labelled 0-9: the small labelled set for class-conditional work.
  `train` is the first 1,500, `validation` the last 297.

Features are always `{"image": Image(uint8, [S, S, 3], PNG), "label": ClassLabel}`.

tfds 4.9 builds these without TensorFlow as long as no NumPy image reaches `tfds.features.Image`
(its NumPy encoder calls `tf.image.encode_png`): the generators hand tfds PNG bytes encoded with
Pillow, and everything else (`download_and_prepare` with `file_format="array_record"`, the
`dataset_info.json`/`features.json` writing, `tfds.data_source`) is TensorFlow-free.

Building takes about a second and is idempotent. tfds writes into a private `incomplete.*` folder
and renames it into place; on local disks a file lock additionally makes concurrent builders
(several processes of one job) wait for the first one instead of racing it. For a remote `data_dir`
(gs://...) build once beforehand:

    python -m vqjax.data.builtin --data_dir=gs://bucket/tensorflow_datasets
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

log = logging.getLogger(__name__)

DATA_DIR_ENV = "TFDS_DATA_DIR"  # the variable tfds itself honours

# scikit-image photographs in the wheel (no pooch download): loader name -> short name.
# `cat` duplicates `chelsea`; `retina` is mostly black border; `stereo_motorcycle` is a stereo pair
# of which we keep the left view so that no scene appears twice.
_SKIMAGE_PHOTOS = {
    "astronaut": "astronaut",
    "coffee": "coffee",
    "chelsea": "chelsea",
    "rocket": "rocket",
    "stereo_motorcycle": "motorcycle",
    "hubble_deep_field": "hubble_deep_field",
    "immunohistochemistry": "immunohistochemistry",
}
_SKLEARN_PHOTOS = ("china", "flower")  # sklearn.datasets.load_sample_images, in that order
PHOTO_NAMES = tuple(_SKIMAGE_PHOTOS.values()) + _SKLEARN_PHOTOS

_PHOTO_SCALES = (1.0, 0.5, 0.25)
_VALIDATION_FRACTION = 0.2
_DIGITS_NUM_TRAIN = 1500


def default_data_dir(data_dir: str | os.PathLike | None = None) -> str:
    """`data_dir` if given, else $TFDS_DATA_DIR, else ~/tensorflow_datasets (tfds's own rule)."""
    if data_dir:
        return os.fspath(data_dir)
    return os.environ.get(DATA_DIR_ENV) or os.path.expanduser("~/tensorflow_datasets")


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------
# Source images
# ------------------------------------------------------------------------------------------------


def load_photos() -> dict[str, np.ndarray]:
    """The packaged colour photographs, name -> uint8 [H, W, 3]. Ones that fail to load are left out."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = {}
    for loader, name in _SKIMAGE_PHOTOS.items():
        try:
            image = getattr(skimage.data, loader)()
        except Exception as error:  # noqa: BLE001 - an optional photo must not stop the build
            log.warning("vqjax_photos: skipping skimage.data.%s (%s)", loader, error)
            continue
        if isinstance(image, tuple):  # stereo_motorcycle -> (left, right, disparity)
            image = image[0]
        photos[name] = np.asarray(image, np.uint8)[..., :3]
    for name, image in zip(_SKLEARN_PHOTOS, load_sample_images().images):
        photos[name] = np.asarray(image, np.uint8)
    return photos


def photo_crops(
    photos: dict[str, np.ndarray], crop_size: int
) -> dict[str, list[tuple[str, int, np.ndarray]]]:
    """Cuts photos into non-overlapping crops: split -> [(key, label, uint8 [S, S, 3])].

    Each photo is first cut in two at a border row: the part above gives `train`, the bottom band
    `validation`; each part is then rescaled and tiled on its own, so no pixel (not even through
    the resampling filter) reaches both splits. Keys read "{photo}_s{scale}_y{y}_x{x}" with (y, x)
    in full-resolution pixels of the photo.
    """
    splits: dict[str, list] = {"train": [], "validation": []}
    for label, name in enumerate(PHOTO_NAMES):
        if name not in photos:
            continue
        photo = photos[name]
        border = photo.shape[0] - max(math.ceil(_VALIDATION_FRACTION * photo.shape[0]), crop_size)
        parts = {"train": (0, photo[:border]), "validation": (border, photo[border:])}
        for split, (part_top, part) in parts.items():
            part_image = Image.fromarray(part)
            for scale in _PHOTO_SCALES:
                width, height = round(part.shape[1] * scale), round(part.shape[0] * scale)
                if min(width, height) < crop_size:
                    continue
                scaled = np.asarray(
                    part_image if scale == 1.0
                    else part_image.resize((width, height), Image.Resampling.LANCZOS)
                )
                for y in range(0, height - crop_size + 1, crop_size):
                    for x in range(0, width - crop_size + 1, crop_size):
                        crop = np.ascontiguousarray(scaled[y : y + crop_size, x : x + crop_size])
                        key = f"{name}_s{scale}_y{part_top + round(y / scale)}_x{round(x / scale)}"
                        splits[split].append((key, label, crop))
    return splits


def digit_images(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits upscaled: (uint8 [N, S, S, 3], int64 [N])."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # [N, 8, 8], 0..16 -> 0..255
    upscaled = np.stack(
        [
            np.asarray(Image.fromarray(d).resize((image_size,) * 2, Image.Resampling.BICUBIC))
            for d in small
        ]
    )
    return np.repeat(upscaled[..., None], 3, axis=-1), digits.target.astype(np.int64)


# ------------------------------------------------------------------------------------------------
# tfds builders
# ------------------------------------------------------------------------------------------------


class _PackagedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the built-in builders."""

    # tfds 4.9.10 locates a builder's module through `importlib_resources` (the PyPI backport,
    # which nothing installs) whenever the class lives in a package: pin the path instead.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(__file__)


class ImageSizeConfig(tfds.core.BuilderConfig):
    """Builder config choosing the side of the square images."""

    def __init__(self, image_size: int, **kwargs):
        super().__init__(name=str(image_size), description=f"{image_size}x{image_size} RGB", **kwargs)
        self.image_size = image_size


def _features(image_size: int, label_names) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(image_size, image_size, 3), encoding_format="png"),
            "label": tfds.features.ClassLabel(names=list(label_names)),
        }
    )


class VqjaxPhotos(_PackagedBuilder):
    """Crops of the colour photographs bundled with scikit-image and scikit-learn."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [ImageSizeConfig(64), ImageSizeConfig(32), ImageSizeConfig(128)]
    DEFAULT_BUILDER_CONFIG_NAME = "64"

    def _info(self) -> tfds.core.DatasetInfo:
        # DatasetInfo directly: `dataset_info_from_configs` reads metadata files next to the module.
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("\n\n")[0],
            features=_features(self.builder_config.image_size, PHOTO_NAMES),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        splits = photo_crops(load_photos(), self.builder_config.image_size)
        return {split: self._generate_examples(crops) for split, crops in splits.items()}

    def _generate_examples(self, crops) -> Iterator[tuple[str, dict]]:
        for key, label, crop in crops:
            yield key, {"image": _png(crop), "label": label}


class VqjaxDigits(_PackagedBuilder):
    """scikit-learn's handwritten digits, upscaled to RGB; 10 classes."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [ImageSizeConfig(32), ImageSizeConfig(64)]
    DEFAULT_BUILDER_CONFIG_NAME = "32"

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("\n\n")[0],
            features=_features(self.builder_config.image_size, [str(d) for d in range(10)]),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        images, labels = digit_images(self.builder_config.image_size)
        ranges = {
            "train": range(_DIGITS_NUM_TRAIN),
            "validation": range(_DIGITS_NUM_TRAIN, len(images)),
        }
        return {split: self._generate_examples(images, labels, r) for split, r in ranges.items()}

    def _generate_examples(self, images, labels, indices) -> Iterator[tuple[int, dict]]:
        for i in indices:
            yield i, {"image": _png(images[i]), "label": int(labels[i])}


BUILTIN_DATASETS = {"vqjax_photos": VqjaxPhotos, "vqjax_digits": VqjaxDigits}


def is_builtin(name: str) -> bool:
    """Whether `name` ("vqjax_photos", "vqjax_digits/64", "vqjax_photos:1.0.0") is built here."""
    return name.split("/")[0].split(":")[0] in BUILTIN_DATASETS


# ------------------------------------------------------------------------------------------------
# Building on first use
# ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _build_lock(data_dir: str, name: str):
    """An exclusive lock on a local data_dir (no-op on remote ones, where tfds' rename must do)."""
    if "://" in data_dir:
        yield
        return
    import fcntl

    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, f".{name.replace('/', '-').replace(':', '-')}.build.lock")
    with open(path, "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def ensure_built(name: str, data_dir: str | os.PathLike | None = None) -> tfds.core.DatasetBuilder:
    """Builds the built-in dataset `name` into `data_dir` unless it is there; returns its builder."""
    if not is_builtin(name):
        raise ValueError(f"{name!r} is not a built-in dataset (those are {sorted(BUILTIN_DATASETS)})")
    data_dir = default_data_dir(data_dir)
    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    with _build_lock(data_dir, name):
        builder = tfds.builder(name, data_dir=data_dir)  # another process may have built it meanwhile
        if not builder.is_prepared():
            log.info("building %s into %s", name, data_dir)
            try:
                builder.download_and_prepare(file_format="array_record")
            except OSError:
                # Lost a rename race on a filesystem without locks: fine if the winner finished.
                builder = tfds.builder(name, data_dir=data_dir)
                if not builder.is_prepared():
                    raise
    return builder


def build_builtin(
    data_dir: str | os.PathLike | None = None,
    names: tuple[str, ...] = ("vqjax_photos", "vqjax_digits"),
) -> list[str]:
    """Builds the built-in datasets (default configs unless `names` say "vqjax_photos/128").

    Returns the full names ("vqjax_photos/64/1.0.0", ...).
    """
    return [ensure_built(name, data_dir).info.full_name for name in names]


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description="Build vqjax's built-in tfds datasets.")
    parser.add_argument(
        "--data_dir", default=None, help="default: $TFDS_DATA_DIR, else ~/tensorflow_datasets"
    )
    parser.add_argument(
        "names",
        nargs="*",
        default=[
            "vqjax_photos/32", "vqjax_photos/64", "vqjax_photos/128",
            "vqjax_digits/32", "vqjax_digits/64",
        ],
    )
    args = parser.parse_args(argv)
    for full_name in build_builtin(args.data_dir, tuple(args.names)):
        print(full_name, "->", default_data_dir(args.data_dir))


if __name__ == "__main__":
    main()
