"""The conv sibling of the README's main job keeps its codebook in use (test_codebook_usage.py says
how; a file of its own so that it runs on another worker than the ViT-VQGAN preset)."""

import pytest

from tests.test_codebook_usage import check_tiny_preset


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


@pytest.mark.slow
def test_tiny_vqgan_keeps_its_codebook_in_use(data_dir, tmp_path):
    check_tiny_preset("vqgan", data_dir, tmp_path)
