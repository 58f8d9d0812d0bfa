"""Quantizers built from other quantizers: residual (`rvq`) and grouped (`grouped`).

Both take an inner quantizer by name (`inner="vq"`, the default) plus the inner quantizer's options,
or a built one (`quantizer=...`), and run it several times with `lax.scan`, so the inner quantizer is
traced once whatever the number of depths or groups and its `lax.cond` (k-means init) stays a cond.

    build("rvq", num_quantizers=8, codebook_size=1024, dim=256)        # RQ-VAE / SoundStream
    build("grouped", groups=4, inner="fsq", levels=(8, 5, 5, 5))          # product quantization

Separate sub-quantizers have their variables stacked on a leading axis (one slice per depth/group);
a shared codebook (`rvq`, `shared_codebook=True`) has one set, and its state is threaded through the
depths. Indices get a trailing axis: [..., num_quantizers] or [..., groups].
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from vqjax.quantizers.base import (
    Quantizer,
    QuantizerOutput,
    build,
    check_options,
    option_names,
    register,
    require_rng,
)

sg = jax.lax.stop_gradient


def _select_tree(keep, new, old):
    return jax.tree.map(lambda n, o: jnp.where(keep, n, o), new, old)


def _stack_metrics(metrics: dict, prefix: str) -> dict:
    """Per-part metrics [P] -> averaged scalars (dead codes summed) + per-part usage."""
    out = {}
    for key, values in metrics.items():
        out[key] = jnp.sum(values) if key == "dead_codes" else jnp.mean(values)
    for i in range(metrics["usage"].shape[0]):
        out[f"usage_{prefix}{i}"] = metrics["usage"][i]
    return out


@dataclasses.dataclass(frozen=True)
class _Composite(Quantizer):
    """Shared machinery: option splitting and per-part variables."""

    own_options: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_options(cls, **options):
        own = {k: options.pop(k) for k in list(options) if k in option_names(cls)}
        inner_name = options.pop("inner", "vq")
        if own.get("quantizer") is None:
            own["quantizer"] = build(inner_name, **options)
        elif options:
            check_options(cls, options, extra=("inner",))
            raise ValueError(f"{cls.name}: pass inner options or quantizer=, not both")
        return cls(**own)

    def validate(self):
        if not isinstance(self.quantizer, Quantizer):
            raise ValueError(f"{self.name}: quantizer must be a built Quantizer, got {self.quantizer!r}")

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def index_axes(self) -> int:  # type: ignore[override]
        return self.quantizer.index_axes + 1

    def _init_stacked(self, rng, z, count):
        variables = [self.quantizer.init(r, z) for r in jax.random.split(rng, count)]
        return jax.tree.map(lambda *xs: jnp.stack(xs), *variables)


@register("rvq")
@dataclasses.dataclass(frozen=True)
class ResidualQuantizer(_Composite):
    """Residual quantization (RQ-VAE, SoundStream): depth d quantizes what depths < d left over.

    Options: `num_quantizers`, `shared_codebook`, `quantize_dropout` (train with a random number of
    depths in [quantize_dropout_cutoff_index + 1, num_quantizers] per batch; dropped depths give
    index -1, contribute zero and leave their state unchanged), `inner`/`quantizer` + inner options.

    As in vector-quantize-pytorch, each depth's output carries its inner estimator's gradient and the
    residual passed on detaches the codes already chosen, so every depth's commitment loss reaches
    the encoder. `out.loss` sums the depths' losses.
    """

    num_quantizers: int = 4
    quantizer: Quantizer | None = None
    shared_codebook: bool = False
    quantize_dropout: bool = False
    quantize_dropout_cutoff_index: int = 0
    dim: int | None = None

    def validate(self):
        super().validate()
        if self.num_quantizers < 1:
            raise ValueError(f"rvq: num_quantizers must be >= 1, got {self.num_quantizers}")
        if not 0 <= self.quantize_dropout_cutoff_index < self.num_quantizers:
            raise ValueError(
                f"rvq: quantize_dropout_cutoff_index must be in [0, {self.num_quantizers}), got "
                f"{self.quantize_dropout_cutoff_index}"
            )

    def init_variables(self, rng, dim, z):
        if self.shared_codebook:
            v = self.quantizer.init(rng, z)
        else:
            v = self._init_stacked(rng, z, self.num_quantizers)
        return v["params"], v["state"]

    def quantize(self, variables, z, *, rng, train):
        params, state = variables["params"], variables["state"]
        depths = jnp.arange(self.num_quantizers)
        if train and self.quantize_dropout:
            rng = require_rng(self.name, rng, "quantize_dropout")
            rng, drop_rng = jax.random.split(rng)
            num_active = jax.random.randint(
                drop_rng, (), self.quantize_dropout_cutoff_index + 1, self.num_quantizers + 1
            )
        else:
            num_active = jnp.asarray(self.num_quantizers)
        rngs = (
            jax.random.split(rng, self.num_quantizers)
            if rng is not None
            else jnp.zeros((self.num_quantizers,), jnp.uint32)
        )
        have_rng = rng is not None
        z = z.astype(jnp.float32)

        def depth(carry, xs):
            residual, shared_state = carry
            depth_vars, depth_rng, d = xs
            active = d < num_active
            if self.shared_codebook:
                depth_vars = {"params": params, "state": shared_state}
            z_q, out = self.quantizer.apply(
                depth_vars, residual, rng=depth_rng if have_rng else None, train=train
            )
            z_q = jnp.where(active, z_q.astype(jnp.float32), 0.0)
            new_state = _select_tree(active, out.state, depth_vars["state"])
            if self.shared_codebook:
                shared_state, new_state = new_state, ()
            ys = (
                z_q,
                jnp.where(active, out.indices, -1),
                jnp.where(active, out.loss, 0.0),
                out.metrics,
                new_state,
            )
            return (residual - sg(z_q), shared_state), ys

        if self.shared_codebook:  # one set of variables, state threaded through the depths
            xs = (jnp.zeros(self.num_quantizers), rngs, depths)  # dummy per-depth leaf
            carry = (z, state)
        else:  # variables stacked on a leading depth axis
            xs = ({"params": params, "state": state}, rngs, depths)
            carry = (z, ())
        (_, shared_state), (z_qs, indices, losses, metrics, states) = jax.lax.scan(depth, carry, xs)
        z_q = jnp.sum(z_qs, axis=0)
        indices = jnp.moveaxis(indices, 0, -1).astype(jnp.int32)
        new_state = shared_state if self.shared_codebook else states
        metrics = _stack_metrics(metrics, prefix="q")
        metrics["active_quantizers"] = num_active.astype(jnp.float32)
        return z_q, QuantizerOutput(indices, jnp.sum(losses), metrics, new_state)

    def decode(self, variables, indices):
        indices = jnp.asarray(indices, jnp.int32)
        per_depth = jnp.moveaxis(indices, -1, 0)  # [Q, ...]

        def one(depth_vars, idx):
            codes = self.quantizer.decode(depth_vars, jnp.maximum(idx, 0))
            valid = idx >= 0
            if self.quantizer.index_axes:
                valid = jnp.all(valid, axis=tuple(range(-self.quantizer.index_axes, 0)))
            return jnp.where(valid[..., None], codes, 0.0)

        if self.shared_codebook:
            codes = jax.vmap(one, in_axes=(None, 0))(variables, per_depth)
        else:
            codes = jax.vmap(one)(variables, per_depth)
        return jnp.sum(codes, axis=0)


@register("grouped")
@dataclasses.dataclass(frozen=True)
class GroupedQuantizer(_Composite):
    """Split the channels into `groups` equal parts and quantize each with its own inner quantizer
    (product quantization; MGVQ/FQGAN-style multi-group codes). The inner quantizer sees
    dim // groups channels. `out.loss` is the mean over groups, which for per-element mean losses
    equals the loss of the ungrouped latent.

    Options: `groups`, `dim`, `inner`/`quantizer` + inner options (inner `dim` = dim // groups).
    """

    groups: int = 2
    quantizer: Quantizer | None = None
    dim: int | None = None

    def validate(self):
        super().validate()
        if self.groups < 1:
            raise ValueError(f"grouped: groups must be >= 1, got {self.groups}")
        if self.dim is not None and self.dim % self.groups:
            raise ValueError(f"grouped: dim={self.dim} is not divisible by groups={self.groups}")

    def input_dim(self, z_dim):
        super().input_dim(z_dim)
        if z_dim % self.groups:
            raise ValueError(
                f"grouped: z's last axis {z_dim} is not divisible by groups={self.groups}"
            )
        return z_dim

    def _split(self, z):
        parts = z.reshape(*z.shape[:-1], self.groups, z.shape[-1] // self.groups)
        return jnp.moveaxis(parts, -2, 0)  # [G, ..., D/G]

    def init_variables(self, rng, dim, z):
        v = self._init_stacked(rng, self._split(z)[0], self.groups)
        return v["params"], v["state"]

    def quantize(self, variables, z, *, rng, train):
        parts = self._split(z.astype(jnp.float32))
        have_rng = rng is not None
        rngs = jax.random.split(rng, self.groups) if have_rng else jnp.zeros((self.groups,))

        def group(_, xs):
            group_vars, part, group_rng = xs
            z_q, out = self.quantizer.apply(
                group_vars, part, rng=group_rng if have_rng else None, train=train
            )
            return None, (z_q.astype(jnp.float32), out)

        _, (z_qs, outs) = jax.lax.scan(group, None, (variables, parts, rngs))
        z_q = jnp.moveaxis(z_qs, 0, -2).reshape(z.shape)
        indices = jnp.moveaxis(outs.indices, 0, -1).astype(jnp.int32)
        metrics = _stack_metrics(outs.metrics, prefix="g")
        return z_q, QuantizerOutput(indices, jnp.mean(outs.loss), metrics, outs.state)

    def decode(self, variables, indices):
        per_group = jnp.moveaxis(jnp.asarray(indices, jnp.int32), -1, 0)  # [G, ...]
        codes = jax.vmap(self.quantizer.decode)(variables, per_group)  # [G, ..., D/G]
        codes = jnp.moveaxis(codes, 0, -2)
        return codes.reshape(*codes.shape[:-2], -1)
