"""Flax linen models: tokenizers, discriminators and generators, one file per model."""

from vqjax.models.discriminator import PatchGANDiscriminator, StyleGANDiscriminator  # noqa: F401
