"""`vqjax.load(workdir)` (this module: `vqjax.inference`): the one way to restore a run for inference.

    tokenizer = vqjax.load("runs/vqgan")                 # a tokenizer run: a Tokenizer handle
    indices = tokenizer.encode(images)                   # [B, H, W, 3] in [-1, 1] -> int32 [B, h, w]
    images = tokenizer.decode(indices)                   # -> [B, H, W, 3] in [-1, 1]
    tokenizer.grid_shape(256)                            # (16, 16): the token grid of 256 px images

    maskgit = vqjax.load("runs/maskgit")                 # a MaskGIT run: a MaskGIT handle
    images = maskgit.sample(labels, jax.random.key(0), num_steps=8)         # [B, H, W, 3]
    logits = maskgit.logits(tokens, labels)              # [B, h, w, codebook_size] float32
    maskgit.tokenizer                                    # its tokenizer's handle

The handle is chosen by the run's `config.trainer` (read from the checkpoint). Only what inference
uses is built and read: the model and its parameters (the EMA params unless `use_ema=False`; a
run with `ema_decay` 0 keeps a copy of the params there), the quantizer state of a tokenizer; never
the optimizer, the discriminator, LPIPS or VGG16 (Orbax restores the needed subtree of the train
state only). A MaskGIT run's tokenizer comes from its `tokenizer_workdir`, at the step in its
config's `tokenizer_step` when that is present and >= 0, else the latest; a converted run whose
directory moved finds the tokenizer next to it (`<run>/../tokenizer`).

Every method is jitted on the local devices (or the `mesh` given), parameters replicated (or
fsdp-sharded by the mesh), the batch split over the devices: a batch whose size is not a multiple
of the device count is padded and the padding dropped. Results are jax.Arrays.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

# The pure encode / decode / reconstruct helpers live with the tokenizer base; re-exported here.
from vqjax.models.tokenizer import decode_indices, encode_indices, reconstruct_images  # noqa: F401

log = logging.getLogger("vqjax.inference")

TRAINERS = ("tokenizer", "maskgit")


# ------------------------------------------------------------------------------------------------
# Restoring a subtree of the train state
# ------------------------------------------------------------------------------------------------
def _checkpoint(workdir, step: int | None):
    """(resolved workdir, step, config) of a run, or a clear error."""
    from vqjax.paths import resolve
    from vqjax.train import checkpoint as ckpt_lib

    workdir = resolve(workdir)
    if not workdir:
        raise ValueError("vqjax.load: workdir is empty")
    directory = Path(workdir) / "checkpoints"
    if not Path(workdir).is_dir():
        raise FileNotFoundError(f"vqjax.load: workdir {workdir} does not exist")
    if not directory.is_dir():
        raise FileNotFoundError(f"vqjax.load: {workdir} has no checkpoints/ directory (not the "
                                "--workdir of a training run or of launch.convert?)")
    checkpointer = ckpt_lib.Checkpointer(workdir, read_only=True, async_save=False)
    try:
        steps = sorted(checkpointer.all_steps())
        if not steps:
            raise FileNotFoundError(f"vqjax.load: no complete checkpoint in {directory}")
        if step is None:
            step = steps[-1]
        elif int(step) not in steps:
            raise FileNotFoundError(f"vqjax.load: no checkpoint for step {step} in {directory}; "
                                    f"available steps: {', '.join(map(str, steps))}")
        config = ml_collections.ConfigDict(checkpointer.restore_config(int(step)))
    finally:
        checkpointer.close()
    return workdir, int(step), config


def restore_subtree(workdir: str, step: int, abstract: dict) -> dict:
    """The entries of `abstract` (a dict of the train state's top-level fields -> pytrees of
    ShapeDtypeStructs with shardings) read from checkpoint `step`; nothing else is read."""
    import orbax.checkpoint as ocp

    from vqjax.train import checkpoint as ckpt_lib

    checkpointer = ckpt_lib.Checkpointer(workdir, read_only=True, async_save=False)
    try:
        restore_args = ocp.checkpoint_utils.construct_restore_args(abstract)
        restored = checkpointer.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(item=abstract, restore_args=restore_args,
                                         partial_restore=True)))
    finally:
        checkpointer.close()
    return dict(restored["state"])


def _placed(abstract, mesh, fsdp_min_size: int = 2**18):
    """`abstract` with the shardings of `mesh` (replicated, or fsdp-sharded when large)."""
    from vqjax.train import checkpoint as ckpt_lib
    from vqjax.train import mesh as mesh_lib

    shardings = mesh_lib.state_shardings(mesh, abstract, (), fsdp_min_size)
    return ckpt_lib.abstract_like(abstract, shardings)


def _default_mesh():
    from vqjax.train import mesh as mesh_lib

    return mesh_lib.make_mesh(devices=jax.local_devices())


class _BatchSplitter:
    """Calls a jitted `fn(variables, *batched)` with the batch split over the mesh's devices."""

    def __init__(self, mesh):
        from vqjax.train import mesh as mesh_lib

        self.mesh = mesh
        self.sharding = mesh_lib.batch_sharding(mesh)
        self.devices = mesh.size

    def __call__(self, jitted, variables, *arrays):
        count = arrays[0].shape[0]
        padded = -(-count // self.devices) * self.devices
        placed = []
        for array in arrays:
            array = np.asarray(array) if not isinstance(array, jax.Array) else array
            if padded != count:
                pad = [(0, padded - count)] + [(0, 0)] * (array.ndim - 1)
                array = jnp.pad(array, pad, mode="edge")
            placed.append(jax.device_put(array, self.sharding))
        out = jitted(variables, *placed)
        return jax.tree.map(lambda x: x[:count], out) if padded != count else out


# ------------------------------------------------------------------------------------------------
# Handles
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(eq=False)
class Tokenizer:
    """A restored tokenizer run. `model` (the Flax module) and `variables` ({"params", the
    quantizer state}) are public, for use inside other jitted code (e.g. the MaskGIT trainer)."""

    model: Any
    variables: Any
    config: ml_collections.ConfigDict
    step: int
    workdir: str
    mesh: Any
    fingerprint: str = ""  # config + params hash (`vqjax.train.pinning`), from `load_tokenizer`

    def __post_init__(self):
        self._split = _BatchSplitter(self.mesh)
        eps = self.config.get("loss", {}).get("logit_laplace_eps")
        model = self.model
        self._encode = jax.jit(functools.partial(encode_indices, model))
        self._decode = jax.jit(lambda v, t: decode_indices(model, v, t, eps))
        self._reconstruct = jax.jit(lambda v, x: reconstruct_images(model, v, x, eps)[0])

    @property
    def codebook_size(self) -> int:
        return int(self.model.built_quantizer().codebook_size)

    @property
    def image_size(self) -> int:
        """The resolution the tokenizer was trained (or converted) at."""
        return int(self.config.dataset.image_size)

    def grid_shape(self, image_size: int | tuple[int, int] | None = None) -> tuple[int, int]:
        """The token grid (h, w) of images of `image_size` (default: the training resolution)."""
        size = self.image_size if image_size is None else image_size
        height, width = (size, size) if isinstance(size, int) else size
        return tuple(self.model.token_grid(height, width))

    def encode(self, images) -> jax.Array:
        """Images float [B, H, W, 3] in [-1, 1] -> int32 indices [B, h, w] (with a trailing axis
        for rvq / grouped quantizers)."""
        return self._split(self._encode, self.variables, jnp.asarray(images, jnp.float32))

    def decode(self, indices) -> jax.Array:
        """Indices [B, h, w(, Q)] -> images float32 [B, H, W, 3] in [-1, 1]."""
        return self._split(self._decode, self.variables, jnp.asarray(indices, jnp.int32))

    def reconstruct(self, images) -> jax.Array:
        """Images [-1, 1] -> reconstructions [-1, 1]: the model's forward pass (= decode(encode)
        up to float rounding), in one jitted call."""
        return self._split(self._reconstruct, self.variables, jnp.asarray(images, jnp.float32))


@dataclasses.dataclass(eq=False)
class MaskGIT:
    """A restored MaskGIT run and its tokenizer's handle (`tokenizer`). `model` and `params` are
    public, for use inside other jitted code."""

    model: Any
    params: Any
    config: ml_collections.ConfigDict
    step: int
    workdir: str
    tokenizer: Tokenizer
    mesh: Any

    def __post_init__(self):
        self._split = _BatchSplitter(self.mesh)
        model = self.model
        self._logits = jax.jit(lambda p, t, y: model.apply({"params": p}, t, y))
        self._logits_unconditional = jax.jit(lambda p, t: model.apply({"params": p}, t, None))
        self._samplers: dict = {}

    @property
    def mask_token_id(self) -> int:
        return self.model.mask_token_id

    @property
    def num_classes(self) -> int | None:
        return self.model.num_classes

    @property
    def grid(self) -> tuple[int, int]:
        size = int(self.config.dataset.image_size)
        return tuple(self.tokenizer.model.token_grid(size, size))

    def logits(self, tokens, labels=None) -> jax.Array:
        """tokens int32 [B, h, w] (`mask_token_id` where masked; [B, h, w, Q] for multi-index
        tokens), labels int32 [B] or None (unconditional: the null label) -> float32 logits
        [B, h, w, codebook_size] ([B, h, w, Q, codebook_size]). Bits mode: the model's group
        tokens [B, h, w, (Q,) S] (`model.model_tokens(indices)`, `mask_token_id` = 2^k per
        masked group) -> group logits [B, h, w, (Q,) S, 2^k], one softmax per group of k bits."""
        tokens = jnp.asarray(tokens, jnp.int32)
        if labels is None:
            return self._split(self._logits_unconditional, self.params, tokens)
        return self._split(self._logits, self.params, tokens, jnp.asarray(labels, jnp.int32))

    def decode_options(self, **options) -> dict:
        """The run's `config.sample` decoding options with `options` (not None) overriding."""
        from vqjax.train.maskgit import decode_options

        return decode_options(self.config.sample, **options)

    def sample(self, labels=None, rng=None, num_steps: int | None = None, *,
               batch_size: int | None = None, return_tokens: bool = False, **options):
        """Images float32 [B, H, W, 3] in [-1, 1] (with `return_tokens`: (tokens, images)) by
        parallel decoding. labels int32 [B] (None: unconditional, `batch_size` images with the
        null label); rng a key (default key(0)); num_steps and `options` (temperature, top_k,
        top_p, choice_temperature, guidance_scale, schedule) default to the run's config.sample."""
        from vqjax.models import maskgit as maskgit_lib

        rng = jax.random.key(0) if rng is None else rng
        if labels is None:
            if batch_size is None:
                raise ValueError("MaskGIT.sample: give labels [B] or batch_size")
            labels = np.full((int(batch_size),), self.model.null_label or 0, np.int32)
            unconditional = True
        else:
            labels = jnp.asarray(labels, jnp.int32)
            unconditional = False
        if not unconditional and self.model.num_classes is None:
            raise ValueError("MaskGIT.sample: this run is unconditional; pass batch_size, not "
                             "labels")
        if num_steps is not None:
            options["num_steps"] = num_steps
        decode = self.decode_options(**options)
        key = (unconditional, tuple(sorted(decode.items())))
        if key not in self._samplers:
            model, grid, tokenizer = self.model, self.grid, self.tokenizer
            eps = tokenizer.config.get("loss", {}).get("logit_laplace_eps")

            def sample_fn(variables, labels, rng):
                params, tokenizer_variables = variables
                y = None if unconditional or model.num_classes is None else labels
                out = maskgit_lib.generate(model, {"params": params}, rng, y, grid=grid,
                                           batch_size=labels.shape[0], **decode)
                images = decode_indices(tokenizer.model, tokenizer_variables, out.tokens, eps)
                return out.tokens, images

            self._samplers[key] = jax.jit(sample_fn)
        jitted = self._samplers[key]
        tokens, images = self._split(
            lambda v, y: jitted(v, y, rng), (self.params, self.tokenizer.variables), labels)
        return (tokens, images) if return_tokens else images


# ------------------------------------------------------------------------------------------------
# load
# ------------------------------------------------------------------------------------------------
def load(workdir, step: int | None = None, use_ema: bool = True, *, mesh=None):
    """The run in `workdir` at checkpoint `step` (default: the latest) as a `Tokenizer` or
    `MaskGIT` handle, chosen by its config's trainer. `use_ema`: the EMA params (default) or the
    live params. `mesh`: where to place the parameters and split batches (default: a data mesh
    over this process's local devices)."""
    workdir, step, config = _checkpoint(workdir, step)
    trainer = config.get("trainer", "tokenizer")
    mesh = _default_mesh() if mesh is None else mesh
    if trainer == "tokenizer":
        return _load_tokenizer(workdir, step, config, use_ema, mesh)
    if trainer == "maskgit":
        return _load_maskgit(workdir, step, config, use_ema, mesh)
    raise ValueError(f"vqjax.load: {workdir} is a {trainer!r} run; vqjax.load restores "
                     f"{', '.join(TRAINERS)} runs")


def _params_field(use_ema: bool) -> str:
    return "ema_params" if use_ema else "params"


def _load_tokenizer(workdir, step, config, use_ema, mesh) -> Tokenizer:
    from vqjax.quantizers.linen import QUANTIZER_STATE, RNG_STREAM
    from vqjax.train.tokenizer import build_tokenizer

    model = build_tokenizer(config)
    size = int(config.dataset.image_size)
    key = jax.random.key(0)
    abstract = jax.eval_shape(lambda: model.init(
        {"params": key, RNG_STREAM: key}, jnp.zeros((1, size, size, getattr(model, "channels", 3)), jnp.float32)))
    min_size = config.get("mesh", {}).get("fsdp_min_size", 2**18)
    field = _params_field(use_ema)
    # Consistent pairs (TrainState.inference_variables): the EMA params with the EMA quantizer
    # state, the live params with the live state. Checkpoints written before the EMA quantizer
    # state existed have only the live one.
    state_fields = ["ema_quantizer_state", "quantizer_state"] if use_ema else ["quantizer_state"]
    for state_field in state_fields:
        wanted = {field: abstract["params"], state_field: abstract.get(QUANTIZER_STATE, {})}
        try:
            restored = restore_subtree(workdir, step, _placed(wanted, mesh, min_size))
            break
        except (KeyError, ValueError, FileNotFoundError) as error:
            if state_field == state_fields[-1]:
                raise
            log.info("no %s in %s step %d (%s): using quantizer_state", state_field, workdir,
                     step, type(error).__name__)
    variables = {"params": restored[field], QUANTIZER_STATE: restored[state_field]}
    log.info("tokenizer %s step %d (%s, %s)", workdir, step, field, state_field)
    return Tokenizer(model=model, variables=variables, config=config, step=step,
                     workdir=str(workdir), mesh=mesh)


def tokenizer_location(config, workdir: str | None = None) -> tuple[str, int | None]:
    """(tokenizer_workdir, step or None for the latest) of a MaskGIT config. A converted run moved
    together with its tokenizer finds it next to itself (`<workdir>/../tokenizer`)."""
    from vqjax.paths import resolve

    tokenizer_workdir = resolve(config.get("tokenizer_workdir", ""))
    if not tokenizer_workdir:
        raise ValueError("config.tokenizer_workdir is required: pass "
                         "--config.tokenizer_workdir=DIR, the workdir of a trained tokenizer run "
                         "(python -m launch.train --config=configs/vitvqgan.py:...)")
    if workdir is not None and not (Path(tokenizer_workdir) / "checkpoints").is_dir():
        sibling = Path(workdir).parent / "tokenizer"
        if (sibling / "checkpoints").is_dir():
            log.warning("tokenizer_workdir %s is missing; using %s", tokenizer_workdir, sibling)
            tokenizer_workdir = str(sibling)
    step = config.get("tokenizer_step", -1)
    step = None if step is None or int(step) < 0 else int(step)
    return tokenizer_workdir, step


def load_tokenizer(tokenizer_workdir, step: int | None = None, *, mesh=None,
                   fingerprint: str = "") -> Tokenizer:
    """The tokenizer run in `tokenizer_workdir` at checkpoint `step` (None: the latest), with its
    `fingerprint` computed. A pinned `step` that is gone, or a checkpoint whose fingerprint is not
    the expected `fingerprint`, raises `pinning.TokenizerPinError` naming the step and workdir."""
    from vqjax.paths import resolve
    from vqjax.train import checkpoint as ckpt_lib
    from vqjax.train import pinning

    tokenizer_workdir = resolve(tokenizer_workdir)
    if not (Path(tokenizer_workdir) / "checkpoints").is_dir():
        raise FileNotFoundError(f"config.tokenizer_workdir={tokenizer_workdir!r} has no "
                                "checkpoints/ directory; train a tokenizer there first")
    if step is not None:
        checkpointer = ckpt_lib.Checkpointer(tokenizer_workdir, read_only=True, async_save=False)
        try:
            available = sorted(checkpointer.all_steps())
        finally:
            checkpointer.close()
        if int(step) not in available:
            raise pinning.missing_step_error(tokenizer_workdir, int(step), available)
    handle = load(tokenizer_workdir, step, mesh=mesh)
    if not isinstance(handle, Tokenizer):
        raise ValueError(f"config.tokenizer_workdir={tokenizer_workdir!r} is a "
                         f"{handle.config.get('trainer')!r} run, not a tokenizer run")
    handle.fingerprint = pinning.fingerprint(handle.config.to_dict(), handle.variables)
    pinning.check_fingerprint(fingerprint, handle.fingerprint,
                              tokenizer_workdir=tokenizer_workdir, step=handle.step)
    return handle


def load_tokenizer_of(config, mesh=None, workdir: str | None = None, *, step: int | None = None,
                      fingerprint: str | None = None) -> Tokenizer:
    """The tokenizer handle a MaskGIT config names: its tokenizer_workdir at the pinned step and
    fingerprint (`step`/`fingerprint`, default config.tokenizer_step/tokenizer_fingerprint; no
    pin: the latest checkpoint)."""
    from vqjax.train import pinning

    tokenizer_workdir, config_step = tokenizer_location(config, workdir)
    step = config_step if step is None else step
    fingerprint = pinning.pinned_fingerprint(config) if fingerprint is None else fingerprint
    return load_tokenizer(tokenizer_workdir, step, mesh=mesh, fingerprint=fingerprint)


def _load_maskgit(workdir, step, config, use_ema, mesh) -> MaskGIT:
    from vqjax.train.maskgit import build_maskgit

    tokenizer = load_tokenizer_of(config, mesh, workdir)
    model = build_maskgit(config, tokenizer.model, config.model.num_classes or None)
    size = int(config.dataset.image_size)
    grid = tuple(tokenizer.model.token_grid(size, size))
    token_shape = grid + ((model.num_indices,) if model.index_axes else ())
    tokens = model.model_tokens(jnp.zeros((1, *token_shape), jnp.int32))  # bits mode: groups
    labels = None if model.num_classes is None else jnp.zeros((1,), jnp.int32)
    abstract = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, tokens, labels))
    # A run with ema_decay 0 keeps a copy of its params as ema_params: either field works.
    field = _params_field(use_ema)
    min_size = config.get("mesh", {}).get("fsdp_min_size", 2**18)
    restored = restore_subtree(workdir, step, _placed({field: abstract["params"]}, mesh, min_size))
    log.info("maskgit %s step %d (%s)", workdir, step, field)
    return MaskGIT(model=model, params=restored[field], config=config, step=step,
                   workdir=str(workdir), tokenizer=tokenizer, mesh=mesh)
