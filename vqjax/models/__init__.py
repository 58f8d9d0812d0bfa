"""Flax linen models: tokenizers, discriminators and generators, one file per model."""

from vqjax.models.discriminator import PatchGANDiscriminator, StyleGANDiscriminator  # noqa: F401
from vqjax.models import vit_vqgan, vqgan  # noqa: F401,E402
from vqjax.models.vit_vqgan import ViTVQGAN  # noqa: F401,E402
from vqjax.models.vqgan import VQGAN  # noqa: E402,F401
from vqjax.models import maskgit  # noqa: E402,F401
from vqjax.models import taming_vqgan  # noqa: E402,F401
from vqjax.models.taming_vqgan import TamingVQGAN  # noqa: E402,F401
