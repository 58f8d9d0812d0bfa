"""SimVQ: frozen random basis times a learned map; nearest-code search, gradients, usage EMA."""

from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vqjax import quantizers


def _latents(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _setup(seed=0, shape=(4, 5, 6), **options):
    options = {"codebook_size": 40, "dim": shape[-1], **options}
    q = quantizers.build("simvq", **options)
    z = jnp.asarray(_latents(shape, seed))
    return q, q.init(jax.random.key(seed), z), z


@pytest.mark.parametrize("rotation_trick", [False, True])
def test_nearest_code_and_decode(rotation_trick):
    # chunk_size < codebook_size: the chunked search scans over 3 chunks (the last one padded).
    q, variables, z = _setup(chunk_size=16, codebook_dim=4, rotation_trick=rotation_trick)
    assert variables["state"]["basis"].shape == (40, 4)
    assert variables["params"]["codebook_map"].shape == (4, 6)
    z_q, out = jax.jit(q.apply)(variables, z)
    assert out.indices.shape == (4, 5) and out.indices.dtype == jnp.int32

    basis = np.asarray(variables["state"]["basis"], np.float64)
    codebook = basis @ np.asarray(variables["params"]["codebook_map"], np.float64)  # [K, D]
    flat = np.asarray(z, np.float64).reshape(-1, 6)
    distances = ((flat[:, None, :] - codebook[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(np.asarray(out.indices).reshape(-1), distances.argmin(-1))

    decoded = jax.jit(q.decode)(variables, out.indices)
    np.testing.assert_array_equal(np.asarray(decoded), np.asarray(z_q))  # bit for bit
    np.testing.assert_allclose(
        np.asarray(z_q).reshape(-1, 6), codebook[distances.argmin(-1)], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(np.asarray(q.codebook(variables)), codebook, rtol=1e-5, atol=1e-6)

    # loss = |sg(z) - q|^2 + 0.25 |z - sg(q)|^2, both means over elements.
    mse = np.mean((flat - codebook[distances.argmin(-1)]) ** 2)
    np.testing.assert_allclose(out.metrics["codebook_loss"], mse, rtol=1e-5)
    np.testing.assert_allclose(out.loss, 1.25 * mse, rtol=1e-5)
    counts = np.bincount(distances.argmin(-1), minlength=40)
    np.testing.assert_allclose(out.metrics["usage"], (counts > 0).mean())
    p = counts[counts > 0] / counts.sum()
    np.testing.assert_allclose(out.metrics["perplexity"], np.exp(-(p * np.log(p)).sum()), rtol=1e-5)


def test_affine_map_bias_as_the_reference_linear_layer():
    # SimVQ's reference maps the basis with nn.Linear (a bias): codes = C W + b. b starts at 0.
    q, variables, z = _setup(codebook_dim=4, codebook_bias=True)
    np.testing.assert_array_equal(np.asarray(variables["params"]["codebook_bias"]), np.zeros(6))
    bias = np.random.default_rng(3).normal(size=6).astype(np.float32)
    variables = {**variables, "params": {**variables["params"], "codebook_bias": jnp.asarray(bias)}}
    basis = np.asarray(variables["state"]["basis"], np.float64)
    codebook = basis @ np.asarray(variables["params"]["codebook_map"], np.float64) + bias
    z_q, out = jax.jit(q.apply)(variables, z)
    flat = np.asarray(z, np.float64).reshape(-1, 6)
    nearest = ((flat[:, None, :] - codebook[None]) ** 2).sum(-1).argmin(-1)
    np.testing.assert_array_equal(np.asarray(out.indices).reshape(-1), nearest)
    np.testing.assert_allclose(np.asarray(z_q).reshape(-1, 6), codebook[nearest], rtol=1e-5,
                               atol=1e-5)
    # d loss / d b = 2 mean over tokens of (q - z) / D (the codebook term; the commitment term
    # stops the gradient at q).
    grad = jax.grad(lambda v: q.apply(v, z, train=True)[1].loss)(variables)
    expected = 2 * (codebook[nearest] - flat).sum(0) / flat.size
    np.testing.assert_allclose(np.asarray(grad["params"]["codebook_bias"]), expected, rtol=1e-4,
                               atol=1e-6)
    q_linear, variables_linear, _ = _setup(codebook_dim=4, codebook_bias=False)
    assert set(variables_linear["params"]) == {"codebook_map"}
    with pytest.raises(ValueError, match="codebook_bias"):
        quantizers.build("simvq", codebook_size=4, codebook_bias=1)


@pytest.mark.parametrize("rotation_trick", [False, True])
def test_gradients_reach_the_map_not_the_basis(rotation_trick):
    q, variables, z = _setup(rotation_trick=rotation_trick)
    w = jnp.asarray(_latents(z.shape, seed=9))

    def objective(variables, z):
        z_q, out = q.apply(variables, z, train=True)
        return jnp.sum(w * z_q) + out.loss

    grads = jax.jit(jax.grad(objective, argnums=(0, 1)))(variables, z)
    var_grads, z_grad = grads
    assert float(jnp.max(jnp.abs(var_grads["params"]["codebook_map"]))) > 0
    for leaf in jax.tree.leaves(var_grads["state"]):  # frozen basis and usage counters
        np.testing.assert_array_equal(np.asarray(leaf), 0.0)
    assert np.all(np.isfinite(np.asarray(z_grad)))

    # Without the loss, the reconstruction gradient passes to z: identity for straight-through;
    # the rotation trick rotates/rescales it instead.
    z_grad = jax.jit(jax.grad(lambda z: jnp.sum(w * q.apply(variables, z)[0])))(z)
    if rotation_trick:
        assert not np.allclose(np.asarray(z_grad), np.asarray(w))
        assert np.all(np.isfinite(np.asarray(z_grad)))
    else:
        np.testing.assert_allclose(np.asarray(z_grad), np.asarray(w), rtol=1e-6)


def test_sgd_steps_lower_the_loss():
    q, variables, z = _setup(shape=(64, 6), codebook_size=16)
    optimizer = optax.sgd(2.0)
    opt_state = optimizer.init(variables["params"])

    @jax.jit
    def step(params, opt_state, state):
        def loss_fn(params):
            _, out = q.apply({"params": params, "state": state}, z, train=True)
            return out.loss, out

        (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, out.state, loss

    params, state = variables["params"], variables["state"]
    losses = []
    for _ in range(8):
        params, opt_state, new_state, loss = step(params, opt_state, state)
        np.testing.assert_array_equal(np.asarray(new_state["basis"]), np.asarray(state["basis"]))
        state = new_state
        losses.append(float(loss))
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses
    assert losses[-1] < 0.9 * losses[0], losses
    assert float(state["usage_steps"]) == 8.0


def test_usage_state_updates_only_in_training():
    q, variables, z = _setup(usage_decay=0.9)
    apply = jax.jit(q.apply, static_argnames="train")
    _, out = apply(variables, z, train=False)
    chex.assert_trees_all_equal(out.state, variables["state"])
    assert float(out.metrics["dead_codes"]) == 40.0  # no usage recorded yet

    _, out = apply(variables, z, train=True)
    counts = np.bincount(np.asarray(out.indices).reshape(-1), minlength=40)
    np.testing.assert_allclose(out.state["code_usage"], 0.1 * counts, rtol=1e-6)
    assert float(out.state["usage_steps"]) == 1.0
    # The bias-corrected EMA after one step is the batch's counts: unused codes are dead.
    assert float(out.metrics["dead_codes"]) == float(np.sum(counts == 0))
    np.testing.assert_array_equal(
        np.asarray(out.state["basis"]), np.asarray(variables["state"]["basis"])
    )

    # Evaluating with the updated state reports its dead codes and leaves it alone.
    _, eval_out = apply({**variables, "state": out.state}, z, train=False)
    chex.assert_trees_all_equal(eval_out.state, out.state)
    assert float(eval_out.metrics["dead_codes"]) == float(np.sum(counts == 0))


def test_jit_grad_vmap():
    q, variables, z = _setup(shape=(2, 3, 6), chunk_size=16)

    def objective(z):
        z_q, out = jax.vmap(lambda z: q.apply(variables, z))(z)
        return jnp.sum(z_q) + jnp.sum(out.loss), (z_q, out)

    grad, (z_q, out) = jax.jit(jax.grad(objective, has_aux=True))(z)
    assert np.all(np.isfinite(np.asarray(grad)))
    assert out.indices.shape == (2, 3) and out.loss.shape == (2,)
    assert all(m.shape == (2,) for m in out.metrics.values())
    z_q_all, out_all = jax.jit(q.apply)(variables, z)
    np.testing.assert_array_equal(np.asarray(out.indices), np.asarray(out_all.indices))
    # Separate programs may compute C W with a different summation order (an ulp apart).
    np.testing.assert_allclose(np.asarray(z_q), np.asarray(z_q_all), rtol=1e-6, atol=1e-7)


def test_bfloat16_inputs():
    q, variables, z = _setup()
    z_q, out = jax.jit(lambda v, z: q.apply(v, z, train=True))(variables, z.astype(jnp.bfloat16))
    assert z_q.dtype == jnp.bfloat16 and out.loss.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(z_q, np.float32))) and np.isfinite(float(out.loss))
    assert out.state["code_usage"].dtype == jnp.float32


def test_dim_taken_from_latents():
    q = quantizers.build("simvq", codebook_size=8)
    variables = q.init(jax.random.key(0), jnp.zeros((2, 3)))
    assert variables["params"]["codebook_map"].shape == (3, 3)
    with pytest.raises(ValueError, match="dim 3"):
        q.apply(variables, jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="dim=6"):
        quantizers.build("simvq", codebook_size=8, dim=6).apply(variables, jnp.zeros((2, 5)))


@pytest.mark.parametrize(
    "options,option",
    [
        ({}, "codebook_size"),
        ({"codebook_size": 0}, "codebook_size"),
        ({"codebook_size": 8.5}, "codebook_size"),
        ({"codebook_size": 8, "dim": 0}, "dim"),
        ({"codebook_size": 8, "codebook_dim": -2}, "codebook_dim"),
        ({"codebook_size": 8, "chunk_size": 0}, "chunk_size"),
        ({"codebook_size": 8, "commitment_weight": -0.1}, "commitment_weight"),
        ({"codebook_size": 8, "rotation_trick": "yes"}, "rotation_trick"),
        ({"codebook_size": 8, "usage_decay": 1.0}, "usage_decay"),
        ({"codebook_size": 8, "dead_code_threshold": -1.0}, "dead_code_threshold"),
        ({"codebook_size": 8, "beta": 0.25}, "beta"),
    ],
)
def test_bad_options(options, option):
    with pytest.raises(ValueError, match=option):
        quantizers.build("simvq", **options)


def test_bias_is_opt_in_for_old_runs():
    """Runs saved before codebook_bias existed have no such field in their config: the class
    default builds their parameter tree (no bias); the config presets ask for the bias."""
    from vqjax.train.config import load_config, quantizer_options

    _, variables, _ = _setup()
    assert set(variables["params"]) == {"codebook_map"}
    preset = Path(__file__).resolve().parent.parent / "configs" / "vitvqgan.py"
    config = load_config(f"{preset}:tiny")
    config.quantizer.name = "simvq"
    assert quantizer_options(config.quantizer)[1]["codebook_bias"] is True
