"""MaskGIT (Chang et al. 2022, "MaskGIT: Masked Generative Image Transformer"): a bidirectional
transformer over the token indices of any vqjax tokenizer, trained to predict masked tokens.

    model = maskgit.create("B", vocab_size=1024, num_classes=1000)
    variables = model.init({"params": rng}, tokens, labels)     # tokens int [B, h, w], labels [B]
    logits = model.apply(variables, tokens, labels)              # [B, h, w, vocab_size] float32

    # training (pure helpers below); tokens: the tokenizer's indices
    masked, targets, mask = mask_for_training(model, rng, tokens)       # per the mask schedule
    labels = drop_labels(rng, labels, model.null_label, rate=0.1)      # classifier-free guidance
    logits = model.apply(variables, masked, labels, train=True, rngs={"dropout": rng})
    loss, metrics = loss_and_metrics(logits, targets, mask, model.prediction, label_smoothing=0.1)

    # sampling: MaskGIT's parallel decoding (vqjax.sampling)
    out = jax.jit(functools.partial(generate, model, grid=(16, 16), num_steps=8))(
        variables, rng, labels)                                  # out.tokens [B, h, w]

    # bits mode (MaskBit) for an lfq/bsq tokenizer with 2^14 codes: two 128-way group softmaxes
    model = create("B", vocab_size=2**14, prediction="bits", codebook_splits=2)
    groups = model.model_tokens(tokens)                          # [B, h, w, 2] in [0, 128)
    logits = model.apply(variables, groups, labels)              # [B, h, w, 2, 128] float32

Inputs: token embeddings + 2D position embeddings over the h x w grid, a class token prepended
(label embedding; `num_classes + 1` rows, the last one the null label used for unconditional
generation and guidance; `num_classes=None` has no class token) -> LayerNorm -> dropout -> pre-LN
transformer (`layers.Transformer`, final LayerNorm) -> MaskGIT's MLM head: Dense(width) -> GELU ->
LayerNorm -> logits = h @ token_embedding.T + bias (tied, as MaskGIT/BERT) or a Dense (untied).

The mask token is an explicit extra row of the embedding table: `mask_token_id == vocab_size` (no
negative ids). The tied head scores the `vocab_size` real codes only, never the mask row.

Multi-index tokens ([B, h, w, Q] from `rvq` depths or `grouped` groups; `indices_per_position=Q`):
each index q has its own table [vocab_size + 1, width]; a position's input embedding is the SUM of
its Q embeddings (RQ-Transformer style: one sequence position per spatial position, so the sequence
stays h*w long whatever Q) and there is ONE HEAD PER INDEX q (its own Dense-GELU-LayerNorm, tied
to table q), giving logits [B, h, w, Q, vocab_size]. The Q indices of a position are predicted
independently given the context (decoding samples them jointly per position).

Bits mode (`prediction="bits"`, MaskBit's `LFQBert`, for lfq/bsq's implicit 2^b codebooks): the
b bits of an index (lfq convention: bit_i = (index >> i) & 1, code_i = +-1) are split into
S = `codebook_splits` groups of k = b/S consecutive bits, group s = (index >> s*k) & (2^k - 1)
(MaskBit's `split_factorized_tokens`). The model's tokens are these GROUP TOKENS, [B, h, w, S]
([B, h, w, Q, S] for Q indices), each in [0, 2^k) or the group mask id `mask_token_id == 2^k`;
groups are masked, predicted and decoded independently (`model_tokens(indices)` /
`token_indices(groups)` convert). There is no embedding table: the input is a linear map (Dense
with bias) of the +-1 bits of all groups of a position, masked groups' bits set to 0, no mask
embedding. The head is untied and gives one 2^k-way softmax per group: logits [B, h, w, S, 2^k]
([B, h, w, Q, S, 2^k]). For 14 bits and S = 2: two 128-way softmaxes instead of one 16384-way.
S = b gives one 2-way softmax per bit. Default S (codebook_splits=None): 2, MaskBit's choice for
all its 10-18-bit models, when it divides b; else the smallest divisor of b above 1. b <= 30
(indices are int32).

BERT architecture (`architecture="bert"`, `create("released")`): the network of MaskGIT's released
checkpoints (`maskgit/nets/maskgit_transformer.py`), which `python -m launch.convert --from=maskgit`
converts exactly. One vocabulary [vocab_size codes | num_classes class tokens | mask] of
`word_embedding` rows: the class token of label c is the id vocab_size + c and sits at sequence
position 0, the mask token is the last row (the released mask id -1), so `mask_token_id` =
vocab_size + num_classes and `null_label` = num_classes names that same mask row (an unknown class:
classifier-free guidance and class dropout need no extra row). word + 1D learned position embeddings
over the 1 + h*w positions -> LayerNorm -> dropout -> post-LN blocks (x = LN(x + Drop(MHSA(x))),
x = LN(x + Drop(Dense(GELU(Dense(x)))))) -> MLM head Dense -> GELU -> LayerNorm -> logits =
h @ word_embedding.T + bias, every LayerNorm with BERT's epsilon 1e-12 and every kernel and
embedding initialised N(0, 0.02) truncated at 2 sigma. The class position and the class and mask
columns are dropped from the output, so logits are [B, h, w, vocab_size] as in the default
architecture. Single-index tokens and index prediction only.

Sizes (`create`): tiny 2 layers / 64 / 2 heads / MLP 256 (CPU tests); S 12 / 512 / 8 / 2048;
B 24 / 768 / 16 / 3072 (the paper's); L 24 / 1024 / 16 / 4096 (BERT-large shape, ~300M like
MaskBit's). S/B/L use dropout 0.1 (MaskGIT's); tiny none.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from vqjax.models import layers
from vqjax.sampling import mask_schedule, parallel_decode, sampler
from vqjax.sampling.sampler import bits_to_indices, indices_to_bits  # noqa: F401 (public)

Array = jax.Array
MODEL = "maskgit"
PREDICTIONS = sampler.PREDICTIONS
MAX_BITS = 30  # indices are int32
# for_quantizer's default: predict bits for sign quantizers with more codes than this.
BITS_ABOVE_CODEBOOK_SIZE = 2**16


TransformerSize = layers.TransformerSize


SIZES: dict[str, TransformerSize] = {
    "tiny": TransformerSize(num_layers=2, width=64, num_heads=2, mlp_dim=256),
    "S": TransformerSize(num_layers=12, width=512, num_heads=8, mlp_dim=2048),
    "B": TransformerSize(num_layers=24, width=768, num_heads=16, mlp_dim=3072),
    "L": TransformerSize(num_layers=24, width=1024, num_heads=16, mlp_dim=4096),
}

ARCHITECTURES = ("vqjax", "bert")
BERT_LAYER_NORM_EPSILON = 1e-12  # maskgit_transformer.LAYERNORM_EPSILON

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(size="tiny", dropout_rate=0.0, attention_dropout_rate=0.0),
    # MaskGIT's released ImageNet transformers (256 and 512 px differ only in the token grid).
    "released": dict(size="B", architecture="bert", dropout_rate=0.1, attention_dropout_rate=0.1),
    "S": dict(size="S", dropout_rate=0.1, attention_dropout_rate=0.1),
    "B": dict(size="B", dropout_rate=0.1, attention_dropout_rate=0.1),
    "L": dict(size="L", dropout_rate=0.1, attention_dropout_rate=0.1),
}


def resolve_size(size) -> TransformerSize:
    """A size name in SIZES, a TransformerSize, or a 4-tuple / mapping of its fields."""
    return layers.resolve_transformer_size(MODEL, size, SIZES, "size")


EMBEDDING_STD = 0.02  # BERT / MaskGIT
_embedding_init = nn.initializers.normal(stddev=EMBEDDING_STD)
# Per-index kernels [Q, in, out]: Xavier over (in, out) for each q.
_stacked_dense_init = nn.initializers.xavier_uniform(in_axis=-2, out_axis=-1, batch_axis=(0,))


class MaskGIT(nn.Module):
    """Bidirectional masked-token transformer. See the module docstring.

    Fields: `vocab_size` (codes per index: the quantizer's codebook_size), `indices_per_position`
    (None: tokens [B, h, w]; Q: tokens [B, h, w, Q] from rvq/grouped), `prediction` ("index" |
    "bits"), `codebook_splits` (bits mode: groups per index, None: `default_codebook_splits`),
    `num_classes` (None: no class token), `size` (a name in SIZES, a TransformerSize or a
    4-tuple), `tie_head` (index mode: logits from the token embedding, else a Dense), `posemb`
    ("learned" | "sincos2d"), `feed_forward`, `dropout_rate`, `attention_dropout_rate`, `remat`,
    `dtype` (compute), `param_dtype`, `architecture` ("vqjax": the above; "bert": MaskGIT's
    released network, see the module docstring). Dropout needs `rngs={"dropout": ...}` when
    train=True.
    """

    vocab_size: int = 1024
    indices_per_position: int | None = None
    prediction: str = "index"
    codebook_splits: int | None = None
    num_classes: int | None = 1000
    size: Any = "B"
    tie_head: bool = True
    posemb: str = "learned"
    feed_forward: str = "mlp"
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    remat: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    architecture: str = "vqjax"

    # -- configuration, usable on an unbound model -------------------------------------------
    @property
    def mask_token_id(self) -> int:
        """The id of the mask token: vocab_size (an extra embedding row after the codes); bits
        mode: 2^k, the group mask id (one past the 2^k values of a group); bert: the last row of
        the one vocabulary, after the codes and the class tokens."""
        if self.architecture == "bert":
            return int(self.vocab_size) + int(self.num_classes or 0)
        return self.group_size if self.prediction == "bits" else int(self.vocab_size)

    @property
    def null_label(self) -> int | None:
        """The unconditional label (last class-embedding row), or None without a class token."""
        return None if self.num_classes is None else int(self.num_classes)

    @property
    def num_indices(self) -> int:
        """Q, the number of indices per position (1 for single-index tokens)."""
        return 1 if self.indices_per_position is None else int(self.indices_per_position)

    @property
    def index_axes(self) -> int:
        """Trailing index axes of the tokens (0 for [B, h, w], 1 for [B, h, w, Q])."""
        return 0 if self.indices_per_position is None else 1

    @property
    def num_bits(self) -> int:
        """Bits per index, log2(vocab_size) (bits mode)."""
        return int(self.vocab_size).bit_length() - 1

    @property
    def num_splits(self) -> int:
        """S, the bit groups per index (bits mode; 1 in index mode)."""
        if self.prediction != "bits":
            return 1
        if self.codebook_splits is None:
            return default_codebook_splits(self.num_bits)
        return int(self.codebook_splits)

    @property
    def group_bits(self) -> int:
        """k = b / S, the bits of one group (bits mode)."""
        return self.num_bits // self.num_splits

    @property
    def group_size(self) -> int:
        """2^k, the values of one bit group: the size of each group softmax (bits mode)."""
        return 2**self.group_bits

    @property
    def token_axes(self) -> int:
        """Trailing axes of the model's tokens after [B, h, w]: index_axes, plus the group axis S
        in bits mode (tokens [B, h, w, (Q,) S])."""
        return self.index_axes + (1 if self.prediction == "bits" else 0)

    @property
    def token_shape_tail(self) -> tuple[int, ...]:
        """The model's token shape after [B, h, w]: (), (Q,), (S,) or (Q, S)."""
        tail = (self.num_indices,) if self.index_axes else ()
        return tail + ((self.num_splits,) if self.prediction == "bits" else ())

    @property
    def output_size(self) -> int:
        """Size of the last logits axis: vocab_size ("index") or 2^k ("bits")."""
        return self.group_size if self.prediction == "bits" else int(self.vocab_size)

    def model_tokens(self, indices: Array) -> Array:
        """The tokenizer's indices [B, h, w(, Q)] -> this model's tokens: the indices themselves
        ("index"), or their bit groups [B, h, w, (Q,) S] ("bits", `split_bit_groups`)."""
        if self.prediction != "bits":
            return indices
        return split_bit_groups(indices, self.num_bits, self.num_splits)

    def token_indices(self, tokens: Array) -> Array:
        """Inverse of `model_tokens` (no mask ids): model tokens -> indices [B, h, w(, Q)]."""
        if self.prediction != "bits":
            return tokens
        return combine_bit_groups(tokens, self.group_bits)

    @property
    def bert_vocab_size(self) -> int:
        """bert: rows of the one vocabulary, codes + classes + mask."""
        return int(self.vocab_size) + int(self.num_classes or 0) + 1

    def check_fields(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"{MODEL}: unknown `architecture` {self.architecture!r}; choose one of "
                f"{ARCHITECTURES}"
            )
        if self.architecture == "bert":
            unsupported = {
                "prediction": (self.prediction, "index"),
                "indices_per_position": (self.indices_per_position, None),
                "tie_head": (self.tie_head, True),
                "posemb": (self.posemb, "learned"),
                "feed_forward": (self.feed_forward, "mlp"),
            }
            for field, (value, needed) in unsupported.items():
                if value != needed:
                    raise ValueError(
                        f"{MODEL}: architecture='bert' (MaskGIT's released network) needs "
                        f"`{field}`={needed!r}, got {value!r}"
                    )
        if self.prediction not in PREDICTIONS:
            raise ValueError(
                f"{MODEL}: unknown `prediction` {self.prediction!r}; choose one of {PREDICTIONS}"
            )
        if isinstance(self.vocab_size, bool) or int(self.vocab_size) < 2:
            raise ValueError(f"{MODEL}: `vocab_size` must be >= 2, got {self.vocab_size!r}")
        if self.prediction == "bits":
            v = int(self.vocab_size)
            if v & (v - 1) or self.num_bits > MAX_BITS:
                raise ValueError(
                    f"{MODEL}: prediction='bits' needs `vocab_size` = 2**b with b <= {MAX_BITS} "
                    f"(indices are int32), got {self.vocab_size}; quantize more bits as "
                    "`grouped` indices"
                )
            splits = self.codebook_splits
            if splits is not None and (
                isinstance(splits, bool) or int(splits) < 1 or self.num_bits % int(splits)
            ):
                raise ValueError(
                    f"{MODEL}: `codebook_splits` must divide the {self.num_bits} bits of "
                    f"vocab_size={v} (groups of equal size), got {splits}"
                )
        elif self.codebook_splits not in (None, 1):
            raise ValueError(
                f"{MODEL}: `codebook_splits`={self.codebook_splits} applies to "
                "prediction='bits' only (index mode predicts whole indices)"
            )
        if self.indices_per_position is not None and int(self.indices_per_position) < 1:
            raise ValueError(
                f"{MODEL}: `indices_per_position` must be None or >= 1, got "
                f"{self.indices_per_position}"
            )
        if self.num_classes is not None and int(self.num_classes) < 1:
            raise ValueError(f"{MODEL}: `num_classes` must be None or >= 1, got {self.num_classes}")
        if self.posemb not in layers.POSEMB_TYPES:
            raise ValueError(
                f"{MODEL}: unknown `posemb` {self.posemb!r}; choose one of {layers.POSEMB_TYPES}"
            )
        for field in ("dropout_rate", "attention_dropout_rate"):
            rate = getattr(self, field)
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{MODEL}: `{field}` must be in [0, 1), got {rate}")
        resolve_size(self.size)

    def _check_inputs(self, tokens, labels):
        tail = self.token_shape_tail
        shape = getattr(tokens, "shape", None)
        layout = "[B, h, w" + "".join(f", {n}" for n in tail) + "]"
        if shape is None or len(shape) != 3 + len(tail) or tuple(shape[3:]) != tail:
            if self.prediction == "bits":
                hint = (
                    f" (bits mode takes the {self.num_splits} bit groups of each index, "
                    "model.model_tokens(indices))"
                )
            elif shape is not None and len(shape) == 4 and self.index_axes == 0:
                hint = " (set indices_per_position=Q for multi-index tokens)"
            else:
                hint = ""
            raise ValueError(f"{MODEL}: tokens must be {layout}, got shape {shape}{hint}")
        if not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise TypeError(f"{MODEL}: tokens must be integer indices, got dtype {tokens.dtype}")
        if labels is not None:
            if self.num_classes is None:
                raise ValueError(f"{MODEL}: labels given but the model has num_classes=None")
            if getattr(labels, "shape", None) != (shape[0],):
                raise ValueError(
                    f"{MODEL}: labels must be [B] = [{shape[0]}], got "
                    f"{getattr(labels, 'shape', None)}"
                )

    # -- the model ----------------------------------------------------------------------------
    @nn.compact
    def __call__(self, tokens: Array, labels: Array | None = None, train: bool = False) -> Array:
        """tokens int [B, h, w] or [B, h, w, Q] (mask_token_id where masked), labels int [B]
        (None: the null label) -> float32 logits [B, h, w, (Q,) vocab_size]. Bits mode: group
        tokens [B, h, w, (Q,) S] (`model_tokens(indices)`, mask id 2^k per masked group) ->
        group logits [B, h, w, (Q,) S, 2^k], one softmax per group."""
        self.check_fields()
        self._check_inputs(tokens, labels)
        if self.architecture == "bert":
            return self._bert(tokens, labels, train)
        size = resolve_size(self.size)
        width, num_q = size.width, self.num_indices
        batch, height, grid_width = tokens.shape[:3]
        num_positions = height * grid_width
        flat = tokens.reshape(batch, num_positions, num_q, -1).astype(jnp.int32)  # [B, N, Q, S]
        flat = flat[..., 0] if self.prediction == "index" else flat  # index: [B, N, Q]

        # -- inputs ---------------------------------------------------------------------------
        if self.prediction == "index":
            table = self.param(
                "token_embedding", _embedding_init,
                (num_q, self.vocab_size + 1, width), self.param_dtype,
            )  # [Q, V + 1, D]; row V is the mask token
            embedded = table[jnp.arange(num_q), flat]  # [B, N, Q, D]
            x = jnp.sum(embedded.astype(self.dtype), axis=2)  # [B, N, D]
        else:
            x = self._bit_embedding(flat, width)  # [B, N, D]
        if self.posemb == "sincos2d":
            # Fixed, at the token embeddings' scale (unit-amplitude sincos would drown them).
            x = x + (EMBEDDING_STD * layers.posemb_sincos_2d(height, grid_width, width)).astype(
                x.dtype
            )
        else:
            x = layers.PositionEmbedding2D(
                self.posemb, self.dtype, self.param_dtype, name="position_embedding"
            )(x, (height, grid_width))  # [B, N, D]
        if self.num_classes is not None:
            if labels is None:
                labels = jnp.full((batch,), self.null_label, jnp.int32)
            class_table = self.param(
                "class_embedding", _embedding_init, (self.num_classes + 1, width), self.param_dtype
            )  # row num_classes is the null label
            class_token = class_table[labels.astype(jnp.int32)][:, None].astype(x.dtype)
            x = jnp.concatenate([class_token, x], axis=1)  # [B, 1 + N, D]
        x = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name="ln_embedding")(x)
        x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)

        # -- transformer ----------------------------------------------------------------------
        x = layers.transformer_for(self, size)(x, not train)
        x = x[:, -num_positions:]  # drop the class token, [B, N, D]

        # -- heads: one per index, MaskGIT's MLM head (Dense -> GELU -> LayerNorm -> logits) -----
        # (bits mode: MaskBit's last_layer + untied prediction_layer to S * 2^k logits)
        h = jnp.einsum(
            "bnd,qde->bnqe", x,
            self.param("head_hidden_kernel", _stacked_dense_init, (num_q, width, width),
                       self.param_dtype).astype(self.dtype),
        ) + self.param("head_hidden_bias", nn.initializers.zeros, (num_q, width),
                       self.param_dtype).astype(self.dtype)
        h = self._stacked_layer_norm(nn.gelu(h), num_q, width)  # [B, N, Q, D]
        out_size = self.output_size * self.num_splits  # bits: S group softmaxes of 2^k
        if self.prediction == "index" and self.tie_head:
            codes = table[:, : self.vocab_size].astype(self.dtype)  # no logit for the mask row
            logits = jnp.einsum("bnqd,qvd->bnqv", h, codes)
        else:
            kernel = self.param(
                "head_output_kernel", _stacked_dense_init, (num_q, width, out_size),
                self.param_dtype,
            )
            logits = jnp.einsum("bnqd,qdv->bnqv", h, kernel.astype(self.dtype))
        logits = logits.astype(jnp.float32) + self.param(
            "head_output_bias", nn.initializers.zeros, (num_q, out_size), self.param_dtype
        ).astype(jnp.float32)
        if self.prediction == "bits":  # [B, N, Q, S * 2^k] -> [B, h, w, Q, S, 2^k] (MaskBit order)
            logits = logits.reshape(
                batch, height, grid_width, num_q, self.num_splits, self.group_size
            )
        else:
            logits = logits.reshape(batch, height, grid_width, num_q, out_size)
        return logits if self.index_axes else logits[:, :, :, 0]

    def _bert(self, tokens: Array, labels: Array | None, train: bool) -> Array:
        """MaskGIT's released network (see the module docstring): tokens int [B, h, w] -> float32
        logits [B, h, w, vocab_size]."""
        size = resolve_size(self.size)
        width = size.width
        batch, height, grid_width = tokens.shape
        num_positions = height * grid_width
        ids = tokens.reshape(batch, num_positions).astype(jnp.int32)  # [B, N]
        if self.num_classes is not None:
            if labels is None:
                labels = jnp.full((batch,), self.null_label, jnp.int32)
            class_ids = self.vocab_size + labels.astype(jnp.int32)  # null label -> the mask row
            ids = jnp.concatenate([class_ids[:, None], ids], axis=1)  # [B, 1 + N]
        length = ids.shape[1]
        norm = lambda name: nn.LayerNorm(  # noqa: E731
            epsilon=BERT_LAYER_NORM_EPSILON, dtype=self.dtype, param_dtype=self.param_dtype,
            name=name,
        )
        word_embedding = self.param(
            "word_embedding", _bert_init, (self.bert_vocab_size, width), self.param_dtype
        )  # [V + C + 1, D]: codes, class tokens, mask
        if self.has_variable("params", "position_embedding"):
            stored = self.get_variable("params", "position_embedding").shape[0]
            if stored != length:
                raise ValueError(
                    f"{MODEL}: the position embeddings hold {stored} positions but a {height}x"
                    f"{grid_width} token grid needs {length} (class token + h*w); the bert "
                    "architecture's learned positions fix the resolution"
                )
        position_embedding = self.param(
            "position_embedding", _bert_init, (length, width), self.param_dtype
        )  # [1 + N, D]
        x = jnp.take(word_embedding, ids, axis=0) + position_embedding[None]  # [B, 1 + N, D]
        x = norm("ln_embedding")(x.astype(self.dtype))
        x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
        block_cls = nn.remat(BertBlock, static_argnums=(2,)) if self.remat else BertBlock
        for index in range(size.num_layers):
            x = block_cls(
                num_heads=size.num_heads, mlp_dim=size.mlp_dim, dropout_rate=self.dropout_rate,
                attention_dropout_rate=self.attention_dropout_rate, dtype=self.dtype,
                param_dtype=self.param_dtype, name=f"block_{index:02d}",
            )(x, not train)
        h = nn.Dense(width, dtype=self.dtype, param_dtype=self.param_dtype,
                     kernel_init=_bert_init, name="head_hidden")(x)
        h = norm("head_ln")(nn.gelu(h))
        logits = jnp.einsum("bnd,vd->bnv", h, word_embedding.astype(self.dtype))
        logits = logits.astype(jnp.float32) + self.param(
            "head_output_bias", nn.initializers.zeros, (self.bert_vocab_size,), self.param_dtype
        ).astype(jnp.float32)  # [B, 1 + N, V + C + 1]
        logits = logits[:, length - num_positions:, : self.vocab_size]  # codes at token positions
        return logits.reshape(batch, height, grid_width, self.vocab_size)

    def _bit_embedding(self, groups: Array, width: int) -> Array:
        """Bits mode input: group tokens [B, N, Q, S] -> Dense(+-1 bits of the position's Q*b bits,
        0 for every bit of a masked group) [B, N, D] (MaskBit's `preprocess_tokens` +
        `input_proj`; no mask embedding: a masked group is its zero bits)."""
        batch, num_positions = groups.shape[:2]
        signs = bit_signs(groups, self.group_bits, self.mask_token_id)  # [B, N, Q, S, k]
        signs = signs.reshape(batch, num_positions, -1)  # [B, N, Q*b], bit order q*b + s*k + j
        return nn.Dense(
            width, dtype=self.dtype, param_dtype=self.param_dtype, name="bit_embedding",
            kernel_init=_embedding_init,  # MaskBit: trunc-normal(0.02), bias 0
        )(signs.astype(self.dtype))

    def _stacked_layer_norm(self, h: Array, num_q: int, width: int) -> Array:
        """LayerNorm over the last axis (statistics in float32) with a scale and bias per index."""
        h32 = h.astype(jnp.float32)
        mean = jnp.mean(h32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(h32 - mean), axis=-1, keepdims=True)
        normed = (h32 - mean) * jax.lax.rsqrt(var + 1e-6)
        scale = self.param("head_ln_scale", nn.initializers.ones, (num_q, width), self.param_dtype)
        bias = self.param("head_ln_bias", nn.initializers.zeros, (num_q, width), self.param_dtype)
        return (normed * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(self.dtype)


def _bert_init(key, shape, dtype=jnp.float32):
    """BERT's / MaskGIT's initializer: N(0, 0.02) truncated at +-2 (before scaling)."""
    return jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype) * EMBEDDING_STD


class BertBlock(nn.Module):
    """Post-LN transformer block of BERT / MaskGIT's released transformer, tokens [B, N, D]:
    x = LN(x + Drop(MHSA(x))); x = LN(x + Drop(Dense(GELU(Dense(x))))), LayerNorm eps 1e-12."""

    num_heads: int
    mlp_dim: int
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, deterministic: bool = True) -> Array:
        width = x.shape[-1]
        norm = lambda name: nn.LayerNorm(  # noqa: E731
            epsilon=BERT_LAYER_NORM_EPSILON, dtype=self.dtype, param_dtype=self.param_dtype,
            name=name,
        )
        dense = lambda features, name: nn.Dense(  # noqa: E731
            features, dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=_bert_init,
            name=name,
        )
        h = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, dtype=self.dtype, param_dtype=self.param_dtype,
            kernel_init=_bert_init, dropout_rate=self.attention_dropout_rate,
            force_fp32_for_softmax=True, name="attention",
        )(x, x, deterministic=deterministic)
        x = norm("ln_attention")(nn.Dropout(self.dropout_rate)(h, deterministic=deterministic) + x)
        h = dense(width, "wo")(nn.gelu(dense(self.mlp_dim, "wi")(x)))
        return norm("ln_feed_forward")(
            nn.Dropout(self.dropout_rate)(h, deterministic=deterministic) + x
        )


def create(preset: str = "B", **overrides) -> MaskGIT:
    """A MaskGIT from a preset name in PRESETS ("tiny", "S", "B", "L", "released": MaskGIT's
    released BERT network), fields overridden."""
    if preset not in PRESETS:
        raise ValueError(f"{MODEL}: unknown preset {preset!r}; choose one of {list(PRESETS)}")
    return MaskGIT(**{**PRESETS[preset], **overrides})


def default_codebook_splits(num_bits: int) -> int:
    """Bit groups per index when `codebook_splits` is None: 2 (MaskBit's released 10, 12, 14, 16
    and 18-bit generators all use 2) when it divides `num_bits`, else the smallest divisor above 1
    (num_bits itself when prime: one 2-way softmax per bit)."""
    num_bits = int(num_bits)
    if num_bits <= 1:
        return 1
    return next(d for d in range(2, num_bits + 1) if num_bits % d == 0)


def split_bit_groups(indices: Array, num_bits: int, splits: int) -> Array:
    """int indices [...] -> int32 group tokens [..., splits]: group s holds bits s*k .. s*k + k - 1
    (k = num_bits / splits) as (index >> s*k) & (2^k - 1) (MaskBit's `split_factorized_tokens`)."""
    if num_bits % splits:
        raise ValueError(f"{MODEL}: {splits} groups do not divide {num_bits} bits")
    k = num_bits // splits
    shifts = jnp.arange(splits, dtype=jnp.int32) * k
    indices = jnp.asarray(indices).astype(jnp.int32)[..., None]
    return jnp.right_shift(indices, shifts) & ((1 << k) - 1)


def combine_bit_groups(groups: Array, group_bits: int) -> Array:
    """Inverse of `split_bit_groups`: group tokens [..., S] -> int32 indices sum_s g_s 2^(s k)."""
    shifts = jnp.arange(groups.shape[-1], dtype=jnp.int32) * int(group_bits)
    return jnp.sum(jnp.left_shift(groups.astype(jnp.int32), shifts), axis=-1).astype(jnp.int32)


def bit_signs(groups: Array, group_bits: int, mask_token_id: int) -> Array:
    """Bits mode's input values: group tokens [...] -> float32 [..., k], +1 for a 1 bit and -1 for a
    0 bit (lfq's code values, bit j of the group first), all 0 where the group is masked."""
    masked = groups == mask_token_id
    bits = indices_to_bits(jnp.where(masked, 0, groups), group_bits)  # [..., k]
    return jnp.where(bits, 1.0, -1.0) * (~masked[..., None])


def _is_sign_quantizer(quantizer) -> bool:
    inner = getattr(quantizer, "quantizer", None)
    if inner is not None and hasattr(inner, "name"):
        return _is_sign_quantizer(inner)
    return getattr(quantizer, "name", None) in ("lfq", "bsq")


def for_quantizer(quantizer, preset: str = "B", prediction: str | None = None, **overrides):
    """A MaskGIT sized for the tokens of `quantizer` (a built Quantizer, or a tokenizer model with
    `built_quantizer()`): vocab_size = codebook_size, indices_per_position = num_quantizers (rvq) /
    groups (grouped). prediction=None picks "bits" for lfq/bsq codes with more than
    BITS_ABOVE_CODEBOOK_SIZE codes, "index" otherwise; overrides may set codebook_splits (bits)."""
    if hasattr(quantizer, "built_quantizer"):
        quantizer = quantizer.built_quantizer()
    fields: dict[str, Any] = {"vocab_size": int(quantizer.codebook_size)}
    index_axes = int(getattr(quantizer, "index_axes", 0))
    if index_axes > 1:
        raise ValueError(f"{MODEL}: tokens with {index_axes} index axes are not supported")
    if index_axes == 1:
        fields["indices_per_position"] = int(
            getattr(quantizer, "num_quantizers", None) or getattr(quantizer, "groups")
        )
    if prediction is None:
        big = quantizer.codebook_size > BITS_ABOVE_CODEBOOK_SIZE
        prediction = "bits" if _is_sign_quantizer(quantizer) and big else "index"
    fields["prediction"] = prediction
    return create(preset, **{**fields, **overrides})


# -- training helpers (pure functions) ----------------------------------------------------------
def mask_tokens(
    rng: Array,
    tokens: Array,
    schedule: str = "cosine",
    min_mask_rate: float = 0.0,
    *,
    mask_token_id: int,
    index_axes: int = 0,
) -> tuple[Array, Array]:
    """MaskGIT's training corruption: per example, a mask ratio r = schedule(u), u ~ U(0, 1)
    (cosine: cos(pi/2 u)), raised to `min_mask_rate`, and exactly clip(ceil(r N), 1, N) of its N
    positions masked, chosen uniformly at random.

    tokens: int [B, ...positions..., *index axes] (e.g. [B, h, w] or [B, h, w, Q] with
    index_axes=1; all a position's indices are masked together). Returns (masked tokens, same shape,
    mask_token_id where masked; mask bool [B, N], N = the number of positions, row-major).
    """
    batch = tokens.shape[0]
    position_shape = tokens.shape[1 : tokens.ndim - index_axes]
    num_positions = math.prod(position_shape)
    ratio_rng, order_rng = jax.random.split(rng)
    ratio = mask_schedule.sample_mask_ratio(ratio_rng, (batch,), schedule, num_positions)
    ratio = jnp.maximum(ratio, jnp.float32(min_mask_rate))
    count = jnp.clip(jnp.ceil(ratio * num_positions), 1, num_positions).astype(jnp.int32)  # [B]
    scores = jax.random.uniform(order_rng, (batch, num_positions))
    ranks = jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1)
    mask = ranks < count[:, None]  # [B, N], exactly count[b] True
    spatial = mask.reshape(batch, *position_shape, *([1] * index_axes))
    masked = jnp.where(spatial, jnp.asarray(mask_token_id, tokens.dtype), tokens)
    return masked, mask


def drop_labels(rng: Array, labels: Array, null_label: int, rate: float) -> Array:
    """Classifier-free guidance training: each label becomes `null_label` with probability rate."""
    drop = jax.random.bernoulli(rng, rate, labels.shape)
    return jnp.where(drop, jnp.asarray(null_label, labels.dtype), labels)


def _per_position(values: Array, mask: Array) -> Array:
    """[B, ...] per-element values -> [B, N] means over everything after the positions."""
    return values.reshape(*mask.shape, -1).mean(axis=-1)


def _masked_mean(per_position: Array, mask: Array) -> Array:
    weights = mask.astype(jnp.float32)
    return jnp.sum(per_position * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def masked_cross_entropy(
    logits: Array, targets: Array, mask: Array, label_smoothing: float = 0.1
) -> Array:
    """Mean cross-entropy over the masked positions (and a position's Q indices), float32 scalar.

    logits [B, ...positions..., (Q,) V], targets int logits.shape[:-1], mask bool [B, N] (as
    `mask_tokens` returns it). Label smoothing mixes the one-hot target with uniform (1/V each).
    """
    logits = logits.astype(jnp.float32)
    num_classes = logits.shape[-1]
    one_hot = jax.nn.one_hot(targets, num_classes, dtype=jnp.float32)
    smoothed = one_hot * (1.0 - label_smoothing) + label_smoothing / num_classes
    loss = optax.softmax_cross_entropy(logits, smoothed)  # [B, ..., (Q)]
    return _masked_mean(_per_position(loss, mask), mask)


def masked_accuracy(logits: Array, targets: Array, mask: Array, prediction: str = "index") -> Array:
    """Fraction of the masked targets predicted exactly by the argmax (a position's Q indices
    averaged; bits mode: per masked bit group, logits [..., S, 2^k] and group targets)."""
    sampler.check_prediction(prediction)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    return _masked_mean(_per_position(correct, mask), mask)


def loss_and_metrics(
    logits: Array, targets: Array, mask: Array, prediction: str = "index",
    label_smoothing: float = 0.1,
) -> tuple[Array, dict[str, Array]]:
    """(loss, {"loss", "accuracy", "mask_rate"}): masked cross-entropy with label smoothing and
    argmax accuracy. The same formulas in both modes: "index" over the masked positions' indices
    (logits [B, h, w, (Q,) V], targets indices, mask [B, N]); "bits" over the masked bit groups
    (logits [B, h, w, (Q,) S, 2^k], targets group tokens, mask [B, N*Q*S]; `mask_for_training`
    makes all three)."""
    sampler.check_prediction(prediction)
    loss = masked_cross_entropy(logits, targets, mask, label_smoothing)
    metrics = {
        "loss": loss,
        "accuracy": masked_accuracy(logits, targets, mask, prediction),
        "mask_rate": jnp.mean(mask.astype(jnp.float32)),
    }
    return loss, metrics


def mask_for_training(
    model: MaskGIT, rng: Array, indices: Array, schedule: str = "cosine",
    min_mask_rate: float = 0.0,
) -> tuple[Array, Array, Array]:
    """The training corruption of `model`'s mode for the tokenizer's indices [B, h, w(, Q)]:
    (inputs, targets, mask) for `model.apply(inputs)` and `loss_and_metrics(logits, targets, mask)`.

    "index": `mask_tokens` over the N positions (a position's Q indices together); targets are the
    indices, mask [B, N]. "bits" (MaskBit): the indices split into group tokens [B, h, w, (Q,) S]
    (the targets), and `mask_tokens` over the M = N*Q*S groups, each group masked on its own: per
    example exactly clip(ceil(r M), 1, M) groups, r = max(schedule(u), min_mask_rate); mask
    [B, M] in row-major order of the group tokens.
    """
    if model.prediction != "bits":
        inputs, mask = mask_tokens(
            rng, indices, schedule, min_mask_rate, mask_token_id=model.mask_token_id,
            index_axes=model.index_axes,
        )
        return inputs, indices, mask
    groups = model.model_tokens(indices)  # [B, h, w, (Q,) S]
    flat = groups.reshape(groups.shape[0], -1)  # [B, M]
    inputs, mask = mask_tokens(
        rng, flat, schedule, min_mask_rate, mask_token_id=model.mask_token_id
    )
    return inputs.reshape(groups.shape), groups, mask


# -- sampling ------------------------------------------------------------------------------------
def sequence_logits_fn(model: MaskGIT, variables, grid: tuple[int, int]):
    """`logits_fn(tokens [B, N, ...], labels) -> logits [B, N, ..., V]` for vqjax.sampling,
    running `model` (inference mode) on the h x w `grid` (N = h*w); `...` is the model's token
    tail: (), (Q,), or in bits mode (S,) / (Q, S) with V = 2^k."""
    height, width = grid

    def logits_fn(tokens, labels):
        batch = tokens.shape[0]
        spatial = tokens.reshape(batch, height, width, *tokens.shape[2:])
        logits = model.apply(variables, spatial, labels)
        return logits.reshape(batch, height * width, *logits.shape[3:])

    return logits_fn


def generate(
    model: MaskGIT,
    variables,
    rng: Array,
    labels: Array | None = None,
    *,
    grid: tuple[int, int],
    batch_size: int | None = None,
    **decode_options,
) -> parallel_decode.DecodeOutput:
    """Sample token grids from scratch with parallel decoding; out.tokens: the tokenizer's indices
    [B, h, w(, Q)] (bits mode: the decoded groups combined), out.history (return_history) the
    model's tokens after each step [T, B, h, w, ...] (bits mode: group tokens, mask id 2^k).

    Batch size from `labels` [B], else `batch_size` (unconditional: the null label). Jit it with
    the static options bound: `jax.jit(functools.partial(generate, model, grid=(16, 16)))`.
    decode_options go to `parallel_decode.decode` (num_steps, temperature, top_k, top_p,
    choice_temperature, guidance_scale, guidance_anneal, guidance_base, schedule, return_history).
    """
    if labels is None and batch_size is None:
        raise ValueError(f"{MODEL}: generate needs labels [B] or batch_size")
    batch = labels.shape[0] if labels is not None else int(batch_size)
    if labels is None and model.num_classes is not None:
        labels = jnp.full((batch,), model.null_label, jnp.int32)
    height, width = grid
    tail = model.token_shape_tail
    tokens = jnp.full((batch, height * width) + tail, model.mask_token_id, jnp.int32)
    decode_options.setdefault("prediction", model.prediction)
    if decode_options.get("guidance_scale") is not None:
        decode_options.setdefault("null_label", model.null_label)
    out = parallel_decode.decode(
        sequence_logits_fn(model, variables, grid), tokens, rng,
        mask_token_id=model.mask_token_id, labels=labels, **decode_options,
    )
    spatial = out.tokens.reshape(batch, height, width, *tail)
    history = out.history
    if history is not None:
        history = history.reshape(history.shape[0], batch, height, width, *tail)
    return out._replace(tokens=model.token_indices(spatial), history=history)
