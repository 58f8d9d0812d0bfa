"""A Flax linen wrapper so a model can hold any quantizer by name.

    class Tokenizer(nn.Module):
        @nn.compact
        def __call__(self, z, train=False):
            z_q, out = QuantizerModule("vq", {"codebook_size": 1024})(z, train=train)

The quantizer's params live in "params" (under this module's scope, key "quantizer"); its state lives
in the `QUANTIZER_STATE` collection. Training steps call
`model.apply(variables, x, train=True, rngs={"quantizer": rng}, mutable=[QUANTIZER_STATE])`.
This module is the only place the quantizers touch Flax; `vqjax.quantizers` itself is pure JAX.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from vqjax.quantizers.base import Quantizer, QuantizerOutput, build

QUANTIZER_STATE = "quantizer_state"
RNG_STREAM = "quantizer"


def _has_arrays(tree) -> bool:
    return len(jax.tree_util.tree_leaves(tree)) > 0


class QuantizerModule(nn.Module):
    """Holds the quantizer `quantizer` (a name or a built Quantizer) with `options`."""

    quantizer: str | Quantizer
    options: Any = None  # a dict (or tuple of pairs) of options when `quantizer` is a name

    def built(self) -> Quantizer:
        if isinstance(self.quantizer, Quantizer):
            return self.quantizer
        return build(self.quantizer, **dict(self.options or {}))

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = False) -> tuple[jax.Array, QuantizerOutput]:
        q = self.built()
        # params and state must come from one `q.init` call (e.g. a codebook and its EMA copy).
        # Flax also calls the param initializer abstractly (eval_shape) to validate shapes on
        # apply, so only the real init at `model.init` time is cached for the state initializer.
        init_cache: dict = {}

        def init_params(rng):
            variables = q.init(rng, z)
            if self.is_initializing():
                init_cache.update(variables)
            return variables["params"]

        def init_state():
            if not init_cache:
                init_cache.update(q.init(self.make_rng("params"), z))
            return init_cache["state"]

        params = self.param("quantizer", init_params)
        state = self.variable(QUANTIZER_STATE, "quantizer", init_state)
        rng = self.make_rng(RNG_STREAM) if self.has_rng(RNG_STREAM) else None
        if rng is None and self.is_initializing() and self.has_rng("params"):
            rng = self.make_rng("params")
        variables = {"params": params, "state": state.value}
        z_q, out = q.apply(variables, z, rng=rng, train=train)
        if train and not self.is_initializing() and _has_arrays(out.state):
            if not self.is_mutable_collection(QUANTIZER_STATE):
                raise ValueError(
                    f"{q.name}: train=True updates the quantizer state; call "
                    f"model.apply(..., mutable=[{QUANTIZER_STATE!r}]) to receive it"
                )
            state.value = out.state
        return z_q, out

    def decode(self, indices: jax.Array) -> jax.Array:
        """Code vectors for `indices` (call through `model.apply(..., method=...)`)."""
        q = self.built()
        params = self.get_variable("params", "quantizer")
        state = self.get_variable(QUANTIZER_STATE, "quantizer")
        return q.decode({"params": params, "state": state}, indices)
