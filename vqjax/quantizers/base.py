"""The quantizer contract shared by every quantizer in `vqjax.quantizers`.

A quantizer is a frozen, hashable dataclass holding only hyper-parameters. All arrays live in an
explicit `variables` dict, so every method is a pure function that `jit`, `grad` and `vmap` accept:

    q = quantizers.build("fsq", levels=(8, 5, 5, 5))
    variables = q.init(rng, z)                              # {"params": ..., "state": ...}
    z_q, out = q.apply(variables, z, rng=rng, train=True)   # out: QuantizerOutput
    codes = q.decode(variables, out.indices)                # == z_q (forward value)

`params` are trained by gradient; `state` (EMA statistics, usage counters, init flags, frozen bases)
is returned updated in `out.state` when `train=True` and unchanged otherwise.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
Variables = dict[str, Any]

_REGISTRY: dict[str, type["Quantizer"]] = {}


class QuantizerOutput(NamedTuple):
    """Everything a quantizer returns besides the quantized vectors (a pytree)."""

    indices: Array  # int32, z.shape[:-1] (+ a trailing axis for multi-index quantizers)
    loss: Array  # float32 scalar: auxiliary losses, already weighted
    metrics: dict[str, Array]  # float32 scalars: usage, perplexity (+ dead_codes, ...)
    state: Any  # the new state (== the old one when train=False)


def register(name: str):
    """Class decorator: make a quantizer buildable by `name`."""

    def wrap(cls):
        if name in _REGISTRY:
            raise ValueError(f"quantizer name {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def available() -> tuple[str, ...]:
    """Names accepted by `build`."""
    return tuple(sorted(_REGISTRY))


def build(name: str, **options) -> "Quantizer":
    """Build a quantizer by name: `build("vq", codebook_size=1024, dim=256)`.

    Unknown names and unknown options raise a ValueError that names them and lists what is valid.
    """
    if isinstance(name, Quantizer):
        if options:
            raise ValueError("build() got a Quantizer instance and options; pass one or the other")
        return name
    if name not in _REGISTRY:
        raise ValueError(f"unknown quantizer {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name].from_options(**options)


def option_names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.init)


# Why a quantizer cannot honour an option another quantizer has (shown with the error).
_CANNOT_HONOUR = {
    "entropy_loss_weight": "its codebook is implicit (no distances to codes, so no code "
                           "probabilities to take an entropy of)",
    "codebook_diversity_loss_weight": "its codebook is implicit (no distances to codes, so no code "
                                      "probabilities to take an entropy of)",
    "restart": "it has no per-code vectors that a restart could move",
    "threshold_ema_dead_code": "it has no per-code vectors that a restart could move",
    "kmeans_init": "it has no per-code vectors that k-means could place",
}


def check_options(cls, options: dict, extra: tuple[str, ...] = ()) -> None:
    valid = set(option_names(cls)) | set(extra)
    unknown = sorted(set(options) - valid)
    if unknown:
        # An option of another quantizer: say whose, and why this one cannot honour it.
        notes = []
        for option in unknown:
            owners = [n for n, c in sorted(_REGISTRY.items())
                      if c is not cls and option in option_names(c)]
            if owners:
                why = _CANNOT_HONOUR.get(option)
                notes.append(f"{option!r} is an option of {', '.join(owners)}, not of "
                             f"{cls.name!r}" + (f": {why}" if why else ""))
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for quantizer {cls.name!r}; "
            + "".join(f"{note}; " for note in notes)
            + f"valid options: {', '.join(sorted(valid))}"
        )


def _as_hashable(value):
    if isinstance(value, list):
        return tuple(_as_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _as_hashable(v)) for k, v in value.items()))
    return value


@dataclasses.dataclass(frozen=True)
class Quantizer:
    """Base class. Subclasses are frozen dataclasses whose fields are the options."""

    name: ClassVar[str] = "quantizer"
    # Number of trailing index axes `out.indices` has beyond z.shape[:-1] (1 for rvq/grouped).
    index_axes: ClassVar[int] = 0

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            hashable = _as_hashable(value)
            if hashable is not value:
                object.__setattr__(self, field.name, hashable)
        self.validate()

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_options(cls, **options) -> "Quantizer":
        check_options(cls, options)
        return cls(**options)

    def validate(self) -> None:
        """Check option values; raise ValueError naming the option. Called at build time."""

    # -- the contract -----------------------------------------------------------------------
    # Every quantizer has a `codebook_size` (a field or a property): the number of distinct codes
    # one index can take.

    def input_dim(self, z_dim: int) -> int:
        """The latent dimension this quantizer accepts (checks `dim` when given)."""
        dim = getattr(self, "dim", None)
        if dim is not None and dim != z_dim:
            raise ValueError(
                f"{self.name}: option dim={dim} but z has last axis {z_dim}; they must match"
            )
        return z_dim

    def init(self, rng: Array, z: Array) -> Variables:
        """Create {"params", "state"} for inputs shaped like `z` ([..., dim])."""
        z = check_latents(self.name, z)
        dim = self.input_dim(z.shape[-1])
        params, state = self.init_variables(rng, dim, z)
        return {"params": params, "state": state}

    def init_variables(self, rng: Array, dim: int, z: Array) -> tuple[Any, Any]:
        return {}, {}

    def apply(
        self, variables: Variables, z: Array, *, rng: Array | None = None, train: bool = False
    ) -> tuple[Array, QuantizerOutput]:
        """Quantize `z` [..., dim]. Returns (z_q with z's shape and dtype, QuantizerOutput)."""
        z = check_latents(self.name, z)
        self.input_dim(z.shape[-1])
        z_q, out = self.quantize(variables, z, rng=rng, train=train)
        if not train:
            out = out._replace(state=variables.get("state", {}))
        return z_q.astype(z.dtype), out

    def quantize(self, variables, z, *, rng, train) -> tuple[Array, QuantizerOutput]:
        raise NotImplementedError

    def decode(self, variables: Variables, indices: Array) -> Array:
        """Code vectors (float32) for `indices`; equals the forward value of `apply`'s z_q."""
        raise NotImplementedError

    def __call__(self, variables, z, *, rng=None, train=False):
        return self.apply(variables, z, rng=rng, train=train)


def check_latents(name: str, z) -> Array:
    if not hasattr(z, "dtype") or not hasattr(z, "shape"):
        z = jnp.asarray(z)
    if not jnp.issubdtype(z.dtype, jnp.floating):
        raise TypeError(f"{name}: z must be a floating-point array, got dtype {z.dtype}")
    if z.ndim < 1 or z.shape[-1] == 0:
        raise ValueError(f"{name}: z must have shape [..., dim] with dim > 0, got {z.shape}")
    return z


def require_rng(name: str, rng, why: str) -> Array:
    if rng is None:
        raise ValueError(f"{name}: {why} needs randomness; pass rng=jax.random.key(...) to apply()")
    return rng


def flatten(z: Array) -> tuple[Array, tuple[int, ...]]:
    """[..., D] -> ([N, D], leading shape)."""
    return z.reshape(-1, z.shape[-1]), z.shape[:-1]
