"""k-means with k-means++ seeding, as a pure jittable function (used to initialise codebooks).

Runs on the whole (global) batch inside `jit`: on sharded inputs every device sees the same centers.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from vqjax.quantizers.distances import l2_normalize, nearest_code

Array = jax.Array


def kmeans_plus_plus(
    rng: Array, x: Array, num_centers: int, *, cosine: bool = False, local_trials: int | None = None
) -> Array:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007; scikit-learn's default): each new
    center is the best of `local_trials` (2 + ln K) candidates drawn with probability proportional
    to the squared distance to the nearest center chosen so far. x [N, D] -> [K, D]."""
    x = x.astype(jnp.float32)
    num_points = x.shape[0]
    trials = local_trials or 2 + int(math.log(num_centers))
    rng, first_rng = jax.random.split(rng)
    first = x[jax.random.randint(first_rng, (), 0, num_points)]
    centers = jnp.zeros((num_centers, x.shape[1]), jnp.float32).at[0].set(first)
    x_sq = jnp.sum(x * x, axis=-1)

    def sq_dist_to(points):  # [T, D] -> [T, N]
        if cosine:
            return jnp.maximum(2.0 - 2.0 * points @ x.T, 0.0)
        return jnp.maximum(jnp.sum(points * points, -1)[:, None] - 2.0 * points @ x.T + x_sq, 0.0)

    def add_center(i, carry):
        centers, min_sq_dist, rng = carry
        rng, pick_rng = jax.random.split(rng)
        # Sample proportional to D^2; if every point already is a center, fall back to uniform.
        total = jnp.sum(min_sq_dist)
        logits = jnp.where(total > 0, jnp.log(jnp.maximum(min_sq_dist, 1e-30)), 0.0)
        logits = jnp.where((total > 0) & (min_sq_dist <= 0), -jnp.inf, logits)
        candidates = jax.random.categorical(pick_rng, logits, shape=(trials,))  # [T]
        new_min = jnp.minimum(min_sq_dist[None, :], sq_dist_to(x[candidates]))  # [T, N]
        best = jnp.argmin(jnp.sum(new_min, axis=-1))
        return centers.at[i].set(x[candidates[best]]), new_min[best], rng

    carry = (centers, sq_dist_to(first[None])[0], rng)
    centers, _, _ = jax.lax.fori_loop(1, num_centers, add_center, carry)
    return centers


def lloyd(
    x: Array, centers: Array, iters: int, *, cosine: bool = False, chunk_size: int | None = None
) -> tuple[Array, Array]:
    """`iters` Lloyd iterations from `centers`. Empty clusters keep their center.
    Returns (centers [K, D], counts [K] of the final assignment)."""
    x = x.astype(jnp.float32)
    num_centers = centers.shape[0]

    def assign_counts(centers):
        idx = nearest_code(x, centers, cosine=cosine, chunk_size=chunk_size)
        counts = jnp.zeros((num_centers,), jnp.float32).at[idx].add(1.0)
        sums = jnp.zeros_like(centers).at[idx].add(x)
        return counts, sums

    def step(_, centers):
        counts, sums = assign_counts(centers)
        means = sums / jnp.maximum(counts, 1.0)[:, None]
        if cosine:
            means = l2_normalize(means)
        return jnp.where(counts[:, None] > 0, means, centers)

    centers = jax.lax.fori_loop(0, iters, step, centers)
    counts, _ = assign_counts(centers)
    return centers, counts


def kmeans(
    rng: Array,
    x: Array,
    num_centers: int,
    iters: int = 10,
    *,
    cosine: bool = False,
    chunk_size: int | None = None,
) -> tuple[Array, Array]:
    """k-means++ seeding followed by `iters` Lloyd iterations: (centers [K, D], counts [K])."""
    x = jax.lax.stop_gradient(x).astype(jnp.float32)
    if cosine:
        x = l2_normalize(x)
    centers = kmeans_plus_plus(rng, x, num_centers, cosine=cosine)
    return lloyd(x, centers, iters, cosine=cosine, chunk_size=chunk_size)
