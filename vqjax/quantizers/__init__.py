"""Pure-functional vector quantizers.

    from vqjax import quantizers
    q = quantizers.build("vq", codebook_size=1024, dim=256)
    variables = q.init(rng, z)
    z_q, out = q.apply(variables, z, rng=rng, train=True)

See `base.py` for the contract every quantizer follows and `quantizers.available()` for the names.
"""

from vqjax.quantizers.base import (
    Quantizer,
    QuantizerOutput,
    available,
    build,
    register,
)

# Importing a family module registers its quantizers by name.
from vqjax.quantizers import composite, fsq, vq  # noqa: E402,F401
from vqjax.quantizers.fsq import FSQ  # noqa: E402,F401
from vqjax.quantizers import bsq, lfq, simvq  # noqa: E402,F401
from vqjax.quantizers.bsq import BSQ  # noqa: E402,F401
from vqjax.quantizers.lfq import LFQ  # noqa: E402,F401
from vqjax.quantizers.simvq import SimVQ  # noqa: E402,F401
from vqjax.quantizers.vq import VectorQuantizer  # noqa: E402,F401
from vqjax.quantizers.composite import GroupedQuantizer, ResidualQuantizer  # noqa: E402,F401

__all__ = ["Quantizer", "QuantizerOutput", "available", "build", "register"]
