"""MaskGIT: model shapes (index, multi-index, bits), parameter count, bf16, training helpers against
numpy (MaskBit's bit groups, per-group masking and loss), and tiny models that learn a toy token
language and sample it with parallel decoding (index mode, and bits mode over per-group units).

Shapes and parameter counts use `jax.eval_shape` (nothing compiles); the one training run keeps
init and all steps in a single jit with rbg keys (cheaper to compile than threefry on CPU).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vqjax import quantizers
from vqjax.models import maskgit, vit_vqgan
from vqjax.sampling import mask_schedule

GRID = (4, 4)


def abstract_init(model, tokens, labels=None):
    return jax.eval_shape(model.init, {"params": jax.random.key(0)}, tokens, labels)


def count(tree) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def expected_param_count(size, vocab, num_classes, positions, q=1, prediction="index", tied=True,
                         splits=1):
    """The architecture formula (learned position embeddings)."""
    L, D, M = size.num_layers, size.width, size.mlp_dim
    block = 4 * (D * D + D) + 2 * (2 * D) + (D * M + M) + (M * D + D)  # attention, 2 LNs, MLP
    total = L * block + 2 * D  # + final LayerNorm
    total += positions * D + 2 * D  # position embeddings, embedding LayerNorm
    if num_classes is not None:
        total += (num_classes + 1) * D
    total += q * (D * D + D) + q * 2 * D  # per-index head: Dense + LayerNorm
    if prediction == "bits":
        bits = int(math.log2(vocab))
        total += q * bits * D + D  # bit embedding (Dense over the Q*b +-1 bits), no mask embedding
        outputs = splits * 2 ** (bits // splits)  # S softmaxes of 2^(b/S)
        total += q * (D * outputs + outputs)  # untied group logits
    else:
        total += q * (vocab + 1) * D  # token tables with the mask row
        total += q * vocab if tied else q * (D * vocab + vocab)
    return total


# -- shapes ---------------------------------------------------------------------------------------
CASES = [
    # (fields, token shape, logits shape)
    (dict(), (2, 4, 4), (2, 4, 4, 16)),
    (dict(tie_head=False, num_classes=None), (2, 4, 4), (2, 4, 4, 16)),
    (dict(indices_per_position=3), (2, 4, 4, 3), (2, 4, 4, 3, 16)),
    # bits: group tokens in, one 2^(b/S)-way softmax per group out (MaskBit: 14 bits, 2 x 128)
    (dict(prediction="bits", vocab_size=2**14), (2, 4, 4, 2), (2, 4, 4, 2, 128)),
    (dict(prediction="bits", vocab_size=2**18, codebook_splits=3), (2, 4, 4, 3), (2, 4, 4, 3, 64)),
    (dict(prediction="bits", vocab_size=2**6, indices_per_position=2, codebook_splits=6),
     (2, 4, 4, 2, 6), (2, 4, 4, 2, 6, 2)),
]


@pytest.mark.parametrize("fields,token_shape,logits_shape", CASES)
def test_output_shapes_and_param_counts(fields, token_shape, logits_shape):
    model = maskgit.create("tiny", **{"vocab_size": 16, "num_classes": 10, **fields})
    tokens = jnp.zeros(token_shape, jnp.int32)
    labels = None if model.num_classes is None else jnp.zeros((2,), jnp.int32)
    variables = abstract_init(model, tokens, labels)
    logits = jax.eval_shape(model.apply, variables, tokens, labels)
    assert logits.shape == logits_shape and logits.dtype == jnp.float32
    expected = expected_param_count(
        maskgit.SIZES["tiny"], model.vocab_size, model.num_classes, 16, model.num_indices,
        model.prediction, model.tie_head, model.num_splits)
    assert count(variables) == expected
    params = variables["params"]
    if model.prediction == "bits":  # no 2^b table anywhere, no mask embedding
        assert "token_embedding" not in params and "mask_embedding" not in params
        assert max(x.size for x in jax.tree.leaves(params)) < 2**16
        assert model.mask_token_id == logits_shape[-1]  # the group mask id 2^k
    else:
        assert params["token_embedding"].shape == (model.num_indices, model.vocab_size + 1, 64)
        assert ("head_output_kernel" in params) == (not model.tie_head)
        assert model.mask_token_id == model.vocab_size  # an explicit extra id, not -1


def test_b_preset_parameter_count():
    model = maskgit.create("B", vocab_size=1024, num_classes=1000)
    size = maskgit.SIZES["B"]
    assert (size.num_layers, size.width, size.num_heads, size.mlp_dim) == (24, 768, 16, 3072)
    tokens = jnp.zeros((1, 16, 16), jnp.int32)
    total = count(abstract_init(model, tokens, jnp.zeros((1,), jnp.int32)))
    assert total == expected_param_count(size, 1024, 1000, 256)
    assert 170e6 < total < 175e6  # MaskGIT's transformer: ~172M


def test_generate_traces_for_every_token_kind():
    """Parallel decoding through the real model (abstractly) for index, multi-index and bits."""
    for fields, token_shape in [
        (dict(), (4, 4)),
        (dict(indices_per_position=2), (4, 4, 2)),
        (dict(prediction="bits", vocab_size=2**10), (4, 4)),
        (dict(prediction="bits", vocab_size=2**4, indices_per_position=2), (4, 4, 2)),
    ]:
        model = maskgit.create("tiny", **{"vocab_size": 16, "num_classes": 3, **fields})
        model_tokens = jnp.zeros((1,) + token_shape + model.token_shape_tail[model.index_axes:],
                                 jnp.int32)
        variables = abstract_init(model, model_tokens)
        run = functools.partial(maskgit.generate, model, grid=GRID, num_steps=4, guidance_scale=2.0,
                                return_history=True)
        out = jax.eval_shape(run, variables, jax.random.key(0), jnp.zeros((3,), jnp.int32))
        # tokens: the tokenizer's indices; history: the model's tokens (bits: group tokens)
        assert out.tokens.shape == (3,) + token_shape and out.num_masked.shape == (4, 3)
        assert out.history.shape == (4, 3) + GRID + model.token_shape_tail


def test_input_checks():
    model = maskgit.create("tiny", vocab_size=16, num_classes=None)
    with pytest.raises(ValueError, match="indices_per_position"):
        abstract_init(model, jnp.zeros((2, 4, 4, 3), jnp.int32))
    with pytest.raises(ValueError, match="num_classes=None"):
        abstract_init(model, jnp.zeros((2, 4, 4), jnp.int32), jnp.zeros((2,), jnp.int32))
    with pytest.raises(TypeError, match="integer"):
        abstract_init(model, jnp.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="2\\*\\*b"):
        abstract_init(maskgit.create("tiny", vocab_size=1000, prediction="bits"),
                      jnp.zeros((2, 4, 4), jnp.int32))
    bits = maskgit.create("tiny", vocab_size=2**14, prediction="bits", num_classes=None)
    with pytest.raises(ValueError, match="model_tokens"):  # indices where groups are expected
        abstract_init(bits, jnp.zeros((2, 4, 4), jnp.int32))
    with pytest.raises(ValueError, match="codebook_splits.*divide the 14 bits"):
        abstract_init(bits.clone(codebook_splits=3), jnp.zeros((2, 4, 4, 3), jnp.int32))
    with pytest.raises(ValueError, match="codebook_splits.*prediction='bits' only"):
        abstract_init(model.clone(codebook_splits=2), jnp.zeros((2, 4, 4), jnp.int32))
    with pytest.raises(ValueError, match="unknown preset"):
        maskgit.create("XL")


def test_for_quantizer():
    vq = maskgit.for_quantizer(quantizers.build("vq", codebook_size=1024, dim=8), "tiny")
    assert (vq.vocab_size, vq.indices_per_position, vq.prediction) == (1024, None, "index")
    rvq = maskgit.for_quantizer(
        quantizers.build("rvq", num_quantizers=4, codebook_size=256, dim=8), "tiny")
    assert (rvq.vocab_size, rvq.indices_per_position) == (256, 4)
    big = maskgit.for_quantizer(quantizers.build("lfq", codebook_size=2**18), "tiny")
    assert (big.prediction, big.num_bits, big.num_splits, big.group_size) == ("bits", 18, 2, 512)
    assert maskgit.for_quantizer(quantizers.build("lfq", codebook_size=2**10)).prediction == "index"
    bsq = maskgit.for_quantizer(quantizers.build("bsq", codebook_size=2**10), "tiny",
                                prediction="bits", codebook_splits=5)
    assert (bsq.num_splits, bsq.group_size, bsq.mask_token_id) == (5, 4, 4)
    grouped = maskgit.for_quantizer(
        quantizers.build("grouped", groups=2, inner="lfq", codebook_size=2**17, dim=34), "tiny")
    assert (grouped.prediction, grouped.indices_per_position, grouped.num_bits) == ("bits", 2, 17)
    assert grouped.num_splits == 17  # 17 is prime: one 2-way softmax per bit
    assert [maskgit.default_codebook_splits(b) for b in (1, 10, 14, 15, 18)] == [1, 2, 2, 3, 2]
    tokenizer = vit_vqgan.create(
        "tiny", quantizer="fsq", quantizer_options={"levels": (8, 5, 5, 5)})
    assert maskgit.for_quantizer(tokenizer, "tiny").vocab_size == 1000


def test_jit_bf16_compute():
    model = maskgit.create("tiny", vocab_size=16, num_classes=4, indices_per_position=2)
    model16 = model.clone(dtype=jnp.bfloat16)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 17, (2, 4, 4, 2)))  # some masked
    labels = jnp.array([1, 4])  # 4 = null label
    variables = jax.jit(model.init)({"params": jax.random.key(1, impl="rbg")}, tokens, labels)

    @jax.jit
    def both(variables):
        return model.apply(variables, tokens, labels), model16.apply(variables, tokens, labels)

    full, half = both(variables)
    assert half.dtype == jnp.float32 and np.all(np.isfinite(half))
    np.testing.assert_allclose(half, full, atol=0.05 * float(jnp.abs(full).max()) + 1e-3)


# -- training helpers ---------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("min_mask_rate", "mask_token_id", "index_axes"))
def jit_mask_tokens(rng, tokens, min_mask_rate=0.0, mask_token_id=10, index_axes=0):
    return maskgit.mask_tokens(
        rng, tokens, min_mask_rate=min_mask_rate, mask_token_id=mask_token_id,
        index_axes=index_axes)


def test_mask_tokens_counts():
    rng = jax.random.key(3)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 10, (64, 4, 5)), jnp.int32)
    masked, mask = jit_mask_tokens(rng, tokens)
    assert mask.shape == (64, 20) and mask.dtype == jnp.bool_
    ratio = jax.jit(mask_schedule.sample_mask_ratio, static_argnums=(1, 2, 3))(
        jax.random.split(rng)[0], (64,), "cosine", 20)
    expected = np.clip(np.ceil(np.asarray(ratio) * 20), 1, 20)
    np.testing.assert_array_equal(np.asarray(mask).sum(1), expected)
    flat_masked = np.asarray(masked).reshape(64, 20)
    flat_tokens = np.asarray(tokens).reshape(64, 20)
    np.testing.assert_array_equal(flat_masked == 10, np.asarray(mask))
    np.testing.assert_array_equal(flat_masked[~np.asarray(mask)], flat_tokens[~np.asarray(mask)])

    # multi-index: a position's indices are masked together; min_mask_rate raises the ratio
    multi = jnp.zeros((8, 3, 3, 4), jnp.int32)
    masked, mask = jit_mask_tokens(rng, multi, 0.5, 7, 1)
    assert mask.shape == (8, 9) and np.all(np.asarray(mask).sum(1) >= 5)
    np.testing.assert_array_equal(np.asarray(masked == 7).reshape(8, 9, 4).all(-1), mask)
    _, everything = jit_mask_tokens(rng, multi, 1.0, 7, 1)
    assert np.all(everything)

    # the cosine schedule's mean mask ratio is 2/pi (ceil adds < 1/N)
    _, mask = jit_mask_tokens(jax.random.key(5), jnp.zeros((2048, 100), jnp.int32))
    assert abs(float(np.asarray(mask).mean()) - 2 / np.pi - 0.005) < 0.02


def numpy_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.mark.parametrize("q", [None, 3])
def test_masked_cross_entropy_matches_numpy(q):
    vocab, smoothing = 10, 0.1
    index_shape = () if q is None else (q,)
    numpy_rng = np.random.default_rng(0)
    logits = numpy_rng.normal(size=(4, 2, 3) + index_shape + (vocab,)).astype(np.float32) * 3
    targets = numpy_rng.integers(0, vocab, (4, 2, 3) + index_shape)
    mask = numpy_rng.random((4, 6)) < 0.5
    soft = np.eye(vocab)[targets] * (1 - smoothing) + smoothing / vocab
    per_index = -(soft * numpy_log_softmax(logits.astype(np.float64))).sum(-1)
    per_position = per_index.reshape(4, 6, -1).mean(-1)
    expected = per_position[mask].mean()
    loss, metrics = jax.jit(maskgit.loss_and_metrics)(logits, targets, mask)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    correct = (logits.argmax(-1) == targets).reshape(4, 6, -1).mean(-1)
    np.testing.assert_allclose(float(metrics["accuracy"]), correct[mask].mean(), rtol=1e-6)
    assert float(metrics["mask_rate"]) == pytest.approx(mask.mean())


# -- bits mode (MaskBit): bit groups, per-group masking and loss -----------------------------------
def test_bit_groups_and_inputs_match_numpy():
    """group s of an index = its bits s*k .. s*k + k - 1 (lfq order), as MaskBit's
    split_factorized_tokens; the input is +-1 per bit (lfq's code values), 0 for masked groups."""
    numpy_rng = np.random.default_rng(0)
    indices = numpy_rng.integers(0, 2**14, (3, 5))
    groups = np.asarray(maskgit.split_bit_groups(jnp.asarray(indices), 14, 2))
    bits = (indices[..., None] >> np.arange(14)) & 1  # [3, 5, 14], bit 0 first
    expected = np.stack([(bits[..., :7] << np.arange(7)).sum(-1),
                         (bits[..., 7:] << np.arange(7)).sum(-1)], -1)
    np.testing.assert_array_equal(groups, expected)
    np.testing.assert_array_equal(groups, np.stack([indices % 128, indices // 128], -1))
    np.testing.assert_array_equal(maskgit.combine_bit_groups(jnp.asarray(groups), 7), indices)
    model = maskgit.create("tiny", vocab_size=2**14, prediction="bits", codebook_splits=7)
    np.testing.assert_array_equal(model.token_indices(model.model_tokens(indices)), indices)
    assert model.model_tokens(jnp.asarray(indices)).shape == (3, 5, 7)

    # inputs: +-1 bits, masked groups all 0; the flattened order is the index's bit order
    masked = groups.copy()
    masked[0, 0, 1] = 128  # the group mask id
    signs = np.asarray(maskgit.bit_signs(jnp.asarray(masked), 7, 128)).reshape(3, 5, 14)
    expected = 2.0 * bits - 1.0
    expected[0, 0, 7:] = 0.0
    np.testing.assert_array_equal(signs, expected)
    # lfq's own codes of the same indices are these signs
    q = quantizers.build("lfq", dim=14)
    variables = q.init(jax.random.key(0), jnp.zeros((1, 14)))
    codes = np.asarray(q.decode(variables, jnp.asarray(indices[1:])))
    np.testing.assert_array_equal(np.sign(codes), signs[1:])


def test_bits_mask_for_training_masks_groups_independently():
    model = maskgit.create("tiny", vocab_size=2**6, prediction="bits", codebook_splits=3)
    indices = jnp.asarray(np.random.default_rng(1).integers(0, 64, (256, 2, 3)), jnp.int32)
    run = jax.jit(maskgit.mask_for_training, static_argnums=(0, 3, 4))
    inputs, targets, mask = run(model, jax.random.key(2), indices, "cosine", 0.0)
    groups = np.asarray(indices)[..., None] >> np.array([0, 2, 4]) & 3  # [B, 2, 3, S=3]
    np.testing.assert_array_equal(targets, groups)
    assert mask.shape == (256, 18)  # M = N * S = 6 positions x 3 groups, row-major
    mask = np.asarray(mask)
    flat_inputs = np.asarray(inputs).reshape(256, 18)
    np.testing.assert_array_equal(flat_inputs == 4, mask)  # mask id 2^k = 4 exactly where masked
    np.testing.assert_array_equal(flat_inputs[~mask], groups.reshape(256, 18)[~mask])
    # exactly clip(ceil(r M), 1, M) groups per example, r = cos(pi/2 u) from the same rng split
    ratio = jax.jit(mask_schedule.sample_mask_ratio, static_argnums=(1, 2, 3))(
        jax.random.split(jax.random.key(2))[0], (256,), "cosine", 18)
    np.testing.assert_array_equal(mask.sum(1), np.clip(np.ceil(np.asarray(ratio) * 18), 1, 18))
    # groups are masked on their own: many positions are partly masked
    per_position = mask.reshape(256, 6, 3).sum(-1)
    assert np.mean((per_position > 0) & (per_position < 3)) > 0.2
    # min_mask_rate raises every example's ratio; index mode keeps whole positions
    _, _, mask = run(model, jax.random.key(2), indices, "arccos", 0.5)
    assert np.all(np.asarray(mask).sum(1) >= 9)
    index_model = maskgit.create("tiny", vocab_size=64)
    inputs, targets, mask = run(index_model, jax.random.key(2), indices, "cosine", 0.0)
    assert mask.shape == (256, 6)
    np.testing.assert_array_equal(targets, indices)


def test_bits_loss_is_per_group_softmax_cross_entropy():
    """loss_and_metrics in bits mode = the mean over masked groups of the label-smoothed
    cross-entropy of each group's 2^k-way softmax (MaskBit's MLMLoss on the masked groups)."""
    numpy_rng = np.random.default_rng(3)
    batch, grid, splits, values, smoothing = 4, (2, 3), 2, 8, 0.1
    logits = numpy_rng.normal(size=(batch, *grid, splits, values)).astype(np.float32) * 3
    indices = numpy_rng.integers(0, values**splits, (batch, *grid))
    targets = np.stack([indices % values, indices // values], -1)  # [B, h, w, S]
    mask = numpy_rng.random((batch, 6 * splits)) < 0.5  # per group, row-major
    mask[0] = False  # an example with nothing masked contributes nothing
    log_p = numpy_log_softmax(logits.astype(np.float64)).reshape(batch, 12, values)
    flat_targets = targets.reshape(batch, 12)
    nll = -np.take_along_axis(log_p, flat_targets[..., None], -1)[..., 0]
    expected = ((1 - smoothing) * nll - smoothing * log_p.mean(-1))[mask].mean()
    loss_fn = jax.jit(maskgit.loss_and_metrics, static_argnums=(3, 4))
    loss, metrics = loss_fn(logits, targets, mask, "bits", smoothing)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    correct = log_p.argmax(-1) == flat_targets
    np.testing.assert_allclose(float(metrics["accuracy"]), correct[mask].mean(), rtol=1e-6)
    assert float(metrics["mask_rate"]) == pytest.approx(mask.mean())
    # no smoothing: the masked groups' NLL, what eval reports
    loss, _ = loss_fn(logits, targets, mask, "bits", 0.0)
    np.testing.assert_allclose(float(loss), nll[mask].mean(), rtol=1e-5)


def test_drop_labels():
    labels = jnp.zeros((10_000,), jnp.int32)
    drop = jax.jit(maskgit.drop_labels, static_argnums=2)
    assert np.all(np.asarray(drop(jax.random.key(0), labels, 5, 0.0)) == 0)
    assert np.all(np.asarray(drop(jax.random.key(0), labels, 5, 1.0)) == 5)
    dropped = (np.asarray(drop(jax.random.key(0), labels, 5, 0.3)) == 5).mean()
    assert abs(dropped - 0.3) < 0.02


# -- a tiny MaskGIT learns a toy token language ----------------------------------------------
# Grid 2x4 (8 positions), vocabulary 8. A sequence of class c counts up by one modulo 4 inside the
# half {4c, ..., 4c + 3}: token[i] = 4c + (start + i) mod 4. 4 valid sequences per class out of
# 8^8, so random or position-independent sampling essentially never satisfies the rule.
TOY_GRID, TOY_VOCAB = (2, 4), 8


def toy_batch(rng, batch):
    start_rng, label_rng = jax.random.split(rng)
    labels = jax.random.randint(label_rng, (batch,), 0, 2)
    start = jax.random.randint(start_rng, (batch, 1), 0, 4)
    positions = jnp.arange(math.prod(TOY_GRID))[None]
    sequences = (start + positions) % 4 + 4 * labels[:, None]
    return sequences.reshape(batch, *TOY_GRID).astype(jnp.int32), labels


def satisfies_rule(sequences, labels):
    seq = np.asarray(sequences).reshape(len(labels), -1)
    in_half = np.all(seq // 4 == np.asarray(labels)[:, None], axis=1)
    counts_up = np.all((seq[:, 1:] - seq[:, :-1]) % 4 == 1, axis=1)
    return in_half & counts_up


@pytest.mark.parametrize("mode", ["index", "bits"])
def test_tiny_maskgit_learns_toy_language(mode):
    """Index mode over the 8 tokens; bits mode (MaskBit) over 4-bit indices split into 2 groups
    of 2 bits: group 0 is the counter, group 1 the class, masked and decoded on their own."""
    if mode == "bits":
        model = maskgit.create("tiny", vocab_size=2 * TOY_VOCAB, num_classes=2,
                               prediction="bits", codebook_splits=2)
    else:
        model = maskgit.create("tiny", vocab_size=TOY_VOCAB, num_classes=2)
    steps, batch = 600, 64
    optimizer = optax.adam(optax.warmup_cosine_decay_schedule(0.0, 3e-3, 50, steps))

    def train_step(carry, rng):
        params, opt_state = carry
        data_rng, mask_rng, drop_rng = jax.random.split(rng, 3)
        tokens, labels = toy_batch(data_rng, batch)
        masked, targets, mask = maskgit.mask_for_training(model, mask_rng, tokens)
        labels = maskgit.drop_labels(drop_rng, labels, model.null_label, 0.1)

        def loss_fn(params):
            logits = model.apply({"params": params}, masked, labels)
            return maskgit.loss_and_metrics(logits, targets, mask, model.prediction, 0.0)

        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), metrics["loss"]

    @jax.jit
    def train(rng):
        tokens, labels = toy_batch(rng, 2)
        params = model.init({"params": rng}, model.model_tokens(tokens), labels)["params"]
        (params, _), losses = jax.lax.scan(
            train_step, (params, optimizer.init(params)), jax.random.split(rng, steps))
        return params, losses

    params, losses = train(jax.random.key(0, impl="rbg"))
    losses = np.asarray(losses)
    assert losses[-50:].mean() < 0.5 * losses[:10].mean()

    labels = jnp.arange(64) % 2
    generate = jax.jit(functools.partial(maskgit.generate, model, grid=TOY_GRID, num_steps=8))
    out = generate({"params": params}, jax.random.key(1, impl="rbg"), labels)
    assert out.tokens.shape == (64,) + TOY_GRID
    rate = satisfies_rule(out.tokens, labels).mean()
    assert rate > 0.8, f"only {rate:.0%} of the samples follow the rule (chance < 1e-6)"
