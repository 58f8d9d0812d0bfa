"""The input pipeline: tfds data source -> grain -> this process's slice of every global batch.

Determinism rule (what makes runs reproducible across topologies and resumable):

    global position g = step * global_batch_size + i            (i-th example of the global batch)
    record(g)         = shuffle_{seed, epoch}(g mod N),  epoch = g // N   (grain's index_shuffle)
    example(g)        = preprocess(source[record(g)], rng=np.random.default_rng([seed, g]))
    process p of P    takes positions [step*B + p*B/P, step*B + (p+1)*B/P)

so the global batch at step t is the same set of examples, in the same order and with the same
augmentations, whatever the number of processes, devices or grain workers. The iterator's state
is just the step, so it also restores under a different topology.

Why not grain's own sharding (`ShardByJaxProcess`, `tfds.split_for_jax_process`): those give each
process a fixed part of the *dataset*, so the global batch at step t depends on the process count.
Here the shuffle is global and the per-process slice is taken of each global batch, over grain's
random-access `MapDataset` (a small `MapDataset` subclass does the slicing). `mp_prefetch` workers
split the work at whole-batch granularity, so they do not change the order either.

Unreadable examples (bytes that fail to decode, records that fail to read) never crash a run: in
training the example at position g is replaced by the next readable one (g+1, g+2, ...); in eval
it is replaced too but marked `mask=False`. Each replacement is logged and counted
(`InputIterator.num_skipped`, this process's count).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageOps

from vqjax.data import builtin, errors, folder

log = logging.getLogger(__name__)

MAX_CONSECUTIVE_UNREADABLE = 64


DatasetNotFoundError = errors.DatasetNotFoundError


# ------------------------------------------------------------------------------------------------
# Source
# ------------------------------------------------------------------------------------------------


def _how_to_prepare(name: str, data_dir: str) -> str:
    base = name.split("/")[0].split(":")[0]
    lines = [
        "vqjax reads tfds datasets as array_record files and never downloads during a run.",
        f"Prepare it once with:  tfds build {name} --data_dir={data_dir} --file_format=array_record",
        "(or `tfds convert_format` an existing TFRecord copy), or point data_dir / $TFDS_DATA_DIR",
        "at the folder that holds it.",
    ]
    if base == "imagenet2012":
        lines.append(
            "imagenet2012 needs a manual download first: put ILSVRC2012_img_train.tar and "
            f"ILSVRC2012_img_val.tar in {data_dir}/downloads/manual/ (see docs/data.md)."
        )
    return "\n  ".join(lines)


def _close_names(name: str) -> list[str]:
    """Known dataset names that look like `name` (a typo's likely intent)."""
    import difflib

    try:
        known = list(tfds.core.registered.list_imported_builders())
    except Exception:  # noqa: BLE001 - suggestions are a courtesy
        known = []
    known += [*builtin.BUILTIN_DATASETS, folder.NAME]
    return difflib.get_close_matches(name.split("/")[0].split(":")[0], known, n=3, cutoff=0.7)


def _unknown_dataset_message(name: str, data_dir: str) -> str:
    close = _close_names(name)
    return "\n  ".join([
        f"Dataset {name!r} is unknown: not a built-in dataset, not image_folder, not a tfds "
        f"name, and not prepared in data_dir {data_dir!r}."
        + (f" Did you mean {' or '.join(close)}?" if close else ""),
        f"Built-in (offline, built on first use): {', '.join(sorted(builtin.BUILTIN_DATASETS))}"
        " (e.g. vqjax_photos/128).",
        "Your own images: --config.dataset.name=image_folder --config.dataset.data_dir=DIR "
        "(DIR/train/<class>/*.jpg, DIR/validation/...).",
        "A tfds dataset: its tfds name (imagenet2012, celeb_a_hq/256, cifar10, ...; see "
        "https://www.tensorflow.org/datasets/catalog), prepared once as array_record in data_dir: "
        f"tfds build NAME --data_dir={data_dir} --file_format=array_record; or one written by "
        "python -m launch.prepare_data, by the name it printed.",
    ])


def make_source(
    name: str, split: str, data_dir: str | os.PathLike | None = None, *, decode_images: bool = True
):
    """The random-access data source of `name`/`split`: tfds array_record files in `data_dir`,
    or an image folder (`name="image_folder"`, `data_dir` = the folder holding train/ ...).

    Built-in datasets (`vqjax_photos`, `vqjax_digits`) are built on first use. With
    `decode_images=False` images come back as encoded bytes (the pipeline decodes them itself so
    that an undecodable one can be skipped); an image folder always gives bytes. Raises
    `DatasetNotFoundError` when the dataset is not prepared there, or the folder holds no images
    (`folder.ImageFolderError`, a subclass; the message lists what it found).
    """
    if folder.is_image_folder(name):
        if not data_dir:
            raise folder.ImageFolderError(
                "dataset.name='image_folder' needs dataset.data_dir: the folder holding train/ "
                "(and validation/ or val/), e.g. --config.dataset.data_dir=/data/my_images")
        source = folder.ImageFolderSource(data_dir, split)
        if decode_images:
            return _DecodedSource(source)
        return source
    data_dir = builtin.default_data_dir(data_dir)
    if builtin.is_builtin(name):
        builder = builtin.ensure_built(name, data_dir)
    else:
        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except tfds.core.registered.DatasetNotFoundError as error:
            raise DatasetNotFoundError(_unknown_dataset_message(name, data_dir)) from error
        if not builder.is_prepared():
            raise DatasetNotFoundError(
                f"Dataset {name!r} is not prepared in data_dir {data_dir!r} "
                f"(no {builder.data_dir}/dataset_info.json).\n  " + _how_to_prepare(name, data_dir)
            )
    decoders = None
    if not decode_images:
        features = builder.info.features
        image_keys = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
        decoders = {k: tfds.decode.SkipDecoding() for k in image_keys} or None
    try:
        return tfds.data_source(
            name, split=split, data_dir=data_dir, decoders=decoders, download=False
        )
    except NotImplementedError as error:  # prepared, but as TFRecord: no random access
        raise DatasetNotFoundError(
            f"Dataset {name!r} in {data_dir!r} is stored as {builder.info.file_format}, which has no "
            "random access.\n  " + _how_to_prepare(name, data_dir)
        ) from error


class _DecodedSource:
    """A source of encoded images that decodes them on access (`make_source(decode_images=True)`)."""

    def __init__(self, source):
        self._source, self._decode = source, DecodeImage()
        self.class_names = getattr(source, "class_names", None)

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict:
        return self._decode.map(self._source[index])


# ------------------------------------------------------------------------------------------------
# Preprocessing: grain transforms on {"image": ..., "label": ...} dicts
# ------------------------------------------------------------------------------------------------


def pil_to_rgb(pil: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """Any decoded PIL image -> uint8 [H, W, 3] RGB, upright.

    The EXIF orientation is applied (photos from cameras and phones); greyscale is repeated,
    CMYK converted (Pillow handles Adobe's inverted CMYK JPEGs), 16-bit greyscale scaled to 8
    bits, and transparency (RGBA, LA, palette with a transparent colour) composited over
    `background` (white), so that transparent pixels do not show whatever colour they store.
    """
    ImageOps.exif_transpose(pil, in_place=True)  # (a copy otherwise, even when upright)
    if pil.mode in ("I;16", "I;16B", "I;16L", "I"):
        sixteen_bit = np.asarray(pil, np.float64)  # 0..65535 (PNG's 16-bit greyscale)
        pil = Image.fromarray(np.round(sixteen_bit / 257.0).clip(0, 255).astype(np.uint8))
    if pil.mode == "P" and "transparency" in pil.info:
        pil = pil.convert("RGBA")
    if pil.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = pil.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        pil = Image.alpha_composite(canvas, rgba)
    return np.asarray(pil.convert("RGB"))




def _resize_box(image: np.ndarray, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """Crops `box` = (left, top, right, bottom) of a uint8 [H, W, 3] image and resizes it to size^2."""
    resized = Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC, box=box)
    return np.asarray(resized)  # [size, size, 3] uint8 (bicubic overshoot is clipped)


class DecodeImage(grain.transforms.Map):
    """Encoded bytes (or an already decoded array) -> uint8 [H, W, 3] RGB."""

    def __init__(self, key: str = "image"):
        self.key = key

    def map(self, element: dict) -> dict:
        image = element[self.key]
        if isinstance(image, (bytes, np.bytes_)):
            with Image.open(io.BytesIO(image)) as pil:
                image = pil_to_rgb(pil)  # decodes fully: corrupt data raises here
        else:
            image = np.asarray(image)
            if image.ndim == 2:
                image = image[..., None]
            if image.shape[-1] == 1:
                image = np.repeat(image, 3, axis=-1)
            image = image[..., :3]
        if image.dtype != np.uint8 or image.ndim != 3 or min(image.shape[:2]) < 1:
            raise ValueError(f"not an image: dtype {image.dtype}, shape {image.shape}")
        return {**element, self.key: image}


class RandomResizedCrop(grain.transforms.RandomMap):
    """Inception-style crop: a random box of `area_range` of the image area and an aspect ratio
    log-uniform in `aspect_ratio_range`, resized to `size`. After 10 failed draws it falls back to
    the largest central box whose aspect ratio is within range (torchvision's rule)."""

    def __init__(
        self,
        size: int,
        area_range: tuple[float, float] = (0.08, 1.0),
        aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3),
        key: str = "image",
    ):
        self.size, self.key = size, key
        self.area_range, self.aspect_ratio_range = area_range, aspect_ratio_range

    def crop_box(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        area = height * width
        log_ratio = np.log(self.aspect_ratio_range)
        for _ in range(10):
            target_area = area * rng.uniform(*self.area_range)
            ratio = math.exp(rng.uniform(*log_ratio))
            w = round(math.sqrt(target_area * ratio))
            h = round(math.sqrt(target_area / ratio))
            if 0 < w <= width and 0 < h <= height:
                top = int(rng.integers(0, height - h + 1))
                left = int(rng.integers(0, width - w + 1))
                return left, top, left + w, top + h
        ratio = width / height
        if ratio < self.aspect_ratio_range[0]:
            w, h = width, round(width / self.aspect_ratio_range[0])
        elif ratio > self.aspect_ratio_range[1]:
            w, h = round(height * self.aspect_ratio_range[1]), height
        else:
            w, h = width, height
        top, left = (height - h) // 2, (width - w) // 2
        return left, top, left + w, top + h

    def random_map(self, element: dict, rng: np.random.Generator) -> dict:
        image = element[self.key]  # [H, W, 3] uint8
        box = self.crop_box(image.shape[0], image.shape[1], rng)
        return {**element, self.key: _resize_box(image, box, self.size)}


class CenterCrop(grain.transforms.Map):
    """The central square of side `crop_fraction` * min(H, W), resized to `size`."""

    def __init__(self, size: int, crop_fraction: float = 1.0, key: str = "image"):
        self.size, self.crop_fraction, self.key = size, crop_fraction, key

    def map(self, element: dict) -> dict:
        image = element[self.key]
        height, width = image.shape[:2]
        side = max(1, round(min(height, width) * self.crop_fraction))
        top, left = (height - side) // 2, (width - side) // 2
        box = (left, top, left + side, top + side)
        return {**element, self.key: _resize_box(image, box, self.size)}


class RandomFlip(grain.transforms.RandomMap):
    """Horizontal flip with probability 1/2."""

    def __init__(self, key: str = "image"):
        self.key = key

    def random_map(self, element: dict, rng: np.random.Generator) -> dict:
        if rng.random() < 0.5:
            return {**element, self.key: element[self.key][:, ::-1]}
        return element


class ToSymmetricFloat(grain.transforms.Map):
    """uint8 [0, 255] -> float32 [-1, 1]."""

    def __init__(self, key: str = "image"):
        self.key = key

    def map(self, element: dict) -> dict:
        image = np.asarray(element[self.key], np.float32) * np.float32(1 / 127.5) - np.float32(1)
        return {**element, self.key: image}


def preprocess_ops(
    image_size: int,
    train: bool,
    *,
    crop: str | None = None,
    flip: bool | None = None,
    area_range: tuple[float, float] = (0.08, 1.0),
    aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3),
    center_crop_fraction: float = 1.0,
) -> list[grain.transforms.Map | grain.transforms.RandomMap]:
    """The ops after `DecodeImage`: crop (train: random_resized, eval: center), flip (train), [-1, 1]."""
    crop = crop or ("random_resized" if train else "center")
    flip = train if flip is None else flip
    if crop == "random_resized":
        crop_op = RandomResizedCrop(image_size, tuple(area_range), tuple(aspect_ratio_range))
    elif crop == "center":
        crop_op = CenterCrop(image_size, center_crop_fraction)
    else:
        raise ValueError(f"crop must be 'random_resized' or 'center', got {crop!r}")
    return [crop_op, *([RandomFlip()] if flip else []), ToSymmetricFloat()]


class Preprocess(grain.transforms.MapWithIndex):
    """Applies `ops` to the example at global position `index` with rng default_rng([seed, index])."""

    def __init__(self, ops, seed: int):
        self.ops, self.seed = list(ops), seed

    def map_with_index(self, index: int, element: dict) -> dict:
        rng = np.random.default_rng([self.seed, index])
        for op in self.ops:
            if isinstance(op, grain.transforms.RandomMap):
                element = op.random_map(element, rng)
            else:
                element = op.map(element)
        return element


# ------------------------------------------------------------------------------------------------
# grain datasets over global positions
# ------------------------------------------------------------------------------------------------


class ReadOrReplace(grain.MapDataset):
    """Position g -> decoded, preprocessed example. One whose record cannot be read or decoded is
    replaced by the next readable position (g+1, g+2, ...), marked `mask=False`, `skipped=1`.

    Only reading and decoding are guarded: an error in the later ops is a bug and propagates.
    """

    _MUTATES_ELEMENT_SPEC = True

    def __init__(
        self, parent: grain.MapDataset, preprocess: Preprocess, image_key: str, label_key: str
    ):
        super().__init__(parent)
        self._decode = DecodeImage()
        self._preprocess, self._image_key, self._label_key = preprocess, image_key, label_key

    def __len__(self) -> int:
        return len(self._parent)

    def __str__(self) -> str:
        return "ReadOrReplace"

    def _read_decoded(self, position: int) -> dict:
        record = self._parent[position]
        label = np.int32(record.get(self._label_key, 0))
        element = {"image": record[self._image_key], "label": label}
        return self._decode.map(element)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        for offset in range(MAX_CONSECUTIVE_UNREADABLE):
            try:
                element = self._read_decoded(index + offset)
            except Exception as error:  # noqa: BLE001 - any unreadable example is skipped
                log.warning("skipping unreadable example at position %d: %r", index + offset, error)
                last_error = error
                continue
            element = self._preprocess.map_with_index(index, element)
            replaced = offset > 0
            return {
                "image": element["image"],
                "label": element["label"],
                "mask": np.bool_(not replaced),
                "skipped": np.int32(replaced),
            }
        raise RuntimeError(
            f"{MAX_CONSECUTIVE_UNREADABLE} consecutive unreadable examples from position {index} "
            f"(last error: {last_error!r}): the dataset looks corrupt"
        )


class GlobalBatchSlice(grain.MapDataset):
    """Local element k of process p -> global position t*B + p*b + j  (t, j = divmod(k, b)).

    With `pad`, the last partial global batch is completed with `pad_element` (mask=False);
    without, it is dropped.
    """

    _MUTATES_ELEMENT_SPEC = False

    def __init__(
        self,
        parent: grain.MapDataset,
        global_batch_size: int,
        process_index: int,
        process_count: int,
        pad_element: dict | None = None,
    ):
        super().__init__(parent)
        self._global_batch_size = global_batch_size
        self._local_batch_size = global_batch_size // process_count
        self._process_index = process_index
        self._pad_element = pad_element
        if pad_element is None:
            num_batches = len(parent) // global_batch_size
        else:
            num_batches = -(-len(parent) // global_batch_size)
        self._length = num_batches * self._local_batch_size

    def __len__(self) -> int:
        return self._length

    def __str__(self) -> str:
        return f"GlobalBatchSlice[{self._process_index}]"

    def global_position(self, index: int) -> int:
        step, j = divmod(index, self._local_batch_size)
        return step * self._global_batch_size + self._process_index * self._local_batch_size + j

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        position = self.global_position(index)
        if self._pad_element is not None and position >= len(self._parent):
            return dict(self._pad_element)
        return self._parent[position]


# ------------------------------------------------------------------------------------------------
# Iterator
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StreamInfo:
    """What a trainer needs to know about a stream before its first batch."""

    dataset: str
    split: str
    global_batch_size: int
    local_batch_size: int
    image_size: int
    num_examples: int  # in the split
    num_classes: int | None  # from the tfds ClassLabel feature; None when unknown
    process_index: int
    process_count: int
    class_names: tuple[str, ...] | None = None  # label id -> name, when the dataset names them

    @property
    def steps_per_epoch(self) -> int:
        """Full global batches per pass over the split."""
        return self.num_examples // self.global_batch_size


class InputIterator:
    """Iterates this process's batches {"image": float32 [b, S, S, 3], "label": int32 [b]}
    (+ "mask": bool [b] in eval); `get_state()`/`set_state()` checkpoint its position.

    The state is {"step", "num_skipped"} plus what identifies the stream (dataset, split, seed,
    global batch size); it does not depend on the process count, so it restores on any topology.
    """

    def __init__(
        self,
        batches: grain.MapDataset,
        *,
        identity: dict[str, Any],
        keep_mask: bool,
        num_threads: int,
        prefetch_batches: int,
        num_workers: int,
        info: StreamInfo,
    ):
        self._batches = batches
        self._identity = identity
        self._keep_mask = keep_mask
        self._read_options = grain.ReadOptions(
            num_threads=num_threads,
            prefetch_buffer_size=max(prefetch_batches, num_threads) if num_threads else 0,
        )
        self._num_workers = num_workers
        self._iterator = None
        self.step = 0
        self.num_skipped = 0
        self.info = info

    def __len__(self) -> int:
        """Number of batches the stream holds (sys.maxsize // local batch size when endless)."""
        return len(self._batches)

    def __iter__(self):
        return self

    def _start(self):
        dataset = self._batches[self.step :].to_iter_dataset(self._read_options)
        if self._num_workers > 0:
            from absl import flags

            if not flags.FLAGS.is_parsed():  # grain's workers read absl flags (defaults suffice)
                flags.FLAGS.mark_as_parsed()
            options = grain.MultiprocessingOptions(num_workers=self._num_workers)
            dataset = dataset.mp_prefetch(options)
        self._iterator = iter(dataset)

    def __next__(self) -> dict[str, np.ndarray]:
        if self._iterator is None:
            self._start()
        batch = next(self._iterator)
        skipped = int(np.sum(batch.pop("skipped")))
        if skipped:
            self.num_skipped += skipped
            log.warning(
                "%s: replaced %d unreadable examples in the batch of step %d (%d so far in this process)",
                self._identity["dataset"], skipped, self.step, self.num_skipped,
            )
        if not self._keep_mask:
            batch.pop("mask")
        self.step += 1
        return batch

    def get_state(self) -> dict[str, Any]:
        return {**self._identity, "step": self.step, "num_skipped": self.num_skipped}

    def set_state(self, state: dict[str, Any]) -> None:
        mismatched = {
            key: (state[key], value)
            for key, value in self._identity.items()
            if key in state and state[key] != value
        }
        if mismatched:
            details = ", ".join(f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in mismatched.items())
            raise ValueError(f"data iterator state is for another stream ({details})")
        self.close()
        self.step = int(state["step"])
        self.num_skipped = int(state.get("num_skipped", 0))

    def close(self) -> None:
        """Stops prefetch threads/worker processes (a later next() restarts at the same step)."""
        if self._iterator is not None and hasattr(self._iterator, "close"):
            self._iterator.close()
        self._iterator = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _resolve_processes(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    return process_index, process_count


def input_pipeline(
    dataset: str | Sequence[dict],
    split: str,
    global_batch_size: int,
    image_size: int,
    seed: int = 0,
    *,
    train: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
    data_dir: str | os.PathLike | None = None,
    num_epochs: int | None = None,
    crop: str | None = None,
    flip: bool | None = None,
    area_range: tuple[float, float] = (0.08, 1.0),
    aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3),
    center_crop_fraction: float = 1.0,
    image_key: str = "image",
    label_key: str = "label",
    num_threads: int = 0,
    prefetch_batches: int = 2,
    num_workers: int = 0,
) -> InputIterator:
    """This process's iterator over the global batches of `dataset`/`split`.

    Args:
      dataset: a tfds name ("imagenet2012", "celeb_a_hq/256", "vqjax_photos/64", ...),
        "image_folder" (`data_dir` holds train/ and validation/ or val/: see `folder.py`), or any
        random-access sequence of {image_key: encoded bytes or uint8 array, label_key: int}.
      global_batch_size: examples per step over all processes (divisible by process_count).
      train: shuffle, endless, random-resized crop + flip, the partial last batch dropped. Eval
        (False): dataset order, one epoch, center crop, the last batch padded, plus "mask" [b].
      process_index, process_count: default jax.process_index(), jax.process_count().
      num_epochs: None = endless (train default); eval defaults to 1.
      crop, flip, area_range, aspect_ratio_range, center_crop_fraction: see `preprocess_ops`.
      num_threads: grain threads reading/processing batches (0: in the calling thread);
        num_workers: grain worker processes (0: none). Neither changes the batches.
    """
    process_index, process_count = _resolve_processes(process_index, process_count)
    if global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size={global_batch_size} is not divisible by process_count={process_count}"
        )
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} outside [0, {process_count})")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    if isinstance(dataset, str):
        source = make_source(dataset, split, data_dir, decode_images=False)
        name = dataset
    else:
        source, name = dataset, getattr(dataset, "name", type(dataset).__name__)
    if len(source) == 0:
        raise ValueError(f"dataset {name!r} split {split!r} is empty")
    if num_epochs is None and not train:
        num_epochs = 1

    ops = preprocess_ops(
        image_size, train, crop=crop, flip=flip, area_range=area_range,
        aspect_ratio_range=aspect_ratio_range, center_crop_fraction=center_crop_fraction,
    )
    records = grain.MapDataset.source(source)
    if train:
        # A seed derived from `seed` so that (seed, epoch + 1) does not reuse (seed + 1, epoch).
        records = records.shuffle(seed=int(np.random.SeedSequence(seed).generate_state(1)[0]))
    records = records.repeat(num_epochs)
    examples = ReadOrReplace(records, Preprocess(ops, seed), image_key, label_key)
    pad_element = None
    if not train:
        pad_element = {
            "image": np.zeros((image_size, image_size, 3), np.float32),
            "label": np.int32(0),
            "mask": np.bool_(False),
            "skipped": np.int32(0),
        }
    local = GlobalBatchSlice(examples, global_batch_size, process_index, process_count, pad_element)
    local_batch_size = global_batch_size // process_count
    batches = local.batch(local_batch_size, drop_remainder=True)

    features = getattr(getattr(source, "dataset_info", None), "features", None)
    label_feature = features[label_key] if features is not None and label_key in features else None
    class_names = getattr(source, "class_names", None)  # image folders
    if class_names is None and getattr(label_feature, "names", None):
        class_names = label_feature.names
    num_classes = getattr(label_feature, "num_classes", None)
    if num_classes is None and class_names:
        num_classes = len(class_names)
    info = StreamInfo(
        dataset=name,
        split=split,
        global_batch_size=global_batch_size,
        local_batch_size=local_batch_size,
        image_size=image_size,
        num_examples=len(source),
        num_classes=num_classes,
        process_index=process_index,
        process_count=process_count,
        class_names=tuple(class_names) if class_names else None,
    )
    identity = {"dataset": name, "split": split, "seed": seed, "global_batch_size": global_batch_size}
    return InputIterator(
        batches,
        identity=identity,
        keep_mask=not train,
        num_threads=num_threads,
        prefetch_batches=prefetch_batches,
        num_workers=num_workers,
        info=info,
    )


def record_class_names(dataset_config, *, require_eval_split: bool = False) -> None:
    """For an image folder, store its class names (label id -> class folder name, sorted) in
    `dataset_config.class_names`, so that the run's saved config names its labels (sampling,
    notebooks). Other datasets are left unchanged (tfds keeps the names in its dataset_info).

    Run before training: a folder without train/ or without images fails here, listing what it
    holds; with `require_eval_split`, so does one without the eval split (not after the first
    training steps, at the first evaluation).
    """
    if not folder.is_image_folder(dataset_config.name):
        return
    source = folder.ImageFolderSource(dataset_config.data_dir,
                                      dataset_config.get("train_split", "train"))
    eval_split = dataset_config.get("eval_split", "validation")
    if require_eval_split:
        try:
            folder.split_directory(dataset_config.data_dir, eval_split)
        except folder.ImageFolderError as error:
            raise folder.ImageFolderError(
                f"{error}\n  (the run evaluates on it every config.eval_every_steps: add the "
                "folder, or set --config.eval_every_steps=0)") from None
    with dataset_config.unlocked():
        dataset_config.class_names = list(source.class_names)
