"""1 device and 8 devices give the same quantizer results (statistics over the global batch)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from vqjax import quantizers
from vqjax.quantizers.linen import QUANTIZER_STATE, QuantizerModule

SHARDED = [
    ("vq", {"codebook_size": 32, "kmeans_init": True, "threshold_ema_dead_code": 2.0}),
    ("vq", {"codebook_size": 32, "ema_update": False, "use_cosine_sim": True}),
    ("vq", {"codebook_size": 32, "ema_update": False, "entropy_loss_weight": 0.1,
            "entropy_temperature": 0.01, "codebook_diversity_loss_weight": 0.2}),
    ("vq", {"codebook_size": 32, "restart": "anchored", "anchor": "random"}),
    ("vq", {"codebook_size": 32, "restart": "anchored", "anchor": "closest",
            "kmeans_init": True}),
    ("fsq", {"levels": (5, 5, 5, 5, 5, 5, 5, 5)}),
    ("lfq", {"dim": 8}),
    ("bsq", {"dim": 8}),
    ("simvq", {"codebook_size": 32}),
    ("rvq", {"num_quantizers": 2, "codebook_size": 16, "kmeans_init": True}),
]


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake CPU) devices")
@pytest.mark.parametrize("name,options", SHARDED, ids=[f"{n}-{i}" for i, (n, _) in enumerate(SHARDED)])
def test_one_vs_eight_devices(name, options):
    if name not in quantizers.available():
        pytest.skip(f"{name} is not registered")
    q = quantizers.build(name, **options)
    z = jax.random.normal(jax.random.key(0), (16, 12, 8))
    variables = q.init(jax.random.key(1), z)
    step = jax.jit(lambda v, z: q.apply(v, z, rng=jax.random.key(2), train=True))

    single = step(variables, z)
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
    z_sharded = jax.device_put(z, NamedSharding(mesh, P("data")))
    assert len(z_sharded.sharding.device_set) == 8
    sharded = step(variables, z_sharded)

    (zq1, out1), (zq8, out8) = single, sharded
    np.testing.assert_array_equal(np.asarray(out1.indices), np.asarray(out8.indices))
    np.testing.assert_allclose(np.asarray(zq1), np.asarray(zq8), atol=1e-5)
    np.testing.assert_allclose(float(out1.loss), float(out8.loss), rtol=1e-5, atol=1e-7)
    for key in out1.metrics:
        np.testing.assert_allclose(float(out1.metrics[key]), float(out8.metrics[key]), rtol=1e-5,
                                   atol=1e-6, err_msg=key)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4,
                                                         atol=1e-5), out1.state, out8.state)


class TinyModel(nn.Module):
    quantizer: str
    options: tuple

    def setup(self):
        self.encoder = nn.Dense(8)
        self.quantize = QuantizerModule(self.quantizer, self.options)
        self.decoder = nn.Dense(5)

    def __call__(self, x, train=False):
        z_q, out = self.quantize(self.encoder(x), train=train)
        return self.decoder(z_q), out

    def decode_indices(self, indices):
        return self.decoder(self.quantize.decode(indices))


def test_linen_wrapper_holds_params_and_state():
    model = TinyModel("vq", (("codebook_size", 16), ("ema_update", False), ("kmeans_init", True)))
    x = jax.random.normal(jax.random.key(0), (32, 5))
    variables = model.init({"params": jax.random.key(1)}, x)
    assert "codebook" in variables["params"]["quantize"]["quantizer"]
    assert not bool(variables[QUANTIZER_STATE]["quantize"]["quantizer"]["initted"])

    (y, out), updates = model.apply(variables, x, train=True, rngs={"quantizer": jax.random.key(2)},
                                    mutable=[QUANTIZER_STATE])
    assert y.shape == x.shape
    new_state = updates[QUANTIZER_STATE]["quantize"]["quantizer"]
    assert bool(new_state["initted"])
    # Eval: state untouched, no mutable collection needed.
    y_eval, out_eval = model.apply({**variables, **updates}, x)
    np.testing.assert_array_equal(np.asarray(out_eval.state["initted"]), True)

    with pytest.raises(ValueError, match="mutable"):
        model.apply(variables, x, train=True, rngs={"quantizer": jax.random.key(2)})

    # Gradients reach the quantizer's params through the wrapper.
    def loss(params):
        (y, out), _ = model.apply({**variables, **updates, "params": params}, x, train=True,
                                  rngs={"quantizer": jax.random.key(3)}, mutable=[QUANTIZER_STATE])
        return jnp.mean((y - x) ** 2) + out.loss

    grads = jax.grad(loss)(variables["params"])
    codebook_grad = grads["quantize"]["quantizer"]["codebook"]
    assert float(jnp.sum(jnp.abs(codebook_grad))) > 0


def test_linen_wrapper_decode_matches_forward():
    model = TinyModel("vq", (("codebook_size", 16),))
    x = jax.random.normal(jax.random.key(0), (4, 5))
    variables = model.init({"params": jax.random.key(1)}, x)
    y, out = model.apply(variables, x)
    decoded = model.apply(variables, out.indices, method=TinyModel.decode_indices)
    np.testing.assert_allclose(np.asarray(decoded), np.asarray(y), atol=1e-5)


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake CPU) devices")
def test_kmeans_init_is_the_same_on_one_and_eight_devices():
    """Greedy k-means++ and Lloyd run on the global batch inside jit: a 64-cluster mixture
    sharded over 8 devices gives the centers and counts of the unsharded run."""
    from vqjax.quantizers.kmeans import kmeans

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(64, 8)) * 3
    x = (centers[rng.integers(0, 64, 2048)] + rng.normal(size=(2048, 8))).astype(np.float32)
    run = jax.jit(lambda x: kmeans(jax.random.key(3), x, 64, 10))
    single = run(jnp.asarray(x))
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
    sharded = run(jax.device_put(jnp.asarray(x), NamedSharding(mesh, P("data"))))
    np.testing.assert_allclose(np.asarray(sharded[0]), np.asarray(single[0]), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(sharded[1]), np.asarray(single[1]))
    assert float(jnp.sum(single[1])) == 2048
