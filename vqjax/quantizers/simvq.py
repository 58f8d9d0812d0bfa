"""SimVQ (Zhu et al. 2024, "Addressing Representation Collapse in Vector Quantized Models with One
Linear Layer").

The codebook is a frozen random basis C [codebook_size, codebook_dim] times a learned linear map
W [codebook_dim, dim] plus a learned bias b [dim]: codes = C W + b (SimVQ's reference code,
youngsheen/SimVQ `taming/modules/vqvae/quantize.py`, maps the basis with `nn.Linear(e_dim, e_dim)`,
which has a bias; `codebook_bias=False` drops it). Gradients reach only W and b, so every step
moves the whole codebook (an affine map of the latent space) instead of the few codes that were
selected, which keeps all codes in use. Nearest-neighbour search is chunked
(`distances.nearest_code`).

Variables: params {"codebook_map": W, "codebook_bias": b (only with codebook_bias=True)};
state {"basis": C (frozen, never receives gradients), "code_usage": EMA of per-code assignment
counts, "usage_steps": number of EMA updates}.

Loss (VQ-VAE form, SimVQ's beta = 0.25):
mean((sg(z) - q)^2) + commitment_weight * mean((z - sg(q))^2), means over all elements. (SimVQ's
reference code, in its default `legacy` mode, puts beta on the codebook term instead; the VQ-VAE
form is the one its paper writes.)
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from vqjax.quantizers import metrics as metrics_lib
from vqjax.quantizers.base import Quantizer, QuantizerOutput, flatten, register
from vqjax.quantizers.distances import nearest_code
from vqjax.quantizers.estimators import pin_forward, rotation_trick

sg = jax.lax.stop_gradient
HIGHEST = jax.lax.Precision.HIGHEST


def _positive_int(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= 1


@register("simvq")
@dataclasses.dataclass(frozen=True)
class SimVQ(Quantizer):
    """Options: `codebook_size` (required); `dim` (checked against z; None: taken from z at init);
    `codebook_dim` (width of the frozen basis; None: dim); `codebook_bias` (True: the map is affine,
    C W + b, as the reference's nn.Linear, b starting at 0; the config presets set True. The class
    default False is the linear map of runs saved before the option existed, whose saved configs
    lack it, so they restore unchanged); `commitment_weight` (0.25);
    `rotation_trick` (False: straight-through; True: `estimators.rotation_trick`); `chunk_size`
    (codes per nearest-neighbour chunk; None: `distances.DEFAULT_CHUNK_SIZE`); `usage_decay` (0.99,
    of the per-code usage EMA); `dead_code_threshold` (0.01: codes whose bias-corrected EMA count
    per batch is below it count as dead in `metrics["dead_codes"]`)."""

    codebook_size: int | None = None
    dim: int | None = None
    codebook_dim: int | None = None
    codebook_bias: bool = False
    commitment_weight: float = 0.25
    rotation_trick: bool = False
    chunk_size: int | None = None
    usage_decay: float = 0.99
    dead_code_threshold: float = 0.01

    def validate(self):
        if self.codebook_size is None:
            raise ValueError("simvq: codebook_size is required (the number of codes)")
        if not _positive_int(self.codebook_size):
            raise ValueError(
                f"simvq: codebook_size must be an integer >= 1, got {self.codebook_size!r}"
            )
        for option in ("dim", "codebook_dim", "chunk_size"):
            value = getattr(self, option)
            if value is not None and not _positive_int(value):
                raise ValueError(f"simvq: {option} must be None or an integer >= 1, got {value!r}")
        w = self.commitment_weight
        if not (isinstance(w, (int, float, np.number)) and math.isfinite(w) and w >= 0):
            raise ValueError(f"simvq: commitment_weight must be a finite number >= 0, got {w!r}")
        if not isinstance(self.codebook_bias, (bool, np.bool_)):
            raise ValueError(
                f"simvq: codebook_bias must be True or False, got {self.codebook_bias!r}"
            )
        if not isinstance(self.rotation_trick, (bool, np.bool_)):
            raise ValueError(
                f"simvq: rotation_trick must be True or False, got {self.rotation_trick!r}"
            )
        d = self.usage_decay
        if not (isinstance(d, (int, float, np.number)) and 0 <= d < 1):
            raise ValueError(f"simvq: usage_decay must be in [0, 1), got {d!r}")
        t = self.dead_code_threshold
        if not (isinstance(t, (int, float, np.number)) and math.isfinite(t) and t >= 0):
            raise ValueError(f"simvq: dead_code_threshold must be a finite number >= 0, got {t!r}")

    # -- variables ---------------------------------------------------------------------------------
    def init_variables(self, rng, dim, z):
        codebook_dim = self.codebook_dim or dim
        basis_rng, map_rng = jax.random.split(rng)
        # SimVQ's basis N(0, 1/codebook_dim); W lecun-normal: code entries start with variance
        # 1/codebook_dim (|c| ~ 1 when codebook_dim == dim; SimVQ's torch init: a third of that).
        scale = codebook_dim**-0.5
        basis_shape = (self.codebook_size, codebook_dim)
        basis = jax.random.normal(basis_rng, basis_shape, jnp.float32) * scale  # [K, codebook_dim]
        codebook_map = jax.random.normal(map_rng, (codebook_dim, dim), jnp.float32) * scale
        params = {"codebook_map": codebook_map}
        if self.codebook_bias:
            params["codebook_bias"] = jnp.zeros((dim,), jnp.float32)
        state = {
            "basis": basis,
            "code_usage": jnp.zeros((self.codebook_size,), jnp.float32),
            "usage_steps": jnp.zeros((), jnp.float32),
        }
        return params, state

    def codebook(self, variables) -> jax.Array:
        """The effective codebook C W (+ b): float32 [codebook_size, dim] (differentiable in W and b
        only)."""
        basis = sg(variables["state"]["basis"]).astype(jnp.float32)
        codebook_map = variables["params"]["codebook_map"].astype(jnp.float32)
        codebook = jnp.dot(basis, codebook_map, precision=HIGHEST)
        if "codebook_bias" in variables["params"]:
            codebook = codebook + variables["params"]["codebook_bias"].astype(jnp.float32)
        return codebook

    def dead_codes(self, state) -> jax.Array:
        """Codes whose bias-corrected EMA usage is below `dead_code_threshold` (all, untrained)."""
        correction = 1.0 - jnp.power(jnp.float32(self.usage_decay), state["usage_steps"])
        usage = state["code_usage"] / jnp.maximum(correction, 1e-12)
        return metrics_lib.dead_code_count(usage, self.dead_code_threshold)

    # -- the contract ------------------------------------------------------------------------------
    def quantize(self, variables, z, *, rng, train):
        state = variables["state"]
        codebook = self.codebook(variables)  # [K, D]
        if codebook.shape[-1] != z.shape[-1]:
            raise ValueError(
                f"simvq: z has last axis {z.shape[-1]} but the variables were built for dim "
                f"{codebook.shape[-1]}"
            )
        z32, leading = flatten(z.astype(jnp.float32))  # [N, D]
        indices = nearest_code(z32, codebook, chunk_size=self.chunk_size)  # [N]
        q = jnp.take(codebook, indices, axis=0)  # [N, D]; gradient reaches W

        codebook_loss = jnp.mean(jnp.square(sg(z32) - q))
        commitment_loss = jnp.mean(jnp.square(z32 - sg(q)))
        loss = codebook_loss + self.commitment_weight * commitment_loss
        estimate = rotation_trick(z32, sg(q)) if self.rotation_trick else z32
        z_q = pin_forward(estimate, q).reshape(*leading, -1)

        counts = metrics_lib.code_counts(indices, self.codebook_size)
        if train:
            new_state = dict(
                state,
                code_usage=(
                    self.usage_decay * state["code_usage"] + (1.0 - self.usage_decay) * counts
                ),
                usage_steps=state["usage_steps"] + 1.0,
            )
        else:
            new_state = state
        metrics = {
            "usage": metrics_lib.usage_from_counts(counts),
            "perplexity": metrics_lib.perplexity_from_counts(counts),
            "dead_codes": self.dead_codes(new_state),
            "codebook_loss": codebook_loss,
            "commitment_loss": commitment_loss,
        }
        out = QuantizerOutput(
            indices.reshape(leading), loss.astype(jnp.float32), metrics, new_state
        )
        return z_q, out

    def decode(self, variables, indices):
        return jnp.take(self.codebook(variables), jnp.asarray(indices).astype(jnp.int32), axis=0)
