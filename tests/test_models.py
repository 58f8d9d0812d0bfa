"""Tokenizer models: ViT-VQGAN and the conv VQGAN (MaskGIT's). Tiny presets on 16x16 images, CPU.

XLA compilation dominates the run time here, so each (model, quantizer) is initialised once
(`initialized`), input checks run abstractly (`jax.eval_shape`: nothing compiles), and the gradient
checks ride on the first step of the overfitting runs.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vqjax import quantizers
from vqjax.models import layers, vit_vqgan, vqgan
from vqjax.quantizers.linen import QUANTIZER_STATE

FSQ = {"levels": (8, 5, 5, 5)}
# Small option sets per quantizer; tests of a quantizer that is not registered are skipped.
QUANTIZER_OPTIONS = {
    "fsq": FSQ,
    "vq": {"codebook_size": 64, "codebook_dim": 8, "use_cosine_sim": True},
    "lfq": {"codebook_size": 2**8},
}
SIZE = 16  # tiny presets: ViT patch 4 and conv f4 both give a 4x4 token grid
# The conv model's code path does not depend on the quantizer: test it with one (vq has state).
CONV_QUANTIZER = "vq" if "vq" in quantizers.available() else "fsq"


def cases(*rows):
    """pytest params (family, quantizer, ...), skipped where the quantizer is not registered."""
    return [
        pytest.param(
            *row,
            marks=pytest.mark.skipif(
                row[1] not in quantizers.available(), reason=f"{row[1]} not registered"
            ),
        )
        for row in rows
    ]


def smooth_images(rng, batch=4, size=SIZE):
    """Smooth random patterns in [-1, 1]: 4x4 random colours upsampled bilinearly."""
    coarse = jax.random.uniform(rng, (batch, 4, 4, 3), minval=-1.0, maxval=1.0)
    return jax.image.resize(coarse, (batch, size, size, 3), "bilinear")


def tiny(family, quantizer="fsq", **overrides):
    options = QUANTIZER_OPTIONS.get(quantizer, {})
    create = vit_vqgan.create if family == "vit" else vqgan.create
    return create("tiny", quantizer=quantizer, quantizer_options=options, **overrides)


@functools.lru_cache(maxsize=None)
def initialized(family, quantizer):
    """(model, variables) for a tiny model, initialised once per test process."""
    model = tiny(family, quantizer)
    images = jnp.zeros((1, SIZE, SIZE, 3), jnp.float32)
    return model, jax.jit(model.init)({"params": init_key()}, images)


def init_key(seed=0):
    # The "rbg" PRNG compiles about twice as fast as threefry on CPU; compile time rules here.
    return jax.random.key(seed, impl="rbg")


def trace_init(model, images, rng=None):
    """Init abstractly: input checks fire at trace time, nothing is compiled or allocated."""
    rng = jax.random.key(0) if rng is None else rng
    return jax.eval_shape(lambda x: model.init({"params": rng}, x), images)


def count(tree):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


# -- shapes and the tokenizer interface --------------------------------------------------------
@pytest.mark.parametrize(
    "family, quantizer",
    cases(("vit", "fsq"), ("vit", "vq"), ("vit", "lfq"), ("conv", CONV_QUANTIZER)),
)
def test_shapes_and_decode_indices_equals_decode(family, quantizer):
    model, variables = initialized(family, quantizer)
    images = smooth_images(jax.random.key(1), batch=2)

    @jax.jit
    def run(variables, images):
        reconstruction, aux = model.apply(variables, images)
        z_q, indices, _ = model.apply(variables, images, method=model.encode)
        from_indices = model.apply(variables, indices, method=model.decode_indices)
        from_codes = model.apply(variables, z_q, method=model.decode)
        return reconstruction, aux, z_q, indices, from_indices, from_codes

    reconstruction, aux, z_q, indices, from_indices, from_codes = run(variables, images)
    assert reconstruction.shape == images.shape and reconstruction.dtype == jnp.float32
    assert jnp.all(jnp.isfinite(reconstruction))
    grid = model.token_grid(SIZE, SIZE)
    assert grid == (4, 4)
    assert z_q.shape == (2, *grid, model.latent_channels) and z_q.dtype == jnp.float32
    assert indices.shape == (2, *grid) and indices.dtype == jnp.int32
    assert aux.loss.shape == () and "usage" in aux.metrics
    np.testing.assert_allclose(from_indices, from_codes, atol=1e-5)
    np.testing.assert_allclose(from_codes, reconstruction, atol=1e-5)


def test_latent_dim_follows_the_quantizer():
    assert tiny("vit", "fsq").latent_channels == 4  # len(levels)
    assert tiny("conv", "fsq").latent_channels == 4
    six_levels = {"levels": (8, 8, 8, 5, 5, 5)}
    assert vit_vqgan.create("B", quantizer="fsq", quantizer_options=six_levels).latent_channels == 6
    if "lfq" in quantizers.available():
        assert tiny("vit", "lfq").latent_channels == 8  # log2(codebook_size)
    if "vq" in quantizers.available():
        assert vit_vqgan.create("B").latent_channels == 768  # paper: 768 -> 32-d lookup inside vq
        assert vqgan.create("maskgit").latent_channels == 256


def test_token_grids():
    assert vit_vqgan.create("B").token_grid(256, 256) == (32, 32)
    assert vqgan.create("maskgit").token_grid(256, 256) == (16, 16)
    assert vqgan.create("maskgit").downsampling_factor == 16


# -- ablation options ----------------------------------------------------------------------------
def test_vit_ablations_sincos_swiglu_dropout_run(rng):
    model = tiny("vit", posemb="sincos2d", feed_forward="swiglu", dropout_rate=0.1)
    images = smooth_images(rng, batch=1)
    variables = jax.jit(model.init)({"params": init_key()}, images)
    assert "position_embedding" not in variables["params"]["encoder"]  # fixed, not a parameter
    assert "wi_gate" in variables["params"]["encoder"]["transformer"]["block_00"]["feed_forward"]
    apply = jax.jit(lambda v, x, r: model.apply(v, x, train=True, rngs={"dropout": r}))
    out, _ = apply(variables, images, rng)
    assert out.shape == images.shape and jnp.all(jnp.isfinite(out))


@pytest.mark.parametrize("feed_forward", ["mlp", "geglu", "swiglu"])
@pytest.mark.parametrize("posemb", ["learned", "sincos2d"])
def test_vit_ablation_shapes(posemb, feed_forward):
    model = tiny("vit", posemb=posemb, feed_forward=feed_forward)
    images = jax.ShapeDtypeStruct((2, SIZE, SIZE, 3), jnp.float32)
    variables = trace_init(model, images)
    out, _ = jax.eval_shape(model.apply, variables, images)
    assert out.shape == images.shape
    learned = "position_embedding" in variables["params"]["encoder"]
    assert learned == (posemb == "learned")


def test_logit_laplace_head_emits_mu_and_log_scale():
    model = tiny("vit", logit_laplace=True)
    images = jax.ShapeDtypeStruct((1, SIZE, SIZE, 3), jnp.float32)
    out, _ = jax.eval_shape(model.apply, trace_init(model, images), images)
    assert out.shape == (1, SIZE, SIZE, 6)


def test_sincos_posemb_layout():
    pe = layers.posemb_sincos_2d(2, 3, 8)  # 2 rows x 3 columns, 8 channels
    assert pe.shape == (1, 6, 8)
    # Token 0 is (y=0, x=0): sin(0)=0, cos(0)=1 in each quarter; token 1 is (y=0, x=1).
    np.testing.assert_allclose(pe[0, 0], [0, 0, 1, 1, 0, 0, 1, 1], atol=1e-7)
    np.testing.assert_allclose(pe[0, 1, :2], np.sin([1.0, 1e-4]), atol=1e-6)
    np.testing.assert_allclose(pe[0, 1, 4:6], [0, 0], atol=1e-7)
    np.testing.assert_allclose(pe[0, 3, 4:6], np.sin([1.0, 1e-4]), atol=1e-6)  # (y=1, x=0)


def test_learned_posemb_fixes_the_resolution_sincos_does_not():
    small = jax.ShapeDtypeStruct((1, SIZE, SIZE, 3), jnp.float32)
    large = jax.ShapeDtypeStruct((1, 2 * SIZE, 2 * SIZE, 3), jnp.float32)
    model = tiny("vit")
    with pytest.raises(ValueError, match="sincos2d"):
        jax.eval_shape(model.apply, trace_init(model, small), large)
    model = tiny("vit", posemb="sincos2d")
    out, _ = jax.eval_shape(model.apply, trace_init(model, small), large)
    assert out.shape == large.shape


# -- parameter counts from the architecture formula --------------------------------------------
def block_params(d: int) -> int:
    """Pre-LN block with MLP ratio 4: attention 4d^2 + 4d (q, k, v, out with biases), MLP
    2 * 4d^2 + 4d + d, two LayerNorms 4d: 12 d^2 + 13 d."""
    return 12 * d * d + 13 * d


def expected_vit_vqgan_params(size: vit_vqgan.ViTSize, patch: int, tokens: int, latent: int) -> int:
    d, p = size.width, patch
    assert size.mlp_dim == 4 * d
    pixels = p * p * 3
    encoder = (
        pixels * d + d  # patch embedding
        + tokens * d  # learned position embeddings
        + size.num_layers * block_params(d)
        + 2 * d  # final LayerNorm
        + d * d + d + d * latent + latent  # head: Dense(d) -> tanh -> Dense(latent)
    )
    decoder = (
        latent * d + d  # code embedding
        + tokens * d  # learned position embeddings
        + size.num_layers * block_params(d)
        + 2 * d  # final LayerNorm
        + d * d + d + d * pixels + pixels  # head: Dense(d) -> tanh -> Dense(p*p*3)
    )
    return encoder + decoder


@pytest.mark.parametrize("preset", ["S", "B"])
def test_vit_vqgan_parameter_counts_match_the_formula(preset):
    model = vit_vqgan.create(preset, quantizer="fsq", quantizer_options=FSQ)
    shapes = trace_init(model, jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32))
    expected = expected_vit_vqgan_params(vit_vqgan.SIZES[preset], patch=8, tokens=32 * 32, latent=4)
    assert count(shapes["params"]) == expected
    assert count(shapes["params"]["quantize"]) == 0  # FSQ has no parameters


# -- bf16 compute --------------------------------------------------------------------------------
@pytest.mark.parametrize("family, quantizer", [("vit", "fsq"), ("conv", CONV_QUANTIZER)])
def test_bfloat16_compute_with_float32_params(family, quantizer):
    _, variables = initialized(family, quantizer)  # float32 params: the bf16 model's tree too
    model = tiny(family, quantizer, dtype=jnp.bfloat16)
    images = smooth_images(jax.random.key(1), batch=2)
    shapes = trace_init(model, images)
    param_dtypes = {leaf.dtype for leaf in jax.tree_util.tree_leaves(shapes["params"])}
    assert param_dtypes == {jnp.dtype("float32")}
    reconstruction, aux = jax.jit(model.apply)(variables, images)
    assert reconstruction.dtype == jnp.float32 and reconstruction.shape == images.shape
    assert jnp.all(jnp.isfinite(reconstruction))
    assert aux.indices.shape == (2, 4, 4)


# -- input validation ----------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["vit", "conv"])
def test_bad_images_raise_errors_naming_the_problem(family):
    model = tiny(family)
    field = "patch_size" if family == "vit" else "channel_multipliers"
    image = lambda *shape, dtype=jnp.float32: jax.ShapeDtypeStruct(shape, dtype)  # noqa: E731
    with pytest.raises(ValueError, match="rank 4"):
        trace_init(model, image(SIZE, SIZE, 3))
    with pytest.raises(ValueError, match="3 channels"):
        trace_init(model, image(1, SIZE, SIZE, 4))
    with pytest.raises(ValueError, match=field):
        trace_init(model, image(1, SIZE + 2, SIZE, 3))
    with pytest.raises(TypeError, match="floating"):
        trace_init(model, image(1, SIZE, SIZE, 3, dtype=jnp.uint8))
    # Concrete images (as at model.init) are range-checked: [0, 255] floats are a classic mistake.
    with pytest.raises(ValueError, match=r"\[-1, 1\].*x / 127.5 - 1"):
        model.init(jax.random.key(0), jnp.full((1, SIZE, SIZE, 3), 255.0))


def test_bad_fields_raise_errors_naming_the_field():
    images = jax.ShapeDtypeStruct((1, SIZE, SIZE, 3), jnp.float32)
    with pytest.raises(ValueError, match="unknown quantizer 'nope'"):
        trace_init(tiny("vit", "nope"), images)
    with pytest.raises(ValueError, match="unknown quantizer 'nope'"):
        trace_init(tiny("conv", "nope"), images)
    with pytest.raises(ValueError, match="posemb"):
        trace_init(tiny("vit", posemb="rope"), images)
    with pytest.raises(ValueError, match="feed_forward"):
        trace_init(tiny("vit", feed_forward="moe"), images)
    with pytest.raises(ValueError, match="latent_dim"):
        trace_init(tiny("vit", latent_dim=7), images)  # fsq needs 4 channels
    with pytest.raises(ValueError, match="embedding_dim"):
        trace_init(tiny("conv", embedding_dim=7), images)
    with pytest.raises(ValueError, match="encoder_size"):
        trace_init(tiny("vit", encoder_size="XXL"), images)
    with pytest.raises(ValueError, match="norm_groups"):
        trace_init(tiny("conv", filters=12), images)
    with pytest.raises(ValueError, match="channel_multipliers"):
        trace_init(tiny("conv", channel_multipliers=()), images)
    with pytest.raises(ValueError, match="preset"):
        vit_vqgan.create("XL")


# -- learning: gradients and overfitting ---------------------------------------------------------
def overfit(model, variables, images, steps, learning_rate):
    """Adam (cosine-decayed) on L2 + quantizer loss. Returns (mse per step, first grads)."""
    params, state = variables["params"], variables[QUANTIZER_STATE]
    optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))
    opt_state = optimizer.init(params)

    def loss_fn(params, state, rng):
        (reconstruction, aux), updates = model.apply(
            {"params": params, QUANTIZER_STATE: state}, images, train=True,
            rngs={"quantizer": rng}, mutable=[QUANTIZER_STATE],
        )
        mse = jnp.mean((reconstruction - images) ** 2)
        return mse + aux.loss, (mse, updates[QUANTIZER_STATE])

    @jax.jit
    def step(params, state, opt_state, rng):
        # Differentiate w.r.t. the quantizer state too, to check that no gradient reaches it.
        grad_fn = jax.grad(loss_fn, argnums=(0, 1), has_aux=True, allow_int=True)
        (grads, state_grads), (mse, new_state) = grad_fn(params, state, rng)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_state, opt_state, mse, (grads, state_grads)

    losses, first_grads = [], None
    for rng in jax.random.split(jax.random.key(2), steps):
        params, state, opt_state, mse, grads = step(params, state, opt_state, rng)
        first_grads = grads if first_grads is None else first_grads
        losses.append(mse)
    return np.asarray(losses), first_grads


@pytest.mark.slow
@pytest.mark.parametrize(
    "family, quantizer, steps, learning_rate",
    cases(
        ("vit", "fsq", 600, 3e-3),
        ("vit", "vq", 600, 3e-3),
        ("vit", "lfq", 600, 3e-3),
        ("conv", CONV_QUANTIZER, 300, 2e-3),
    ),
)
def test_gradients_reach_every_param_and_a_tiny_model_overfits(
    family, quantizer, steps, learning_rate
):
    model, variables = initialized(family, quantizer)
    images = smooth_images(jax.random.key(1), batch=4)
    losses, (param_grads, state_grads) = overfit(model, variables, images, steps, learning_rate)

    # Every encoder and decoder parameter receives a nonzero gradient from the first step ...
    for part in ("encoder", "decoder"):
        flat = jax.tree_util.tree_flatten_with_path(param_grads[part])[0]
        dead = [jax.tree_util.keystr(path) for path, grad in flat if not np.any(np.asarray(grad))]
        assert not dead, f"{part} parameters without gradient: {dead}"
    # ... and none reaches the quantizer's state (EMA codebook, counters): not trained by grad.
    for leaf in jax.tree_util.tree_leaves(state_grads):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert not np.any(np.asarray(leaf) != 0)

    # L2 reconstruction error falls 10x on the one batch (mean of the last 10 steps vs the first).
    initial, final = float(losses[0]), float(losses[-10:].mean())
    assert final < initial / 10, (initial, final, losses[:: steps // 10])
