"""Configs saved by older code (config.json with 0 / -1 for "not set") still resume and build
the same models now that the presets declare those fields as typed placeholders (None)."""

import jax
import jax.numpy as jnp

from vqjax.train import loop, validate
from vqjax.train.config import load_config, optional_field
from vqjax.train.tokenizer import build_tokenizer

import ml_collections


def _legacy(config_dict: dict, **model) -> dict:
    """The config as older code saved it: the placeholders' legacy "not set" values."""
    return {**config_dict, "model": {**config_dict["model"], **model}}


def test_old_config_json_resumes_without_changes():
    for preset, legacy in (("configs/vitvqgan.py:tiny", {"latent_dim": 0}),
                           ("configs/vqgan.py:tiny", {"embedding_dim": 0}),
                           ("configs/maskgit.py:tiny", {"num_classes": -1})):
        current = loop.config_to_dict(load_config(preset))
        assert all(current["model"][k] is None for k in legacy), preset
        saved = _legacy(current, **legacy)
        assert validate.resume_changes(saved, current) == ([], [], []), preset
        assert validate.check_resume_config(saved, current, workdir="w", step=10) == []
    # A value that is set is still a change of the model.
    current = loop.config_to_dict(load_config("configs/vitvqgan.py:tiny"))
    _, refused, _ = validate.resume_changes(_legacy(current, latent_dim=16), current)
    assert refused == ["model.latent_dim: 16 -> None"]


def test_optional_field_reads_legacy_values_as_unset():
    config = ml_collections.ConfigDict({"model": {"latent_dim": 0, "num_classes": -1,
                                                  "embedding_dim": 32}})
    assert optional_field(config, "model.latent_dim") is None
    assert optional_field(config, "model.num_classes") is None
    assert optional_field(config, "model.embedding_dim") == 32
    assert optional_field(config, "model.absent") is None
    assert optional_field({"model": {"num_classes": 0}}, "model.num_classes") == 0


def test_legacy_saved_config_builds_the_same_tokenizer():
    for preset, legacy in (("configs/vitvqgan.py:tiny", {"latent_dim": 0}),
                           ("configs/vqgan.py:tiny", {"embedding_dim": 0})):
        current = load_config(preset)
        saved = ml_collections.ConfigDict(_legacy(loop.config_to_dict(current), **legacy))
        images = jnp.zeros((1, 32, 32, 3))
        shapes = [jax.tree.map(lambda x: x.shape, jax.eval_shape(
            lambda: build_tokenizer(c).init(jax.random.key(0), images)))
            for c in (current, saved)]
        assert shapes[0] == shapes[1], preset
