"""Discriminators: blur-pool and minibatch stddev vs numpy, shapes, parameter counts, grads."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqjax.models import layers
from vqjax.models import PatchGANDiscriminator, StyleGANDiscriminator
from vqjax.models.discriminator import blur_downsample, maskgit_widths, minibatch_stddev


def _images(seed, shape):
    return np.random.RandomState(seed).uniform(-1, 1, shape).astype(np.float32)


def _count(tree):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _init(module, images, seed=0):
    """Variables shaped like `module.init`'s, filled by numpy (He-scaled kernels, unit scales).

    Flax's init draws every parameter with threefry, one XLA compile per shape: seconds each on a
    busy 2-core CPU. The tests here need valid values, not flax's exact draws; one test below runs
    the real init.
    """
    shapes = jax.eval_shape(module.init, jax.random.key(0), images)
    rng = np.random.RandomState(seed)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path[-1:])
        if leaf.ndim >= 2:  # conv / dense kernels
            fan_in = int(np.prod(leaf.shape[:-1]))
            value = rng.randn(*leaf.shape) / np.sqrt(fan_in)
        elif "scale" in name or "var" in name:
            value = np.ones(leaf.shape)
        else:  # biases, BatchNorm means
            value = 0.1 * rng.randn(*leaf.shape)
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


# -- building blocks -------------------------------------------------------------------------------


def test_blur_downsample_matches_numpy():
    x = _images(0, (2, 8, 6, 3))
    taps = np.array([1.0, 3.0, 3.0, 1.0]) / 8.0
    padded = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    expected = np.zeros((2, 4, 3, 3))
    for i in range(4):
        for j in range(3):
            window = padded[:, 2 * i : 2 * i + 4, 2 * j : 2 * j + 4, :]  # [B, 4, 4, C]
            expected[:, i, j] = np.einsum("bhwc,h,w->bc", window, taps, taps)
    got = jax.jit(blur_downsample)(x)
    assert got.shape == (2, 4, 3, 3)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # A constant image stays constant away from the zero-padded border (the filter sums to 1).
    np.testing.assert_allclose(blur_downsample(jnp.ones((1, 8, 8, 2)))[:, 1:-1, 1:-1], 1.0,
                               rtol=1e-6)


def test_minibatch_stddev_matches_numpy():
    x = _images(1, (6, 3, 3, 4))
    out = np.asarray(jax.jit(functools.partial(minibatch_stddev, group_size=4))(x))
    assert out.shape == (6, 3, 3, 5)
    np.testing.assert_allclose(out[..., :4], x)
    # B = 6, group_size 4 -> G = 3 (largest divisor <= 4); sample i is grouped with i + 2, i + 4.
    for i in range(6):
        members = x[[i % 2, i % 2 + 2, i % 2 + 4]].astype(np.float64)  # [3, H, W, C]
        expected = np.mean(np.sqrt(members.var(axis=0) + 1e-8))
        np.testing.assert_allclose(out[i, ..., 4], expected, rtol=1e-5)
    two = np.asarray(minibatch_stddev(x, group_size=4, num_features=2))
    assert two.shape == (6, 3, 3, 6)
    members = x[[0, 2, 4]].astype(np.float64)
    np.testing.assert_allclose(two[0, 0, 0, 5], np.mean(np.sqrt(members[..., 2:].var(0) + 1e-8)),
                               rtol=1e-5)


# -- StyleGAN --------------------------------------------------------------------------------------


def _stylegan_param_count(filters, multipliers, resolution, channels=3, mbstd=1):
    conv = lambda k, cin, cout, bias=True: k * k * cin * cout + (cout if bias else 0)
    total = conv(3, channels, filters)
    cin = filters
    for m in multipliers:
        cout = filters * m
        total += conv(3, cin, cin) + conv(3, cin, cout) + conv(1, cin, cout, bias=False)
        cin = cout
    total += conv(3, cin + mbstd, cin)
    final = resolution // 2 ** len(multipliers)
    total += final * final * cin * cin + cin + cin + 1
    return total


@pytest.mark.parametrize("resolution", [32, 64])
def test_stylegan_shapes_and_parameter_count(resolution):
    disc = StyleGANDiscriminator(filters=8, channel_multipliers=(1, 2, 2))
    images = _images(2, (4, resolution, resolution, 3))
    variables = _init(disc, images)
    logits = jax.jit(disc.apply)(variables, images)
    assert logits.shape == (4,) and logits.dtype == jnp.float32 and np.all(np.isfinite(logits))
    assert _count(variables["params"]) == _stylegan_param_count(8, (1, 2, 2), resolution)
    assert set(variables) == {"params"}  # stateless: R1 can differentiate it freely


def test_stylegan_default_parameter_count_at_256():
    disc = StyleGANDiscriminator()  # 128 filters, multipliers (2, 4, 4, 4, 4)
    variables = jax.eval_shape(disc.init, jax.random.key(0), jnp.zeros((2, 256, 256, 3)))
    assert _count(variables["params"]) == _stylegan_param_count(128, (2, 4, 4, 4, 4), 256)
    assert jax.eval_shape(disc.apply, variables, jnp.zeros((2, 256, 256, 3))).shape == (2,)


def test_stylegan_rejects_indivisible_resolution():
    disc = StyleGANDiscriminator(filters=4, channel_multipliers=(1, 1, 1))
    with pytest.raises(ValueError, match="divisible by 8"):
        disc.init(jax.random.key(0), jnp.zeros((1, 20, 20, 3)))


def test_stylegan_bf16_compute_and_gradients():
    kwargs = dict(filters=8, channel_multipliers=(1, 2))
    disc32 = StyleGANDiscriminator(**kwargs)
    disc16 = StyleGANDiscriminator(**kwargs, dtype=jnp.bfloat16)
    images = _images(3, (4, 16, 16, 3))
    variables = _init(disc32, images, seed=1)
    params_16 = jax.eval_shape(disc16.init, jax.random.key(1), images)["params"]
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params_16))

    @jax.jit
    def run(params, images):
        logits32 = disc32.apply({"params": params}, images)
        logits16 = disc16.apply({"params": params}, images)
        loss = lambda p, x: jnp.mean(jax.nn.softplus(-disc16.apply({"params": p}, x)))
        return logits32, logits16, jax.grad(loss, argnums=(0, 1))(params, images)

    logits32, logits16, (grad_params, grad_images) = run(variables["params"], images)
    assert logits16.dtype == jnp.float32 and np.all(np.isfinite(logits16))
    np.testing.assert_allclose(logits16, logits32, atol=0.05 + 0.05 * np.abs(logits32).max())
    for path, grad in jax.tree_util.tree_flatten_with_path(grad_params)[0]:
        assert grad.dtype == jnp.float32 and np.all(np.isfinite(grad)), path
        assert np.any(np.asarray(grad) != 0), jax.tree_util.keystr(path)
    assert np.all(np.isfinite(grad_images)) and np.any(np.asarray(grad_images) != 0)


def test_stylegan_without_mbstd_treats_samples_independently():
    disc = StyleGANDiscriminator(filters=4, channel_multipliers=(1, 1), mbstd_group_size=0)
    images = _images(4, (4, 8, 8, 3))
    variables = _init(disc, images, seed=2)
    apply = jax.jit(disc.apply)
    np.testing.assert_allclose(apply(variables, images)[:2], apply(variables, images[:2]),
                               rtol=1e-5)


# -- PatchGAN --------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["group", "batch"])
def test_patchgan_matches_taming_parameter_count(norm):
    # taming's NLayerDiscriminator(input_nc=3, ndf=64, n_layers=3) has 2,765,633 parameters.
    disc = PatchGANDiscriminator(norm=norm)
    images = jnp.zeros((2, 256, 256, 3))
    variables = jax.eval_shape(disc.init, jax.random.key(0), images)
    assert _count(variables["params"]) == 2_765_633
    assert jax.eval_shape(disc.apply, variables, images).shape == (2, 30, 30)
    if norm == "batch":
        assert _count(variables["batch_stats"]) == 2 * (128 + 256 + 512)


def test_patchgan_shapes_bf16_and_gradients():
    disc = PatchGANDiscriminator(filters=8, num_layers=3, num_groups=4, dtype=jnp.bfloat16)
    for resolution, patches in ((64, 6), (128, 14)):  # (H/8 - 2) patches per side
        blank = jnp.zeros((1, resolution, resolution, 3))
        shapes = jax.eval_shape(disc.init, jax.random.key(3), blank)
        assert jax.eval_shape(disc.apply, shapes, blank).shape == (1, patches, patches)
    disc = disc.clone(num_layers=2)  # a shallower one to compile and differentiate
    images = _images(5, (2, 32, 32, 3))
    shapes = jax.eval_shape(disc.init, jax.random.key(3), images)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(shapes))
    variables = _init(disc, images, seed=3)

    @jax.jit
    def run(params, images):
        loss = lambda p: jnp.mean(jax.nn.relu(1.0 + disc.apply({"params": p}, images)))
        return disc.apply({"params": params}, images), jax.grad(loss)(params)

    logits, grads = run(variables["params"], images)
    assert logits.shape == (2, 6, 6) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    assert np.any(np.asarray(grads["conv_0"]["kernel"]) != 0)


def test_patchgan_batchnorm_state():
    disc = PatchGANDiscriminator(filters=8, num_layers=2, norm="batch")
    images = _images(6, (4, 32, 32, 3))
    variables = _init(disc, images, seed=4)
    logits, updates = jax.jit(
        lambda v, x: disc.apply(v, x, train=True, mutable=["batch_stats"])
    )(variables, images)
    assert logits.shape == (4, 6, 6) and np.all(np.isfinite(logits))
    before = variables["batch_stats"]["norm_1"]["mean"]
    after = updates["batch_stats"]["norm_1"]["mean"]
    assert not np.allclose(before, after)  # running statistics moved (momentum 0.9)
    eval_logits = jax.jit(disc.apply)({**variables, **updates}, images)  # train=False: no mutation
    assert eval_logits.shape == (4, 6, 6)
    with pytest.raises(ValueError, match="norm must be"):
        jax.eval_shape(PatchGANDiscriminator(norm="layer").init, jax.random.key(0), images)


def test_patchgan_real_init_follows_taming():
    # conv weights N(0, 0.02), norm scales N(1, 0.02), biases 0 (taming's weights_init).
    disc = PatchGANDiscriminator(filters=16, num_layers=1, num_groups=4)
    key = jax.random.key(5, impl="rbg")  # threefry's compile is slow on a busy CPU; same init code
    params = jax.jit(disc.init)(key, jnp.zeros((1, 16, 16, 3)))["params"]
    kernel = np.asarray(params["conv_1"]["kernel"])  # [4, 4, 16, 32]
    assert abs(kernel.std() - 0.02) < 0.002 and abs(kernel.mean()) < 0.002
    scale = np.asarray(params["norm_1"]["scale"])
    assert abs(scale.mean() - 1.0) < 0.02 and 0.005 < scale.std() < 0.04
    assert not np.any(np.asarray(params["conv_0"]["bias"]))
    assert "bias" not in params["conv_1"]  # followed by a norm


def _maskgit_release_param_count(resolution):
    """Parameters of maskgit/nets/discriminator.py at `resolution`, counted from its code by hand:
    widths {4..32: 512, 64: 256, 128: 128, 256: 64}; 3x3 stem; per halving a ResBlock (3x3 cin->cin,
    3x3 cin->cout, 1x1 skip without bias); 3x3 conv 512; dense 4*4*512 -> 512; dense 512 -> 1."""
    table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64}
    cin = table[resolution]
    total = 9 * 3 * cin + cin
    size = resolution
    while size > 4:
        size //= 2
        cout = table[size]
        total += 9 * cin * cin + cin + 9 * cin * cout + cout + cin * cout
        cin = cout
    total += 9 * 512 * 512 + 512 + 4 * 4 * 512 * 512 + 512 + 512 + 1
    return total


@pytest.mark.parametrize("resolution", [64, 128, 256])
def test_maskgit_release_discriminator(resolution):
    """maskgit_widths + mbstd_group_size=0 is the released network: its widths, its parameter
    count, 4x4 before the dense layers and no minibatch-stddev channel."""
    filters, multipliers = maskgit_widths(resolution)
    if resolution == 256:
        assert (filters, multipliers) == (64, (2, 4, 8, 8, 8, 8))
    disc = StyleGANDiscriminator(filters, multipliers, mbstd_group_size=0)
    images = jnp.zeros((2, resolution, resolution, 3))
    variables = jax.eval_shape(disc.init, jax.random.key(0), images)
    params = variables["params"]
    assert _count(params) == _maskgit_release_param_count(resolution)
    assert params["final_conv"]["kernel"].shape == (3, 3, 512, 512)  # no stddev channel
    assert params["final_dense"]["kernel"].shape == (4 * 4 * 512, 512)  # ends at 4x4
    with pytest.raises(ValueError, match="image_size must be a power of two"):
        maskgit_widths(96)


def test_blur_downsample_gradient_matches_depthwise_conv():
    """The strided-slice blur has the gradient of the depthwise convolution it replaces."""
    x = _images(2, (2, 8, 8, 3))
    weights = jnp.asarray(_images(3, (2, 4, 4, 3)))
    kernel = np.outer([1.0, 3.0, 3.0, 1.0], [1.0, 3.0, 3.0, 1.0]) / 64.0
    kernel = jnp.asarray(np.tile(kernel[:, :, None, None], (1, 1, 1, 3)), jnp.float32)

    def conv(y):
        return jax.lax.conv_general_dilated(y, kernel, (2, 2), ((1, 1), (1, 1)),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            feature_group_count=3)

    grad = lambda f: jax.grad(lambda y: jnp.sum(f(y) * weights))(x)  # noqa: E731
    np.testing.assert_allclose(grad(blur_downsample), grad(conv), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("strides,padding", [((1, 1), "SAME"), ((2, 2), ((1, 1), (1, 2))),
                                             ((2, 1), "VALID")])
def test_matmul_kernel_grad_conv_matches_xla(strides, padding):
    """layers.conv_general_dilated: XLA's forward, and first and second derivatives (R1 takes
    the gradient of an input gradient) equal to lax.conv_general_dilated's, on the matmul path
    (>= 128 channels on CPU) and below it."""
    for c_in, c_out in ((128, 130), (5, 6)):
        x = jnp.asarray(_images(4, (2, 9, 10, c_in)))
        k = jnp.asarray(_images(5, (3, 4, c_in, c_out)))
        dn = ("NHWC", "HWIO", "NHWC")

        def loss(conv):
            return lambda x, k: jnp.sum(jnp.sin(conv(x, k, strides, padding,
                                                     dimension_numbers=dn)))

        ours, xla = loss(layers.conv_general_dilated), loss(jax.lax.conv_general_dilated)
        np.testing.assert_array_equal(ours(x, k), xla(x, k))
        for got, want in zip(jax.jit(jax.grad(ours, (0, 1)))(x, k),
                             jax.jit(jax.grad(xla, (0, 1)))(x, k)):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(jnp.abs(want).max()))
        r1 = lambda f: jax.jit(jax.grad(lambda k: jnp.sum(jax.grad(f)(x, k) ** 2)))(k)  # noqa: E731
        want = r1(xla)
        np.testing.assert_allclose(r1(ours), want, rtol=1e-4, atol=1e-4 * float(jnp.abs(want).max()))
