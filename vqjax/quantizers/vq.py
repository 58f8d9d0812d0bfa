"""Vector quantization with a learned codebook (VQ-VAE, VQ-VAE-2, ViT-VQGAN's factorized codes).

    q = build("vq", codebook_size=8192, dim=768, codebook_dim=32, use_cosine_sim=True)  # ViT-VQGAN

Options (vector-quantize-pytorch's names):
  codebook_size            number of codes K
  dim                      latent dim (checked against z's last axis when given)
  codebook_dim             look codes up in a projected space of this size (factorized codes);
                           `project_in`/`project_out` are learned linear maps in params
  use_cosine_sim           l2-normalize latents and codes; nearest = highest cosine similarity
  ema_update               True: codebook = EMA of assigned latents (VQ-VAE-2), kept in state.
                           False: codebook is a param trained by the codebook loss
  decay, eps               EMA decay (0.99, VQ-VAE-2's) and Laplace smoothing of cluster sizes
  commitment_weight        beta of the commitment loss |z - sg[e]|^2 (0.25, VQ-VAE's)
  codebook_weight          weight of the codebook loss |sg[z] - e|^2 when ema_update=False
  kmeans_init, kmeans_iters  initialise the codebook by k-means++ and Lloyd on the first batch
  threshold_ema_dead_code  codes whose EMA assignment count falls below this are restarted from
                           random latents of the batch (0 disables)
  rotation_trick           gradient estimator: rotation trick (Fifty et al. 2024) vs straight-through
  stochastic_sample_codes, sample_codebook_temp
                           sample codes from softmax(-distance / temp) while training (Gumbel-max)
  chunk_size               nearest-code search in chunks of this many codes (default 8192)

Defaults differ from vector-quantize-pytorch in `decay` (0.99 vs 0.8) and `commitment_weight`
(0.25 vs 1.0): we follow the papers. Losses are means over elements (like the PyTorch library).

Variables: params {"codebook"?: [K, d] (gradient mode), "project_in"?, "project_out"?};
state {"codebook": [K, d] (EMA mode) or "codebook_offset": [K, d] (gradient mode; where k-means
init and dead-code restarts write, added to the param), "cluster_size": [K] EMA of assignment
counts, "embed_avg": [K, d] (EMA mode), "initted": bool}.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from vqjax.quantizers import metrics as metrics_lib
from vqjax.quantizers.base import Quantizer, QuantizerOutput, flatten, register, require_rng
from vqjax.quantizers.distances import l2_normalize, nearest_code
from vqjax.quantizers.estimators import rotation_trick, straight_through
from vqjax.quantizers.kmeans import kmeans

sg = jax.lax.stop_gradient


def _dense_init(rng, fan_in, fan_out):
    kernel = jax.nn.initializers.lecun_normal()(rng, (fan_in, fan_out), jnp.float32)
    return {"kernel": kernel, "bias": jnp.zeros((fan_out,), jnp.float32)}


def _dense(p, x):
    return jnp.dot(x, p["kernel"], preferred_element_type=jnp.float32) + p["bias"]


@register("vq")
@dataclasses.dataclass(frozen=True)
class VectorQuantizer(Quantizer):
    codebook_size: int = 1024
    dim: int | None = None
    codebook_dim: int | None = None
    use_cosine_sim: bool = False
    ema_update: bool = True
    decay: float = 0.99
    eps: float = 1e-5
    commitment_weight: float = 0.25
    codebook_weight: float = 1.0
    kmeans_init: bool = False
    kmeans_iters: int = 10
    threshold_ema_dead_code: float = 0.0
    rotation_trick: bool = False
    stochastic_sample_codes: bool = False
    sample_codebook_temp: float = 1.0
    chunk_size: int | None = None

    def validate(self):
        if int(self.codebook_size) < 1:
            raise ValueError(f"vq: codebook_size must be >= 1, got {self.codebook_size}")
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"vq: decay must be in [0, 1), got {self.decay}")
        if self.codebook_dim is not None and self.codebook_dim < 1:
            raise ValueError(f"vq: codebook_dim must be >= 1, got {self.codebook_dim}")
        if self.kmeans_iters < 0:
            raise ValueError(f"vq: kmeans_iters must be >= 0, got {self.kmeans_iters}")
        if self.sample_codebook_temp <= 0:
            raise ValueError(f"vq: sample_codebook_temp must be > 0, got {self.sample_codebook_temp}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"vq: chunk_size must be >= 1, got {self.chunk_size}")

    # -- variables -----------------------------------------------------------------------------
    def factorized(self, dim: int) -> bool:
        return self.codebook_dim is not None and self.codebook_dim != dim

    def lookup_dim(self, dim: int) -> int:
        return self.codebook_dim if self.codebook_dim is not None else dim

    def init_variables(self, rng, dim, z):
        cdim = self.lookup_dim(dim)
        rng_codes, rng_in, rng_out = jax.random.split(rng, 3)
        shape = (self.codebook_size, cdim)
        if self.kmeans_init:
            codes = jnp.zeros(shape, jnp.float32)
        else:
            codes = jax.nn.initializers.variance_scaling(1.0, "fan_in", "uniform")(
                rng_codes, shape, jnp.float32
            )
            if self.use_cosine_sim:
                codes = l2_normalize(codes)
        params, state = {}, {}
        if self.factorized(dim):
            params["project_in"] = _dense_init(rng_in, dim, cdim)
            params["project_out"] = _dense_init(rng_out, cdim, dim)
        state["cluster_size"] = jnp.ones((self.codebook_size,), jnp.float32)
        if self.ema_update:
            state["codebook"] = codes
            state["embed_avg"] = codes
        else:
            params["codebook"] = codes
            state["codebook_offset"] = jnp.zeros(shape, jnp.float32)
        state["initted"] = jnp.array(not self.kmeans_init)
        return params, state

    def codebook(self, variables) -> jax.Array:
        """The effective codebook [K, d] in lookup space (l2-normalized under cosine similarity)."""
        params, state = variables["params"], variables["state"]
        if self.ema_update:
            codes = state["codebook"]
        else:
            codes = params["codebook"] + state["codebook_offset"]
        return l2_normalize(codes) if self.use_cosine_sim else codes

    def _project_in(self, params, z):
        ze = _dense(params["project_in"], z) if "project_in" in params else z
        return l2_normalize(ze) if self.use_cosine_sim else ze

    def _project_out(self, params, q):
        return _dense(params["project_out"], q) if "project_out" in params else q

    # -- state updates (all pure, no data-dependent Python branching) --------------------------
    def _kmeans_init(self, rng, state, params, ze):
        centers, counts = kmeans(
            rng, ze, self.codebook_size, self.kmeans_iters,
            cosine=self.use_cosine_sim, chunk_size=self.chunk_size,
        )
        new = dict(state, initted=jnp.array(True), cluster_size=counts)
        if self.ema_update:
            new["codebook"] = centers
            new["embed_avg"] = centers * counts[:, None]
        else:
            new["codebook_offset"] = centers - sg(params["codebook"])
        return new

    def _ema_update(self, state, ze, indices, counts):
        decay = self.decay
        cluster_size = decay * state["cluster_size"] + (1 - decay) * counts
        if not self.ema_update:
            return dict(state, cluster_size=cluster_size)
        embed_sum = jnp.zeros_like(state["embed_avg"]).at[indices].add(ze)  # [K, d]
        embed_avg = decay * state["embed_avg"] + (1 - decay) * embed_sum
        total = jnp.sum(cluster_size)
        smoothed = (cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total
        codes = embed_avg / smoothed[:, None]
        if self.use_cosine_sim:
            codes = l2_normalize(codes)
        return dict(state, cluster_size=cluster_size, embed_avg=embed_avg, codebook=codes)

    def _restart_dead_codes(self, rng, state, params, ze):
        threshold = self.threshold_ema_dead_code
        dead = state["cluster_size"] < threshold  # [K]
        samples = ze[jax.random.randint(rng, (self.codebook_size,), 0, ze.shape[0])]  # [K, d]
        new = dict(state, cluster_size=jnp.where(dead, threshold, state["cluster_size"]))
        if self.ema_update:
            new["codebook"] = jnp.where(dead[:, None], samples, state["codebook"])
            new["embed_avg"] = jnp.where(dead[:, None], samples * threshold, state["embed_avg"])
        else:
            offset = samples - sg(params["codebook"])
            new["codebook_offset"] = jnp.where(dead[:, None], offset, state["codebook_offset"])
        return new

    def dead_code_threshold(self, cluster_size: jax.Array) -> jax.Array:
        """Codes below this EMA count are reported dead: `threshold_ema_dead_code` when set, else
        1% of the mean count."""
        if self.threshold_ema_dead_code > 0:
            return jnp.asarray(self.threshold_ema_dead_code, jnp.float32)
        return 0.01 * jnp.mean(cluster_size)

    # -- the contract -----------------------------------------------------------------------
    def quantize(self, variables, z, *, rng, train):
        params, state = variables["params"], variables["state"]
        flat, lead_shape = flatten(z.astype(jnp.float32))  # [N, D]
        ze = self._project_in(params, flat)  # [N, d]

        needs_rng = train and (
            self.kmeans_init or self.threshold_ema_dead_code > 0 or self.stochastic_sample_codes
        )
        if needs_rng:
            rng = require_rng(self.name, rng, "training with kmeans_init, dead-code restart or "
                              "stochastic sampling")
            kmeans_rng, restart_rng, sample_rng = jax.random.split(rng, 3)
        if train and self.kmeans_init:
            state = jax.lax.cond(
                state["initted"],
                lambda s: s,
                lambda s: self._kmeans_init(kmeans_rng, s, params, sg(ze)),
                state,
            )
        codebook = self.codebook({"params": params, "state": state})  # [K, d]

        sampling = train and self.stochastic_sample_codes
        indices = nearest_code(
            ze, codebook, cosine=self.use_cosine_sim, chunk_size=self.chunk_size,
            gumbel_rng=sample_rng if sampling else None, temperature=self.sample_codebook_temp,
        )  # [N]
        q = jnp.take(codebook, indices, axis=0)  # [N, d]

        commitment_loss = jnp.mean((ze - sg(q)) ** 2)
        loss = self.commitment_weight * commitment_loss
        metrics = {"commitment_loss": commitment_loss}
        if not self.ema_update:
            codebook_loss = jnp.mean((sg(ze) - q) ** 2)
            loss = loss + self.codebook_weight * codebook_loss
            metrics["codebook_loss"] = codebook_loss

        q_st = rotation_trick(ze, q) if self.rotation_trick else straight_through(ze, q)
        z_q = self._project_out(params, q_st).reshape(*lead_shape, -1)

        counts = metrics_lib.code_counts(indices, self.codebook_size)
        if train:
            state = self._ema_update(state, sg(ze), indices, counts)
            if self.threshold_ema_dead_code > 0:
                state = self._restart_dead_codes(restart_rng, state, params, sg(ze))
        metrics.update(
            usage=metrics_lib.usage_from_counts(counts),
            perplexity=metrics_lib.perplexity_from_counts(counts),
            dead_codes=metrics_lib.dead_code_count(
                state["cluster_size"], self.dead_code_threshold(state["cluster_size"])
            ),
            quantization_error=jnp.mean(jnp.sum((sg(ze) - sg(q)) ** 2, axis=-1)),
        )
        indices = indices.reshape(lead_shape)
        return z_q, QuantizerOutput(indices, loss.astype(jnp.float32), metrics, state)

    def decode(self, variables, indices):
        codes = jnp.take(self.codebook(variables), jnp.asarray(indices, jnp.int32), axis=0)
        return self._project_out(variables["params"], codes)
