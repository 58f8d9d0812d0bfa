r"""Pre-encode a dataset into token indices with a trained tokenizer, for MaskGIT training.

    python -m launch.encode_tokens --tokenizer_workdir=/tmp/tok_digits --out=/tmp/tokens_digits
    python -m launch.train --config=configs/maskgit.py:tiny --workdir=/tmp/maskgit_digits \
        --config.tokenizer_workdir=/tmp/tok_digits --config.tokens_dir=/tmp/tokens_digits

Restores the tokenizer's latest checkpoint (or --tokenizer_step; EMA params) onto all devices,
encodes every image of the splits (center crop at the tokenizer's training resolution; with --flip, also its mirror
image), and writes array_record shards plus tokens_info.json (last: a dataset without it is
incomplete) into --out. On a pod run it on every host like training (the same multi-process flags
as launch.train: launch/distributed.py); each host writes the shard of the examples it encoded. See vqjax/data/tokens.py for the format.
"""

from __future__ import annotations

import logging

from absl import app, flags
from absl import logging as absl_logging

from launch.distributed import initialize_distributed

_TOKENIZER = flags.DEFINE_string("tokenizer_workdir", None, "A trained tokenizer run's workdir.")
_OUT = flags.DEFINE_string("out", None, "Directory for the token dataset.")
_SPLITS = flags.DEFINE_list("splits", ["train", "validation"], "Splits to encode.")
_DATASET = flags.DEFINE_string("dataset", None, "tfds name (default: the tokenizer's dataset).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data_dir (default: the tokenizer's).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", None, "Resolution (default: the tokenizer's).")
_BATCH = flags.DEFINE_integer("batch_size", 256, "Global batch size of the encoder.")
_FLIP = flags.DEFINE_bool("flip", True, "Also store the tokens of each mirrored image.")
_LIMIT = flags.DEFINE_integer("limit", None, "Encode at most this many examples per split.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing token dataset.")
_TOKENIZER_STEP = flags.DEFINE_integer("tokenizer_step", None, "Tokenizer checkpoint step "
                                       "(default: the latest; a MaskGIT run needs its pinned one).")
flags.mark_flags_as_required(["tokenizer_workdir", "out"])


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    absl_logging.set_verbosity(absl_logging.WARNING)
    initialize_distributed()
    import jax  # after initialize_distributed: jax.distributed.initialize comes first

    from vqjax.data import tokens

    info = tokens.pre_encode(
        _TOKENIZER.value, _OUT.value, splits=tuple(_SPLITS.value), dataset=_DATASET.value,
        data_dir=_DATA_DIR.value, image_size=_IMAGE_SIZE.value, batch_size=_BATCH.value,
        flip=_FLIP.value, overwrite=_OVERWRITE.value, limit=_LIMIT.value,
        tokenizer_step=_TOKENIZER_STEP.value)
    if jax.process_index() == 0:
        counts = ", ".join(f"{s}: {e.get('num_examples', '?')}" for s, e in info["splits"].items())
        print(f"wrote {info['dataset']} tokens {tuple(info['token_shape'])} ({counts}) to "
              f"{_OUT.value}")


if __name__ == "__main__":
    app.run(main)
