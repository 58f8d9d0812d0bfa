"""vqjax: discrete image tokenizers (vector quantizers, ViT-VQGAN, VQGAN) and MaskGIT in JAX."""

__version__ = "0.1.0"
