"""Pre-encoded token datasets: a tokenizer's indices for every image of a split, as array_record
files, read back with the same global-batch determinism as the image pipeline.

Large MaskGIT runs encode the dataset once (`python -m launch.encode_tokens`) instead of running the
tokenizer's encoder in every step. A dataset is a directory:

    tokens_info.json                        what was encoded (written last: its presence means the
                                            dataset is complete)
    train-00000-of-00001.array_record       one file per encoding process and split
    validation-00000-of-00001.array_record

Each record is raw little-endian bytes: the int32 label, then the tokens of the image
(`token_shape`, `dtype`), then, when `flip` is true, the tokens of its horizontal mirror image. The
training stream picks one of the two per example with probability 1/2 (rng [seed, position]), which
is the pre-encoded form of the random flip; a random-resized crop can only be applied on the fly.

    it = token_pipeline(dir, "train", global_batch_size=256, seed=0)
    batch = next(it)     # {"tokens": int32 [b, h, w(, Q)], "label": int32 [b]}
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import grain
import jax
import numpy as np

from vqjax import inference
from vqjax.data.pipeline import (
    GlobalBatchSlice,
    InputIterator,
    StreamInfo,
    _resolve_processes,
    input_pipeline,
)
from vqjax.data.run_input import first_examples
from vqjax.paths import resolve
from vqjax.train import mesh as mesh_lib
from vqjax.train.metrics_writer import Progress

log = logging.getLogger("vqjax.data.tokens")

INFO_FILE = "tokens_info.json"
FORMAT = "vqjax.tokens/1"


class TokenRecords:
    """Encodes / decodes one record: label, tokens and (optionally) the mirrored image's tokens."""

    def __init__(self, token_shape, dtype: str, flip: bool):
        self.token_shape = tuple(int(d) for d in token_shape)
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.flip = bool(flip)
        self.token_count = int(np.prod(self.token_shape))
        self.record_bytes = 4 + self.token_count * self.dtype.itemsize * (2 if flip else 1)

    def encode(self, label: int, tokens: np.ndarray, flipped: np.ndarray | None = None) -> bytes:
        if tuple(tokens.shape) != self.token_shape:
            raise ValueError(f"tokens of shape {tokens.shape}, expected {self.token_shape}")
        if self.flip != (flipped is not None):
            raise ValueError("flipped tokens are required exactly when flip=True")
        parts = [np.int32(label).astype("<i4").tobytes(), tokens.astype(self.dtype).tobytes()]
        if flipped is not None:
            parts.append(flipped.astype(self.dtype).tobytes())
        return b"".join(parts)

    def decode(self, record: bytes) -> tuple[np.int32, np.ndarray, np.ndarray | None]:
        if len(record) != self.record_bytes:
            raise ValueError(f"token record of {len(record)} bytes, expected {self.record_bytes}: "
                             "the dataset does not match its tokens_info.json")
        label = np.frombuffer(record, "<i4", count=1)[0]
        values = np.frombuffer(record, self.dtype, offset=4).astype(np.int32)
        tokens = values[:self.token_count].reshape(self.token_shape)
        flipped = values[self.token_count:].reshape(self.token_shape) if self.flip else None
        return label, tokens, flipped


def token_dtype(vocab_size: int) -> str:
    """The smallest unsigned dtype that holds indices [0, vocab_size)."""
    return "uint16" if vocab_size <= 2**16 else "int32"


def shard_name(split: str, process_index: int, process_count: int) -> str:
    return f"{split}-{process_index:05d}-of-{process_count:05d}.array_record"


def read_info(directory: str | os.PathLike) -> dict[str, Any]:
    """The tokens_info.json of a pre-encoded dataset, with a clear error when it is missing."""
    path = Path(directory) / INFO_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{directory!r} is not a complete pre-encoded token dataset (no {INFO_FILE}); create "
            "it with: python -m launch.encode_tokens --tokenizer_workdir=TOKENIZER_RUN "
            f"--out={directory}")
    info = json.loads(path.read_text())
    if info.get("format") != FORMAT:
        raise ValueError(f"{path} has format {info.get('format')!r}, expected {FORMAT!r}")
    return info


def write_info(directory: str | os.PathLike, info: dict[str, Any]) -> Path:
    """Writes tokens_info.json atomically (the dataset's completion marker)."""
    path = Path(directory) / INFO_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"format": FORMAT, **info}, indent=2))
    os.replace(tmp, path)
    return path


class ShardWriter:
    """Writes one process's records of a split to `<split>-<p>-of-<P>.array_record`; the file
    appears under its final name only on `close()` (a crash leaves no partial shard)."""

    def __init__(self, directory: str | os.PathLike, split: str, process_index: int,
                 process_count: int):
        from array_record.python.array_record_module import ArrayRecordWriter

        self.path = Path(directory) / shard_name(split, process_index, process_count)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._writer = ArrayRecordWriter(str(self._tmp), "group_size:1")
        self.count = 0

    def write(self, record: bytes) -> None:
        self._writer.write(record)
        self.count += 1

    def close(self) -> Path:
        self._writer.close()
        os.replace(self._tmp, self.path)
        return self.path


class _DecodeTokens(grain.transforms.MapWithIndex):
    def __init__(self, records: TokenRecords, seed: int, flip: bool):
        self.records, self.seed, self.flip = records, seed, flip

    def map_with_index(self, index: int, record: bytes) -> dict:
        label, tokens, flipped = self.records.decode(record)
        if self.flip and np.random.default_rng([self.seed, index]).random() < 0.5:
            tokens = flipped
        return {"tokens": tokens, "label": label, "mask": np.bool_(True), "skipped": np.int32(0)}


def token_pipeline(
    directory: str | os.PathLike,
    split: str,
    global_batch_size: int,
    seed: int = 0,
    *,
    train: bool = True,
    flip: bool | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    num_epochs: int | None = None,
    num_threads: int = 0,
    prefetch_batches: int = 2,
) -> InputIterator:
    """This process's iterator over global batches {"tokens", "label"} of a pre-encoded split.

    Same rules as `input_pipeline`: train shuffles globally (seed, epoch) and drops the partial
    last batch; eval reads the split once in order, pads the last batch and adds "mask" [b]. The
    global batch at step t does not depend on the process count; `get_state()` is the step.
    flip (default: train and the dataset has mirrored tokens) picks the mirror image's tokens
    with probability 1/2.
    """
    process_index, process_count = _resolve_processes(process_index, process_count)
    if global_batch_size % process_count:
        raise ValueError(f"global_batch_size={global_batch_size} is not divisible by "
                         f"process_count={process_count}")
    info = read_info(directory)
    if split not in info["splits"]:
        raise ValueError(f"pre-encoded dataset {str(directory)!r} has splits "
                         f"{sorted(info['splits'])}, not {split!r}")
    files = [str(Path(directory) / f) for f in info["splits"][split]["files"]]
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"pre-encoded dataset {str(directory)!r} lacks {missing}")
    records = TokenRecords(info["token_shape"], info["dtype"], info["flip"])
    flip = (train and records.flip) if flip is None else flip
    if flip and not records.flip:
        raise ValueError(f"flip=True but {str(directory)!r} was encoded without mirrored tokens "
                         "(launch.encode_tokens --flip)")
    source = grain.sources.ArrayRecordDataSource(files)
    if len(source) == 0:
        raise ValueError(f"pre-encoded split {split!r} of {str(directory)!r} is empty")
    if num_epochs is None and not train:
        num_epochs = 1

    dataset = grain.MapDataset.source(source)
    if train:
        dataset = dataset.shuffle(seed=int(np.random.SeedSequence(seed).generate_state(1)[0]))
    dataset = dataset.repeat(num_epochs).map_with_index(_DecodeTokens(records, seed, flip))
    pad_element = None
    if not train:
        pad_element = {"tokens": np.zeros(records.token_shape, np.int32), "label": np.int32(0),
                       "mask": np.bool_(False), "skipped": np.int32(0)}
    local = GlobalBatchSlice(dataset, global_batch_size, process_index, process_count, pad_element)
    local_batch_size = global_batch_size // process_count
    name = f"tokens:{info['dataset']}"
    stream_info = StreamInfo(
        dataset=name, split=split, global_batch_size=global_batch_size,
        local_batch_size=local_batch_size, image_size=int(info["image_size"]),
        num_examples=len(source), num_classes=info.get("num_classes"),
        process_index=process_index, process_count=process_count)
    identity = {"dataset": name, "split": split, "seed": seed,
                "global_batch_size": global_batch_size}
    return InputIterator(
        local.batch(local_batch_size, drop_remainder=True), identity=identity, keep_mask=not train,
        num_threads=num_threads, prefetch_batches=prefetch_batches, num_workers=0,
        info=stream_info)


# ------------------------------------------------------------------------------------------------
# Pre-encoding a dataset into tokens (python -m launch.encode_tokens)
# ------------------------------------------------------------------------------------------------
def _local_rows(array: jax.Array) -> np.ndarray:
    """This process's rows of a batch-sharded global array, in global order."""
    shards = sorted(array.addressable_shards, key=lambda shard: shard.index[0].start or 0)
    seen, rows = set(), []
    for shard in shards:
        start = shard.index[0].start or 0
        if start not in seen:  # replicas of the same rows (not with the batch sharding)
            seen.add(start)
            rows.append(np.asarray(shard.data))
    return np.concatenate(rows)


def pre_encode(tokenizer_workdir: str, out: str, *, splits=("train", "validation"),
               dataset: str | None = None, data_dir: str | None = None,
               image_size: int | None = None, batch_size: int = 256, flip: bool = True,
               overwrite: bool = False, limit: int | None = None,
               tokenizer_step: int | None = None) -> dict:
    """Encodes every image of `splits` with the tokenizer of `tokenizer_workdir` (center crop at
    its training resolution, plus the mirror image's tokens when `flip`) into a pre-encoded token
    dataset in `out` (the format above); returns its tokens_info. `tokenizer_step` picks
    a checkpoint (default: the latest); tokens_info records it and its fingerprint. Sharded over all devices;
    every process writes the examples it encoded; tokens_info.json is written last."""
    tokenizer_workdir, out, data_dir = resolve(tokenizer_workdir), resolve(out), resolve(data_dir)
    out_dir = Path(out)
    if (out_dir / INFO_FILE).exists() and not overwrite:
        raise FileExistsError(f"{out!r} already holds a token dataset; pass overwrite=True "
                              "(--overwrite) to replace it")
    out_dir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:  # the old dataset is incomplete from here until the new info
        (out_dir / INFO_FILE).unlink(missing_ok=True)
    mesh = mesh_lib.make_mesh()
    tokenizer = inference.load_tokenizer(tokenizer_workdir, tokenizer_step, mesh=mesh)
    tok_cfg = tokenizer.config
    dataset = dataset or tok_cfg.dataset.name
    data_dir = data_dir or tok_cfg.dataset.get("data_dir") or None
    image_size = image_size or int(tok_cfg.dataset.image_size)
    batch_size = max(mesh.size, batch_size - batch_size % mesh.size)
    quantizer = tokenizer.model.built_quantizer()
    vocab = int(quantizer.codebook_size)
    records = None

    @functools.partial(jax.jit, out_shardings=mesh_lib.batch_sharding(mesh))
    def encode_batch(variables, images):
        tokens = inference.encode_indices(tokenizer.model, variables, images)
        if not flip:
            return tokens, None
        return tokens, inference.encode_indices(tokenizer.model, variables, images[:, :, ::-1])

    info_splits, num_classes = {}, None
    p, count = jax.process_index(), jax.process_count()
    for split in splits:
        it = input_pipeline(dataset, split, global_batch_size=batch_size, image_size=image_size,
                            train=False, data_dir=data_dir, process_index=p, process_count=count)
        num_classes = it.info.num_classes
        total = it.info.num_examples if limit is None else min(limit, it.info.num_examples)
        steps = math.ceil(total / batch_size)
        writer = ShardWriter(out_dir, split, p, count)
        progress = Progress(steps, 0, enabled=p == 0)
        start = time.perf_counter()
        with it:
            for b, local in first_examples(it, total, batch_size, process_index=p):
                batch = mesh_lib.global_batch(mesh, {"image": local["image"]})
                tokens, flipped = encode_batch(tokenizer.variables, batch["image"])
                tokens = _local_rows(tokens)
                flipped = None if flipped is None else _local_rows(flipped)
                if records is None:
                    records = TokenRecords(tokens.shape[1:], token_dtype(vocab), flip)
                for i in np.flatnonzero(local["mask"]):
                    writer.write(records.encode(int(local["label"][i]), tokens[i],
                                                None if flipped is None else flipped[i]))
                progress.update(b + 1, img_s=(b + 1) * batch_size / (time.perf_counter() - start))
        writer.close()
        progress.close()
        info_splits[split] = {"files": [shard_name(split, q, count) for q in range(count)]}
        log.info("encoded %s/%s: %d examples in this process", dataset, split, writer.count)

    if count > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("vqjax.pre_encode.done")
    info = {
        "tokenizer_workdir": str(Path(tokenizer_workdir).resolve()),
        "tokenizer_step": tokenizer.step, "tokenizer_fingerprint": tokenizer.fingerprint,
        "dataset": dataset, "image_size": image_size,
        "token_shape": list(records.token_shape), "dtype": records.dtype.name, "flip": flip,
        "codebook_size": vocab, "num_classes": num_classes, "crop": "center",
        "splits": info_splits,
    }
    if p == 0:
        for split, entry in info_splits.items():
            files = [str(out_dir / f) for f in entry["files"]]
            entry["num_examples"] = len(grain.sources.ArrayRecordDataSource(files))
        write_info(out_dir, info)
    return info
