"""Mask schedules, MaskGIT parallel decoding, autoregressive decoding and editing, with toy models.

The "models" here are small closed-form logits functions, so every property is checked exactly
(per-step mask counts, known tokens kept, guidance formula) without training anything.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqjax import quantizers
from vqjax.sampling import (
    autoregressive_decode,
    decode,
    editing,
    mask_schedule,
    sampler,
)

V = 8  # vocabulary of the toy models
MASK = V  # mask token id: an explicit extra id, == vocab size
N = 16  # positions


def table_logits_fn(num_indices=None, vocab=V, seed=0):
    """A toy model: fixed random logits per position (+ a per-label offset), ignoring the tokens."""
    shape = (N, vocab) if num_indices is None else (N, num_indices, vocab)
    table = jax.random.normal(jax.random.key(seed), shape)

    def logits_fn(tokens, labels):
        logits = jnp.broadcast_to(table, (tokens.shape[0],) + shape)
        if labels is not None:
            logits = logits + labels.astype(jnp.float32).reshape((-1,) + (1,) * len(shape))
        return logits

    return logits_fn


def all_masked(batch=2, num_indices=None):
    shape = (batch, N) if num_indices is None else (batch, N, num_indices)
    return jnp.full(shape, MASK, jnp.int32)


def expected_counts(num_unknown: int, num_steps: int) -> list[int]:
    """Masked positions after each step, cosine schedule, in float64 numpy."""
    masked, counts = num_unknown, []
    for t in range(num_steps):
        scheduled = math.floor(num_unknown * math.cos(math.pi / 2 * (t + 1) / num_steps))
        masked = 0 if t == num_steps - 1 else max(min(scheduled, masked - 1), 0)
        counts.append(masked)
    return counts


def numpy_log_softmax(x):
    x = np.asarray(x, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


# -- schedules -----------------------------------------------------------------------------------
ALL_METHODS = ("cosine", "linear", "square", "cubic", "sqrt", "pow1.5", "arccos", "log", "exp",
               "uniform")


@pytest.mark.parametrize("method", ALL_METHODS)
def test_schedule_end_points_and_monotone(method):
    n = 256
    ratios = np.linspace(0.0, 1.0, 101)
    values = np.asarray(mask_schedule.schedule(ratios, n, method))
    expected_start = 1.0 - 1.0 / n if method == "exp" else 1.0  # MaskGIT's exp starts at 1 - 1/n
    np.testing.assert_allclose(values[0], expected_start, atol=1e-6)
    assert values[-1] == 0.0
    assert np.all(np.diff(values) <= 1e-7), "schedules are non-increasing"
    assert np.all((values >= 0) & (values <= 1))


def test_schedule_formulas_and_errors():
    r = np.array([0.25, 0.5, 0.75], np.float32)
    np.testing.assert_allclose(mask_schedule.cosine(r), np.cos(np.pi / 2 * r), rtol=1e-6)
    np.testing.assert_allclose(mask_schedule.linear(r), 1 - r, rtol=1e-6)
    np.testing.assert_allclose(mask_schedule.square(r), 1 - r**2, rtol=1e-6)
    np.testing.assert_allclose(mask_schedule.cubic(r), 1 - r**3, rtol=1e-6)
    np.testing.assert_allclose(mask_schedule.sqrt(r), 1 - np.sqrt(r), rtol=1e-6)
    np.testing.assert_allclose(mask_schedule.arccos(r), np.arccos(r) / (np.pi / 2), rtol=1e-6)
    np.testing.assert_allclose(mask_schedule.log(r, 64), -np.log2(r) / 6, rtol=1e-6)
    np.testing.assert_allclose(mask_schedule.exp(r, 64), 1 - 64.0 ** -(1 - r), rtol=1e-6)
    with pytest.raises(ValueError, match="unknown mask schedule"):
        mask_schedule.schedule(0.5, method="zigzag")
    with pytest.raises(ValueError, match="total_unknown"):
        mask_schedule.schedule(0.5, method="log")
    counts = [int(mask_schedule.num_masked_after_step(t, 8, 16)) for t in range(8)]
    assert counts == [15, 14, 13, 11, 8, 6, 3, 0]


# -- filtering and guidance ----------------------------------------------------------------------
def numpy_top_k(logits, k):
    kth = np.sort(logits, axis=-1)[..., -k][..., None]
    return np.where(logits < kth, -np.inf, logits)


def numpy_top_p(logits, p):
    out = np.full_like(logits, -np.inf)
    for row in np.ndindex(logits.shape[:-1]):
        x = logits[row].astype(np.float64)
        probs = np.exp(x - x.max())
        probs /= probs.sum()
        order = np.argsort(-x, kind="stable")
        mass, kept = 0.0, []
        for i in order:
            if mass >= p:
                break
            kept.append(i)
            mass += probs[i]
        out[row][kept] = logits[row][kept]
    return out


def test_top_k_top_p_match_numpy():
    logits = np.asarray(jax.random.normal(jax.random.key(1), (4, 5, 11)) * 2.0)
    for k in (1, 3, 10):
        np.testing.assert_array_equal(sampler.top_k_filter(logits, k), numpy_top_k(logits, k))
    for p in (0.05, 0.5, 0.9, 0.999):
        np.testing.assert_array_equal(sampler.top_p_filter(logits, p), numpy_top_p(logits, p))
    assert sampler.top_k_filter(logits, None) is logits
    assert sampler.top_p_filter(logits, 1.0) is logits
    # top_k=1 and temperature 0 are greedy; sampled ids always lie in the kept set
    greedy = np.argmax(logits, -1)
    np.testing.assert_array_equal(sampler.sample_logits(jax.random.key(2), logits, top_k=1), greedy)
    np.testing.assert_array_equal(sampler.sample_logits(jax.random.key(2), logits, 0.0), greedy)
    draws = np.asarray(sampler.sample_logits(jax.random.key(3), logits, 1.0, top_k=3, top_p=0.7))
    kept = numpy_top_p(numpy_top_k(logits, 3), 0.7)
    assert np.all(np.isfinite(np.take_along_axis(kept, draws[..., None], -1)))


def test_guidance_formula_in_one_batched_call():
    calls = []
    cond_table = jax.random.normal(jax.random.key(4), (3, N, V))  # per label (2 = null)

    def logits_fn(tokens, labels):
        calls.append(tokens.shape[0])
        return cond_table[labels]

    tokens = all_masked(batch=2)
    labels = jnp.array([0, 1])
    guided = sampler.model_logits(logits_fn, tokens, labels, 3.0, null_label=2)
    assert calls == [4], "conditional and unconditional rows run in one forward"
    uncond, cond = cond_table[2], cond_table[labels]
    np.testing.assert_allclose(guided, uncond + 3.0 * (cond - uncond), rtol=1e-5, atol=1e-5)
    assert float(sampler.guidance_scale_at(0, 4, 5.0, "linear")) == pytest.approx(2.0)
    assert float(sampler.guidance_scale_at(3, 4, 5.0, "linear")) == pytest.approx(5.0)
    assert float(sampler.guidance_scale_at(1, 4, 5.0)) == 5.0
    # MaskBit's form: cond + s (cond - uncond) (s = 0: the conditional model), the same family
    guided = sampler.model_logits(logits_fn, tokens, labels, 3.0, null_label=2,
                                  guidance_base="cond")
    np.testing.assert_allclose(guided, cond + 3.0 * (cond - uncond), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sampler.guided_logits(cond, uncond, 4.0), guided, rtol=1e-5,
                               atol=1e-5)
    assert float(sampler.guidance_scale_at(0, 4, 6.0, "linear", "cond")) == pytest.approx(1.5)
    assert float(sampler.guidance_scale_at(3, 4, 6.0, "linear", "cond")) == pytest.approx(6.0)
    with pytest.raises(ValueError, match="guidance_base"):
        sampler.guided_logits(cond, uncond, 1.0, "both")
    # MaskBit's power-cosine anneal: s * (1 - cos(pi (i/T)^p)) / 2 on top of the conditional model
    for i in range(8):
        maskbit = 7.1 * (1 - np.cos(np.pi * (i / 8) ** 3.0)) / 2
        assert float(sampler.guidance_scale_at(i, 8, 7.1, "cosine3", "cond")) == pytest.approx(
            maskbit, abs=1e-5)
        assert float(sampler.guidance_scale_at(i, 8, 8.1, "cosine3")) == pytest.approx(
            1 + maskbit, abs=1e-5)
    with pytest.raises(ValueError, match="guidance anneal"):
        sampler.guidance_scale_at(0, 8, 2.0, "cosine-1")


def test_guidance_steers_decoding():
    """Conditional logits favour token `label` slightly; a large scale makes every token = label."""

    def logits_fn(tokens, labels):
        favoured = jax.nn.one_hot(jnp.where(labels == 2, 0, labels), V) * (labels != 2)[:, None]
        return jnp.broadcast_to(0.5 * favoured[:, None], (tokens.shape[0], N, V))

    labels = jnp.array([3, 5])
    run = jax.jit(functools.partial(
        decode, logits_fn, mask_token_id=MASK, null_label=2, guidance_anneal="linear"))
    out = run(all_masked(), jax.random.key(0), labels=labels, guidance_scale=jnp.float32(40.0))
    np.testing.assert_array_equal(out.tokens, np.broadcast_to(np.array([[3], [5]]), (2, N)))
    with pytest.raises(ValueError, match="null_label"):
        decode(logits_fn, all_masked(), jax.random.key(0), mask_token_id=MASK, labels=labels,
               guidance_scale=2.0)


# -- parallel decoding ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def jitted_decode(num_indices=None, **options):
    return jax.jit(functools.partial(
        decode, table_logits_fn(num_indices), mask_token_id=MASK, return_history=True,
        **options))


def test_decode_reveals_scheduled_counts_and_keeps_known_tokens():
    rng = jax.random.key(0)
    # example 0: all 16 masked; example 1: 11 known tokens, 5 unknown (fewer than the 8 steps)
    known = jax.random.randint(jax.random.key(9), (N,), 0, V)
    unknown_1 = np.zeros(N, bool)
    unknown_1[[1, 4, 7, 8, 15]] = True
    tokens = jnp.stack([jnp.full((N,), MASK), jnp.where(unknown_1, MASK, known)]).astype(jnp.int32)
    out = jitted_decode()(tokens, rng)
    counts = np.asarray(out.num_masked)  # [T, B]
    assert counts.shape == (8, 2)
    assert counts[:, 0].tolist() == expected_counts(16, 8) == [15, 14, 13, 11, 8, 6, 3, 0]
    assert counts[:, 1].tolist() == expected_counts(5, 8) == [4, 3, 2, 1, 0, 0, 0, 0]

    history = np.asarray(out.history)  # [T, B, N]
    np.testing.assert_array_equal((history == MASK).sum(-1), counts)
    final = np.asarray(out.tokens)
    assert not np.any(final == MASK) and final.min() >= 0 and final.max() < V
    np.testing.assert_array_equal(final[1][~unknown_1], np.asarray(known)[~unknown_1])
    for t in range(8):  # a revealed token never changes afterwards; known ones never change
        revealed = history[t] != MASK
        np.testing.assert_array_equal(history[t][revealed], final[revealed])


def test_decode_is_deterministic_per_rng():
    run = jitted_decode()
    tokens = all_masked(batch=4)
    first = np.asarray(run(tokens, jax.random.key(1)).tokens)
    np.testing.assert_array_equal(first, run(tokens, jax.random.key(1)).tokens)
    assert np.any(first != np.asarray(run(tokens, jax.random.key(2)).tokens))


def test_decode_multi_index_positions():
    run = jitted_decode(num_indices=3)
    tokens = all_masked(batch=2, num_indices=3)
    tokens = tokens.at[0, :4].set(jnp.array([1, 2, 3]))  # 4 known positions in example 0
    out = run(tokens, jax.random.key(0))
    assert out.tokens.shape == (2, N, 3)
    assert not np.any(np.asarray(out.tokens) == MASK)
    np.testing.assert_array_equal(out.tokens[0, :4], np.tile([1, 2, 3], (4, 1)))
    assert np.asarray(out.num_masked)[:, 0].tolist() == expected_counts(12, 8)
    assert np.asarray(out.num_masked)[:, 1].tolist() == expected_counts(16, 8)
    # a position is masked or revealed as a whole
    history = np.asarray(out.history)
    assert np.all((history == MASK).all(-1) == (history == MASK).any(-1))


# -- bits mode (MaskBit): every bit group is a decoding unit ---------------------------------------
SPLITS, GROUP_VALUES = 2, 4  # 4-bit indices as 2 groups of 2 bits; group mask id 4
GROUP_MASK = GROUP_VALUES


def group_table_logits_fn(num_indices=None, seed=5):
    """Fixed random group logits [B, N, (Q,) S, 4]; group 0 sharp, group 1 flat (so the confident
    groups of a step are group-0 units), ignoring the tokens."""
    tail = (SPLITS, GROUP_VALUES) if num_indices is None else (num_indices, SPLITS, GROUP_VALUES)
    table = np.array(jax.random.normal(jax.random.key(seed), (N,) + tail), np.float32)
    table[..., 0, :] *= 6.0
    table[..., 1, :] *= 0.3

    def logits_fn(tokens, labels):
        assert tokens.shape[1:] == (N,) + tail[:-1], tokens.shape  # group tokens
        return jnp.broadcast_to(jnp.asarray(table), (tokens.shape[0], N) + tail)

    return logits_fn, table


def test_bits_decode_step_keeps_the_most_confident_groups():
    """Step 0 of greedy per-group decoding by hand: every group takes its argmax, confidence =
    its log-probability; the floor(M cos(pi/2 / T)) least confident groups are re-masked."""
    logits_fn, table = group_table_logits_fn()
    num_steps, units = 4, N * SPLITS
    run = jax.jit(functools.partial(
        decode, logits_fn, mask_token_id=GROUP_MASK, prediction="bits", num_steps=num_steps,
        temperature=0.0, choice_temperature=0.0, return_history=True))
    tokens = jnp.full((2, N, SPLITS), GROUP_MASK, jnp.int32)
    out = run(tokens, jax.random.key(0))
    history = np.asarray(out.history)  # [T, B, N, S]
    assert out.tokens.shape == (2, N, SPLITS) and history.shape == (num_steps, 2, N, SPLITS)

    log_p = numpy_log_softmax(table.astype(np.float64)).reshape(units, GROUP_VALUES)
    greedy, confidence = log_p.argmax(-1), log_p.max(-1)  # per group, row-major (n, s)
    remasked = math.floor(units * math.cos(math.pi / 2 / num_steps))  # 29 of 32
    kept = np.argsort(-confidence, kind="stable")[: units - remasked]
    expected = np.full(units, GROUP_MASK)
    expected[kept] = greedy[kept]
    for b in range(2):
        np.testing.assert_array_equal(history[0, b].reshape(units), expected)
    # the 3 kept groups are all sharp group-0 units: their positions are now partly known
    assert np.all(kept % SPLITS == 0)
    # counts over groups follow the schedule; greedy decoding ends at every group's argmax
    assert np.asarray(out.num_masked)[:, 0].tolist() == expected_counts(units, num_steps)
    np.testing.assert_array_equal(np.asarray(out.tokens)[0].reshape(units), greedy)
    for t in range(num_steps):  # a revealed group never changes afterwards
        revealed = history[t] != GROUP_MASK
        np.testing.assert_array_equal(history[t][revealed], np.asarray(out.tokens)[revealed])


@pytest.mark.parametrize("num_indices", [None, 2])
def test_bits_decode_keeps_known_groups_and_samples_the_rest(num_indices):
    logits_fn, _ = group_table_logits_fn(num_indices)
    tail = (SPLITS,) if num_indices is None else (num_indices, SPLITS)
    known = np.asarray(jax.random.randint(jax.random.key(1), (2, N) + tail, 0, GROUP_VALUES))
    unknown = np.array(jax.random.bernoulli(jax.random.key(2), 0.6, known.shape))
    unknown[1] = True  # example 1 from scratch
    tokens = jnp.asarray(np.where(unknown, GROUP_MASK, known), jnp.int32)
    out = jax.jit(functools.partial(
        decode, logits_fn, mask_token_id=GROUP_MASK, prediction="bits", num_steps=5))(
        tokens, jax.random.key(3))
    final = np.asarray(out.tokens)
    assert final.shape == tokens.shape and final.min() >= 0 and final.max() < GROUP_VALUES
    np.testing.assert_array_equal(final[~unknown], known[~unknown])  # known groups kept
    counts = np.asarray(out.num_masked)
    assert counts[:, 0].tolist() == expected_counts(int(unknown[0].sum()), 5)
    assert counts[:, 1].tolist() == expected_counts(unknown[1].size, 5)


def test_bits_autoregressive_fills_a_position_per_forward():
    logits_fn, table = group_table_logits_fn(num_indices=2)
    tokens = jnp.full((2, N, 2, SPLITS), GROUP_MASK, jnp.int32).at[0, 3, 1, 0].set(2)
    out = jax.jit(functools.partial(
        autoregressive_decode, logits_fn, mask_token_id=GROUP_MASK, prediction="bits",
        temperature=0.0))(tokens, jax.random.key(0))
    greedy = numpy_log_softmax(table).argmax(-1)  # [N, Q, S]
    expected = np.broadcast_to(greedy, (2,) + greedy.shape).copy()
    expected[0, 3, 1, 0] = 2  # a known group is kept, its position's other groups sampled
    np.testing.assert_array_equal(out.tokens, expected)
    assert np.asarray(out.num_masked)[:, 1].tolist() == list(range(N - 1, -1, -1))


def test_bits_indices_round_trip_matches_lfq():
    indices = jax.random.randint(jax.random.key(0), (5, 7), 0, 2**30)
    np.testing.assert_array_equal(
        sampler.bits_to_indices(sampler.indices_to_bits(indices, 30)), indices)
    bits = np.asarray(sampler.indices_to_bits(jnp.array([5]), 4))[0]
    assert bits.tolist() == [True, False, True, False]  # first bit least significant
    q = quantizers.build("lfq", dim=6)
    z = jax.random.normal(jax.random.key(1), (4, 6))
    variables = q.init(jax.random.key(2), z)
    _, out = q.apply(variables, z)
    codes = q.decode(variables, out.indices)
    np.testing.assert_array_equal(sampler.bits_to_indices(codes > 0), out.indices)


def test_sampling_options_run_under_jit():
    run = jitted_decode(num_steps=4, schedule="linear", temperature=0.7, top_k=3, top_p=0.9,
                        choice_temperature=2.0)
    out = run(all_masked(), jax.random.key(0))
    assert np.asarray(out.num_masked)[:, 0].tolist() == [12, 8, 4, 0]
    top3 = np.argsort(-np.asarray(table_logits_fn()(all_masked(1), None))[0], -1)[:, :3]
    assert all(np.asarray(out.tokens)[b, n] in top3[n] for b in range(2) for n in range(N))


# -- autoregressive ------------------------------------------------------------------------------
def test_autoregressive_decode_one_token_per_forward():
    calls = []
    table = table_logits_fn()

    def logits_fn(tokens, labels):
        calls.append(1)
        return table(tokens, labels)

    tokens = all_masked(batch=2).at[1, 3].set(5)
    run = jax.jit(functools.partial(autoregressive_decode, logits_fn, mask_token_id=MASK))
    out = run(tokens, jax.random.key(0))
    assert len(calls) == 1, "one traced forward inside the scan"
    counts = np.asarray(out.num_masked)
    assert counts.shape == (N, 2)
    assert counts[:, 0].tolist() == list(range(N - 1, -1, -1))
    assert not np.any(np.asarray(out.tokens) == MASK) and int(out.tokens[1, 3]) == 5
    np.testing.assert_array_equal(out.tokens, run(tokens, jax.random.key(0)).tokens)


# -- editing -------------------------------------------------------------------------------------
def test_masks_and_blend():
    box = editing.box_mask(8, 8, 2, 4, 3, 2)
    assert int(box.sum()) == 6 and bool(box[2, 4]) and not bool(box[1, 4])
    np.testing.assert_array_equal(editing.box_mask(8, 8, 2, 4, 3, 2, invert=True), ~box)
    token_mask = editing.token_mask_from_pixels(box, (4, 4))  # 2x2 pixels per token
    assert np.asarray(token_mask).sum() == 2 and bool(token_mask[1, 2]) and bool(token_mask[2, 2])
    original, generated = jnp.zeros((1, 2, 2, 3)), jnp.ones((1, 2, 2, 3))
    soft = jnp.array([[0.0, 0.25], [1.0, 0.5]])
    np.testing.assert_allclose(editing.blend(original, generated, soft)[0, ..., 0], soft)


def test_edit_image_regenerates_only_the_masked_region():
    grid, patch = (4, 4), 2

    def decode_fn(tokens):  # a toy tokenizer decoder: one grey level per token, 2x2 pixels
        pixels = jnp.repeat(jnp.repeat(tokens.astype(jnp.float32) / V, patch, 1), patch, 2)
        return jnp.repeat(pixels[..., None], 3, axis=-1)

    tokens = jax.random.randint(jax.random.key(0), (2,) + grid, 0, V)
    image = decode_fn(tokens) + 0.01  # the original image differs from its decoding
    pixel_mask = editing.box_mask(8, 8, 0, 0, 4, 3)  # inpaint the top-left 4x3 pixels
    out = editing.edit_image(
        table_logits_fn(), decode_fn, image, tokens, pixel_mask, jax.random.key(1),
        mask_token_id=MASK, num_steps=4)
    keep = ~np.asarray(pixel_mask)
    np.testing.assert_array_equal(np.asarray(out.images)[:, keep], np.asarray(image)[:, keep])
    np.testing.assert_array_equal(
        np.asarray(out.images)[:, ~keep], np.asarray(out.generated)[:, ~keep])
    token_mask = np.asarray(out.token_mask)
    assert token_mask[0].sum() == 4  # tokens (0..1, 0..1) cover the 4x3 box
    np.testing.assert_array_equal(
        np.asarray(out.tokens)[~token_mask], np.asarray(tokens)[~token_mask])
    assert not np.any(np.asarray(out.tokens) == MASK)
