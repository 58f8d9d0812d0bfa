"""vqjax: discrete image tokenizers (vector quantizers, ViT-VQGAN, VQGAN) and MaskGIT in JAX.

    import vqjax
    tokenizer = vqjax.load("runs/vqgan")        # any run: a Tokenizer or MaskGIT handle
"""

__version__ = "0.1.0"


def load(workdir, step=None, use_ema=True, *, mesh=None):
    """Restore the run in `workdir` for inference: a `vqjax.inference.Tokenizer` or
    `vqjax.inference.MaskGIT` handle (see `vqjax.inference`)."""
    from vqjax.inference import load as _load

    return _load(workdir, step, use_ema, mesh=mesh)
