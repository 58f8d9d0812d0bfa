"""Gradient estimators: how gradients pass through the non-differentiable code assignment.

Both return a value equal to the code `q` in the forward pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array
sg = jax.lax.stop_gradient


def pin_forward(estimate: Array, value: Array) -> Array:
    """Forward: exactly `value`, bit for bit; backward: `estimate`'s gradient.

    (`estimate - sg(estimate)` is exactly 0 in the forward pass, whereas the textbook
    `z + sg(q - z)` rounds, leaving ~40% of entries an ulp away from q, so decode(indices) would
    not reproduce z_q exactly.)
    """
    return sg(value) + (estimate - sg(estimate))


def straight_through(z: Array, q: Array) -> Array:
    """Forward: q. Backward: identity to z (van den Oord et al. 2017)."""
    return pin_forward(z, q)


def rotation_trick(e: Array, q: Array, eps: float = 1e-6) -> Array:
    """Forward: q. Backward: through the rotation+rescale that maps e onto q (Fifty et al. 2024).

    q~ = sg[|q|/|e|] * (e - 2 (e.w) w + 2 (e.u) q^),  u = sg[e/|e|], q^ = sg[q/|q|],
    w = sg[(u + q^)/|u + q^|]. Vectors along the last axis; computed in float32.
    """
    e32, q32 = e.astype(jnp.float32), q.astype(jnp.float32)
    e_norm = jnp.linalg.norm(e32, axis=-1, keepdims=True)
    q_norm = jnp.linalg.norm(q32, axis=-1, keepdims=True)
    u = sg(e32 / jnp.maximum(e_norm, eps))
    q_hat = sg(q32 / jnp.maximum(q_norm, eps))
    w = u + q_hat
    w = sg(w / jnp.maximum(jnp.linalg.norm(w, axis=-1, keepdims=True), eps))
    scale = sg(q_norm / jnp.maximum(e_norm, eps))
    dot = lambda a, b: jnp.sum(a * b, axis=-1, keepdims=True)
    rotated = e32 - 2.0 * dot(e32, w) * w + 2.0 * dot(e32, u) * q_hat
    # The rotation maps e onto q up to rounding; pin the forward value to q exactly.
    return pin_forward(scale * rotated, q32).astype(q.dtype)
