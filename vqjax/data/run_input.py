"""A run's input: its config's dataset fields -> the pipeline, and "the first N examples, masked".

    it = dataset_pipeline(config, config.dataset.eval_split, 64, train=False)
    for index, local in first_examples(it, config.eval_examples, 64):
        local["image"], local["mask"]        # mask: False for padding and rows past N

The one place where `config.dataset` (name, data_dir, crop, flip, ...) is turned into
`input_pipeline` arguments, used by the trainers' eval, `vqjax.evaluation` and pre-encoding.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from vqjax.data.pipeline import InputIterator, input_pipeline


def dataset_pipeline(config, split: str, global_batch_size: int, *, train: bool,
                     image_size: int | None = None, data_dir: str | os.PathLike | None = None,
                     process_index: int | None = None, process_count: int | None = None,
                     num_threads: int = 0) -> InputIterator:
    """The image pipeline of a run's `config.dataset` for `split` (seed `config.seed`).

    `train=True`: the training stream (config.dataset's crop, crop area, flip and worker count).
    `train=False`: center crops in dataset order, the last batch padded with "mask" False.
    `image_size` and `data_dir` default to config.dataset's (an empty data_dir: tfds' default);
    the process index and count default to jax's."""
    ds = config.dataset
    common = dict(global_batch_size=global_batch_size,
                  image_size=image_size or ds.image_size, seed=config.seed,
                  process_index=process_index, process_count=process_count,
                  data_dir=data_dir if data_dir is not None else (ds.data_dir or None))
    if train:
        return input_pipeline(ds.name, split, train=True, crop=ds.crop,
                              area_range=(ds.crop_area_min, 1.0), flip=ds.flip,
                              num_workers=ds.num_workers, num_threads=num_threads, **common)
    return input_pipeline(ds.name, split, train=False, num_threads=num_threads, **common)


def first_examples(iterator: Iterator[dict[str, Any]], num_examples: int,
                   global_batch_size: int, *, process_index: int = 0):
    """Yields (batch index, local batch) over the first `num_examples` examples of an eval-mode
    iterator (one that pads its last batch and gives "mask"), at least one batch. Each local batch
    is this process's rows (rows [p * rows, (p + 1) * rows) of the global batch) with "mask" a
    bool array False for padding and for rows past `num_examples`, so sums over it count
    exactly `num_examples` (fewer when the split is smaller: it stops at its end)."""
    for index in range(max(1, math.ceil(num_examples / global_batch_size))):
        try:
            local = next(iterator)
        except StopIteration:  # the split is smaller than num_examples
            return
        rows = local["mask"].shape[0]
        first = index * global_batch_size + process_index * rows
        mask = np.asarray(local["mask"], bool) & (first + np.arange(rows) < num_examples)
        yield index, {**local, "mask": mask}
