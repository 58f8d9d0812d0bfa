"""Datasets and the input pipeline (tfds data sources + grain; no TensorFlow at run time).

    from vqjax import data
    it = data.input_pipeline("vqjax_photos", "train", global_batch_size=64, image_size=64, seed=0)
    batch = next(it)            # {"image": float32 [b, 64, 64, 3] in [-1, 1], "label": int32 [b]}
    state = it.get_state()      # save in the checkpoint; it.set_state(state) resumes exactly

Datasets come from tfds by name; `vqjax_photos` and `vqjax_digits` are built from files that ship
inside scikit-image / scikit-learn on first use; `image_folder` reads a folder of JPEG/PNG/WebP
files (data_dir=DIR with DIR/train/<class>/..., see `folder.py`). See docs/data.md and `pipeline.py` for the
determinism rule (the global batch at step t does not depend on the number of processes).
"""

from vqjax.data.builtin import (
    BUILTIN_DATASETS,
    build_builtin,
    default_data_dir,
    ensure_built,
    is_builtin,
)
from vqjax.data.folder import ImageFolderError, ImageFolderSource
from vqjax.data.pipeline import (
    CenterCrop,
    DatasetNotFoundError,
    DecodeImage,
    InputIterator,
    RandomFlip,
    RandomResizedCrop,
    StreamInfo,
    ToSymmetricFloat,
    input_pipeline,
    make_source,
    preprocess_ops,
    record_class_names,
)
from vqjax.data.run_input import dataset_pipeline, first_examples

__all__ = [
    "BUILTIN_DATASETS",
    "CenterCrop",
    "DatasetNotFoundError",
    "DecodeImage",
    "ImageFolderError",
    "ImageFolderSource",
    "InputIterator",
    "RandomFlip",
    "RandomResizedCrop",
    "StreamInfo",
    "ToSymmetricFloat",
    "build_builtin",
    "dataset_pipeline",
    "default_data_dir",
    "ensure_built",
    "first_examples",
    "input_pipeline",
    "is_builtin",
    "make_source",
    "preprocess_ops",
    "record_class_names",
]
