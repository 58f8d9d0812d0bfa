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
  restart                  "random" (the above; vector-quantize-pytorch's) or "anchored": CVQ's
                           online clustered restarts (Zheng & Vedaldi 2023), every step each code
                           moves toward an anchor latent of the batch by
                           alpha_k = exp(-10 K p_k / (1 - decay) - 1e-3), p_k the EMA (from 0)
                           of its share of each batch, so rarely used codes jump to where the
                           encoder's features are now and used ones stay (no threshold)
  anchor                   CVQ's anchor per code (restart="anchored"): "random" (a random batch
                           latent; CVQ's feature pool holds the latest batch), "closest" (the
                           batch latent nearest the code) or "probrandom" (sampled from
                           softmax(-|z - e|^2) over the batch). Codes left far from every feature
                           share one closest latent, so "closest" spreads them slowly: "random" is
                           the default here (CVQ's own default is "probrandom")
  entropy_loss_weight, entropy_temperature
                           MaskGIT's entropy loss (maskgit/libml/losses.py `entropy_loss`, softmax
                           type): p = softmax(-|z - e|^2 / T) per latent; loss = mean per-latent
                           entropy H(p) - H(mean_batch p). Sharp per latent, spread over the batch.
                           MaskGIT: weight 0.1, T 0.01
  codebook_diversity_loss_weight, codebook_diversity_temperature
                           vector-quantize-pytorch's batch half of it: -H(mean_batch p) with
                           p = softmax(similarity * temperature), similarity = -|z - e| (euclidean,
                           not squared) or the cosine similarity. Its default temperature 100
  rotation_trick           gradient estimator: rotation trick (Fifty et al. 2024) vs straight-through
  stochastic_sample_codes, sample_codebook_temp
                           sample codes from softmax(-distance / temp) while training (Gumbel-max)
  chunk_size               nearest-code search in chunks of this many codes (default 8192)

Both entropy terms reduce over the whole (global) batch inside `jit`: under sharding the batch
mean of p covers every device's latents, so 1 and 8 devices give the same loss (MaskGIT's own code
averages over each replica's batch only). They hold an [N, K] matrix of probabilities.

Defaults differ from vector-quantize-pytorch in `decay` (0.99 vs 0.8) and `commitment_weight`
(0.25 vs 1.0): we follow the papers. Losses are means over elements (like the PyTorch library).

Variables: params {"codebook"?: [K, d] (gradient mode), "project_in"?, "project_out"?};
state {"codebook": [K, d] (EMA mode) or "codebook_offset": [K, d] (gradient mode; where k-means
init and dead-code restarts write, added to the param), "cluster_size": [K] EMA of assignment
counts, "embed_avg": [K, d] (EMA mode), "initted": bool, "anchor_usage": [K] (restart="anchored"
only: CVQ's EMA of each code's share of the batch, from 0)}.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from vqjax.quantizers import metrics as metrics_lib
from vqjax.quantizers.base import Quantizer, QuantizerOutput, flatten, register, require_rng
from vqjax.quantizers.distances import l2_normalize, nearest_code, squared_distances
from vqjax.quantizers.estimators import rotation_trick, straight_through
from vqjax.quantizers.kmeans import kmeans

sg = jax.lax.stop_gradient

RESTARTS = ("random", "anchored")
ANCHORS = ("closest", "random", "probrandom")


def entropy(probs: jax.Array, axis: int = -1, eps: float = 1e-5, clamp: bool = False) -> jax.Array:
    """-sum p log(p + eps) (MaskGIT's form) or, with `clamp`, -sum p log(max(p, eps))
    (vector-quantize-pytorch's)."""
    logs = jnp.log(jnp.maximum(probs, eps)) if clamp else jnp.log(probs + eps)
    return -jnp.sum(probs * logs, axis=axis)


def maskgit_entropy_loss(affinity: jax.Array, temperature: float) -> jax.Array:
    """MaskGIT's `entropy_loss(affinity, "softmax", temperature)`: affinity [N, K] (negative
    squared distances) -> mean_n H(p_n) - H(mean_n p_n), p_n = softmax(affinity_n / T)."""
    logits = affinity.astype(jnp.float32) / temperature  # [N, K]
    probs = jax.nn.softmax(logits, axis=-1)
    sample_entropy = -jnp.mean(jnp.sum(probs * jax.nn.log_softmax(logits, axis=-1), axis=-1))
    avg_entropy = entropy(jnp.mean(probs, axis=0))
    return sample_entropy - avg_entropy


def codebook_diversity_loss(similarity: jax.Array, temperature: float) -> jax.Array:
    """vector-quantize-pytorch's codebook diversity loss: similarity [N, K] ->
    -H(mean_n softmax(similarity_n * temperature)) (entropy with log(max(p, 1e-5)))."""
    probs = jax.nn.softmax(similarity.astype(jnp.float32) * temperature, axis=-1)  # [N, K]
    return -entropy(jnp.mean(probs, axis=0), clamp=True)


def cvq_anchor_rate(anchor_usage: jax.Array, decay: float) -> jax.Array:
    """CVQ's per-code step toward its anchor: exp(-10 K p_k / (1 - decay) - 1e-3), p_k the EMA of
    the code's share of each batch (from 0, not bias-corrected, as CVQ's `embed_prob`). [K] -> [K]
    in (0, 1]: ~1 for unused codes, ~0 for codes used more than ~1/1000 of uniform."""
    num_codes = anchor_usage.shape[0]
    return jnp.exp(-(anchor_usage * num_codes * 10.0) / (1.0 - decay) - 1e-3)


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
    restart: str = "random"
    anchor: str = "random"
    entropy_loss_weight: float = 0.0
    entropy_temperature: float = 0.01
    codebook_diversity_loss_weight: float = 0.0
    codebook_diversity_temperature: float = 100.0
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
        if self.restart not in RESTARTS:
            raise ValueError(f"vq: restart must be one of {', '.join(RESTARTS)}, got "
                             f"{self.restart!r}")
        for weight in ("entropy_loss_weight", "codebook_diversity_loss_weight",
                       "threshold_ema_dead_code"):
            if getattr(self, weight) < 0:
                raise ValueError(f"vq: {weight} must be >= 0, got {getattr(self, weight)}")
        for temp in ("entropy_temperature", "codebook_diversity_temperature"):
            if getattr(self, temp) <= 0:
                raise ValueError(f"vq: {temp} must be > 0, got {getattr(self, temp)}")
        if self.anchor not in ANCHORS:
            raise ValueError(f"vq: anchor must be one of {', '.join(ANCHORS)}, got {self.anchor!r}")
        if self.restart == "anchored":
            if self.threshold_ema_dead_code > 0:
                raise ValueError(
                    "vq: restart='anchored' (CVQ) moves every code at a rate set by its usage and "
                    "takes no threshold; set threshold_ema_dead_code=0 or restart='random'")
            if self.decay == 0:
                raise ValueError(
                    "vq: restart='anchored' needs usage statistics (an EMA of assignment counts, "
                    "decay > 0); with decay=0 the codebook has none. Set decay, e.g. 0.99")

    @property
    def random_restarts(self) -> bool:
        return self.restart == "random" and self.threshold_ema_dead_code > 0

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
        if self.restart == "anchored":
            state["anchor_usage"] = jnp.zeros((self.codebook_size,), jnp.float32)
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
        codes = embed_avg / self._smoothed_counts(cluster_size)[:, None]
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

    def _anchored_restart(self, rng, state, params, ze):
        """CVQ (Zheng & Vedaldi 2023, `quantise.py`): code_k <- (1 - a_k) code_k + a_k anchor_k,
        a_k = cvq_anchor_rate, anchor_k a batch latent chosen by `anchor`. In EMA mode embed_avg
        follows the code, so the next EMA step starts from where it moved."""
        codebook = self.codebook({"params": params, "state": state})  # [K, d]
        num_latents = ze.shape[0]
        if self.anchor == "closest":
            pick = nearest_code(codebook, ze, cosine=self.use_cosine_sim,
                                chunk_size=self.chunk_size)  # [K]
        elif self.anchor == "random":
            pick = jax.random.randint(rng, (self.codebook_size,), 0, num_latents)  # [K]
        else:  # probrandom: CVQ's softmax over the batch of the (negative) distance d(e_k, z)
            if self.use_cosine_sim:
                logits = jnp.dot(codebook, ze.T, preferred_element_type=jnp.float32)  # [K, N]
            else:
                logits = -squared_distances(codebook, ze)  # [K, N]
            pick = jax.random.categorical(rng, logits, axis=-1)  # [K]
        anchors = ze[pick]  # [K, d]
        if self.use_cosine_sim:
            anchors = l2_normalize(anchors)
        rate = cvq_anchor_rate(state["anchor_usage"], self.decay)[:, None]  # [K, 1]
        if self.ema_update:
            codes = (1.0 - rate) * state["codebook"] + rate * anchors  # [K, d]
            if self.use_cosine_sim:
                codes = l2_normalize(codes)
            # embed_avg = codebook * smoothed count: keep that relation for the moved codes.
            smoothed = self._smoothed_counts(state["cluster_size"])[:, None]
            return dict(state, codebook=codes, embed_avg=codes * smoothed)
        current = sg(params["codebook"]) + state["codebook_offset"]
        moved = (1.0 - rate) * current + rate * anchors
        return dict(state, codebook_offset=moved - sg(params["codebook"]))

    def _smoothed_counts(self, cluster_size):
        """Laplace-smoothed counts: the divisor of embed_avg in the EMA codebook (VQ-VAE-2)."""
        total = jnp.sum(cluster_size)
        return (cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total

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
            self.kmeans_init or self.random_restarts or self.stochastic_sample_codes
            or (self.restart == "anchored" and self.anchor != "closest")
        )
        kmeans_rng = restart_rng = sample_rng = None
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
        if train and self.entropy_loss_weight > 0:
            # Gradients reach the latents and (gradient mode) the codebook, as in MaskGIT.
            entropy_loss = maskgit_entropy_loss(-squared_distances(ze, codebook),
                                                self.entropy_temperature)
            loss = loss + self.entropy_loss_weight * entropy_loss
            metrics["entropy_loss"] = entropy_loss
        if train and self.codebook_diversity_loss_weight > 0:
            if self.use_cosine_sim:
                similarity = jnp.dot(ze, codebook.T, preferred_element_type=jnp.float32)
            else:  # vector-quantize-pytorch's cdist: sqrt of the clamped squared distance
                similarity = -jnp.sqrt(jnp.maximum(squared_distances(ze, codebook), 1e-8))
            diversity_loss = codebook_diversity_loss(similarity,
                                                     self.codebook_diversity_temperature)
            loss = loss + self.codebook_diversity_loss_weight * diversity_loss
            metrics["codebook_diversity_loss"] = diversity_loss

        q_st = rotation_trick(ze, q) if self.rotation_trick else straight_through(ze, q)
        z_q = self._project_out(params, q_st).reshape(*lead_shape, -1)

        counts = metrics_lib.code_counts(indices, self.codebook_size)
        if train:
            state = self._ema_update(state, sg(ze), indices, counts)
            if self.random_restarts:
                state = self._restart_dead_codes(restart_rng, state, params, sg(ze))
            elif self.restart == "anchored":
                share = counts / ze.shape[0]  # [K]
                state = dict(state, anchor_usage=self.decay * state["anchor_usage"]
                             + (1.0 - self.decay) * share)
                state = self._anchored_restart(restart_rng, state, params, sg(ze))
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
