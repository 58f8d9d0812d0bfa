"""Mask schedules: the fraction of tokens still masked as decoding (or a training draw) progresses.

A schedule maps `ratio` in [0, 1] (the fraction of the decoding done) to the mask ratio in [0, 1]:
1 at ratio 0 (everything masked) down to 0 at ratio 1 (everything revealed), non-increasing. As in
MaskGIT's `libml/mask_schedule.py`, the same functions give the training mask ratio when evaluated
at u ~ U(0, 1) (`sample_mask_ratio`).

    cosine       cos(pi/2 * r)                          MaskGIT's default (train and decode)
    linear       1 - r                                  (MaskGIT's "uniform")
    square       1 - r^2                                ("pow2")
    cubic        1 - r^3                                ("pow3")
    sqrt         1 - sqrt(r)                            ("pow0.5")
    powX         1 - r^X                                any exponent X > 0
    arccos       arccos(r) / (pi/2)                     MaskBit's default (train and decode)
    log          -log2(r) / log2(n)                     needs n, the number of tokens (<= 1)
    exp          1 - n^-(1 - r)                         needs n; 1 - 1/n at r = 0 (MaskGIT's)

Every function is pure and jnp-traceable in `ratio` and `total_unknown` (scalars or arrays, which
broadcast); `method` is a static string.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

Array = jax.Array

ALIASES = {"uniform": "linear", "pow1": "linear", "pow2": "square", "pow3": "cubic",
           "pow0.5": "sqrt"}
METHODS = ("cosine", "linear", "square", "cubic", "sqrt", "arccos", "log", "exp")  # and "pow<X>"


def check_method(method: str) -> str:
    """The canonical name of `method`; ValueError listing the valid names otherwise."""
    method = ALIASES.get(method, method)
    if method in METHODS:
        return method
    if isinstance(method, str) and method.startswith("pow"):
        try:
            exponent = float(method[3:])
        except ValueError:
            exponent = -1.0
        if exponent > 0 and math.isfinite(exponent):
            return method
    raise ValueError(
        f"unknown mask schedule {method!r}; choose one of {METHODS + tuple(ALIASES)} or "
        "'pow<X>' with X > 0"
    )


def schedule(ratio, total_unknown=None, method: str = "cosine") -> Array:
    """Mask ratio in [0, 1] at progress `ratio` in [0, 1] (float32, broadcast shape).

    `total_unknown` (the number of tokens, >= 2) is needed by "log" and "exp" only.
    """
    method = check_method(method)
    r = jnp.clip(jnp.asarray(ratio, jnp.float32), 0.0, 1.0)
    if method == "cosine":
        # cos(pi/2) is 6e-17, not 0: force the end point.
        mask_ratio = jnp.where(r >= 1.0, 0.0, jnp.cos(0.5 * jnp.pi * r))
    elif method == "linear":
        mask_ratio = 1.0 - r
    elif method == "square":
        mask_ratio = 1.0 - r**2
    elif method == "cubic":
        mask_ratio = 1.0 - r**3
    elif method == "sqrt":
        mask_ratio = 1.0 - jnp.sqrt(r)
    elif method == "arccos":
        mask_ratio = jnp.arccos(r) / (0.5 * jnp.pi)
    elif method.startswith("pow"):
        mask_ratio = 1.0 - r ** float(method[3:])
    else:
        if total_unknown is None:
            raise ValueError(f"mask schedule {method!r} needs total_unknown (the number of tokens)")
        log_n = jnp.log2(jnp.maximum(jnp.asarray(total_unknown, jnp.float32), 2.0))
        if method == "log":
            safe_r = jnp.maximum(r, 1e-30)
            mask_ratio = jnp.where(r > 0, -jnp.log2(safe_r) / log_n, 1.0)
        else:  # exp
            mask_ratio = 1.0 - jnp.exp2(-log_n * (1.0 - r))
    return jnp.clip(mask_ratio, 0.0, 1.0).astype(jnp.float32)


def cosine(ratio) -> Array:
    return schedule(ratio, method="cosine")


def linear(ratio) -> Array:
    return schedule(ratio, method="linear")


def square(ratio) -> Array:
    return schedule(ratio, method="square")


def cubic(ratio) -> Array:
    return schedule(ratio, method="cubic")


def sqrt(ratio) -> Array:
    return schedule(ratio, method="sqrt")


def arccos(ratio) -> Array:
    return schedule(ratio, method="arccos")


def log(ratio, total_unknown) -> Array:
    return schedule(ratio, total_unknown, method="log")


def exp(ratio, total_unknown) -> Array:
    return schedule(ratio, total_unknown, method="exp")


def sample_mask_ratio(rng: Array, shape, method: str = "cosine", total_unknown=None) -> Array:
    """Training mask ratios: schedule(u) with u ~ U(0, 1) (cosine: cos(pi/2 u)), float32 `shape`."""
    u = jax.random.uniform(rng, shape, jnp.float32)
    return schedule(u, total_unknown, method)


def num_masked_after_step(step, num_steps: int, total_unknown, method: str = "cosine") -> Array:
    """Tokens masked after decoding step `step` (0-based) out of `num_steps`, before the
    at-least-one-per-step rule: floor(total_unknown * schedule((step + 1) / num_steps)), int32."""
    ratio = (jnp.asarray(step, jnp.float32) + 1.0) / num_steps
    total = jnp.asarray(total_unknown, jnp.float32)
    return jnp.floor(total * schedule(ratio, total_unknown, method)).astype(jnp.int32)
