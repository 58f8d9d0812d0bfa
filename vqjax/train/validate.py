"""Checks a run's config before anything is built, compiled or written, and compares it with the
config saved in the workdir when a run resumes.

`check_config(config)` raises one `ConfigError` that lists every bad field with the reason and,
for fields that take a name, the valid names: a typo costs seconds, not a compile followed by a
`ZeroDivisionError`. `resume_changes(saved, config)` sorts the differences between the config a
run was saved with and the one it is resumed with into those that are safe (cadences, the step
budget and with it the learning-rate schedule's end, the device mesh, paths of the same data) and
those that would silently change the model or the data stream (refused, each field named). A
different model in the workdir gets its own one-line error.

Only vqjax is imported: configs/ stays a user of the library, never the other way round.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from vqjax.train.config import unset_as_none

NONFINITE = ("skip", "error")  # config.nonfinite
OPTIMIZERS = ("adam", "lion")  # config.optimizer.name
LR_SCHEDULES = ("constant", "cosine")  # config.optimizer.schedule
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")  # config.compute_dtype
TRAINERS = ("tokenizer", "maskgit")  # config.trainer
TOKENIZER_MODELS = ("vit_vqgan", "vqgan")  # config.model.name of a tokenizer run
DISCRIMINATORS = ("stylegan", "patchgan")  # config.discriminator.name
CROPS = ("random_resized", "center")  # config.dataset.crop

# Fields a resumed run may change (dotted names; a prefix covers its subfields): how often things
# happen, how long the run is (total_steps also ends the cosine learning-rate schedule), how it is
# spread over devices, and where the same files live (tokenizer_workdir: the pinned tokenizer's
# fingerprint is checked separately). Everything else changes the model or the data stream.
SAFE_ON_RESUME = (
    "total_steps", "log_every_steps", "checkpoint_every_steps", "keep_checkpoints",
    "eval_every_steps", "eval_examples", "image_every_steps", "nonfinite", "mesh",
    "dataset.data_dir", "dataset.num_workers", "sample", "tokenizer_workdir",
)
# What a "different model" is: a workdir holding another trainer, architecture, size or
# quantizer gets one line naming both instead of a diff of the parameter trees.
MODEL_IDENTITY = ("trainer", "model.name", "model.size", "quantizer.name")
# Set by the MaskGIT trainer itself when it pins an unpinned run (a converted run, or one from
# before pinning): unset -> set is not a change of the user's config.
PINNED_BY_TRAINER = {"tokenizer_step": -1, "tokenizer_fingerprint": ""}
# At step 0 (a converted run: nothing trained yet) only the networks must stay as saved; the data
# stream, optimizer and loss of the fine-tuning run are the user's choice.
ARCHITECTURE = ("model", "quantizer", "discriminator", "trainer", "tokenizer_step",
                "tokenizer_fingerprint")


class ConfigError(ValueError):
    """A config field has a value the run cannot use; the message names each field."""


def _suggest(value, choices) -> str:
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _choice(problems: list, name: str, value, choices) -> None:
    if value not in choices:
        problems.append(f"config.{name}={value!r} is not one of {', '.join(map(str, choices))}"
                        + _suggest(value, choices))


def _get(config, dotted: str, default=None):
    node = config
    for part in dotted.split("."):
        if node is None or not hasattr(node, "get") or part not in node:
            return default
        node = node[part]
    return node


def check_config(config) -> None:
    """Raises ConfigError listing every field of `config` that is out of range or not a valid
    name. Fields a config does not have are skipped (a MaskGIT config has no quantizer block)."""
    problems: list[str] = []

    def at_least(name: str, minimum: int, meaning: str = "") -> None:
        value = _get(config, name)
        if value is not None and (not isinstance(value, int) or value < minimum):
            problems.append(f"config.{name}={value!r} must be an integer >= {minimum}{meaning}")

    at_least("batch_size", 1)
    at_least("total_steps", 1)
    at_least("keep_checkpoints", 1, " (the checkpoints to keep; 0 would delete every one, "
             "older ones included)")
    at_least("log_every_steps", 1, " (metrics are logged every that many steps)")
    at_least("grad_accum_steps", 1)
    batch_size, accum = _get(config, "batch_size"), _get(config, "grad_accum_steps")
    if isinstance(batch_size, int) and isinstance(accum, int) and batch_size >= 1 and accum >= 1 \
            and batch_size % accum:
        problems.append(f"config.grad_accum_steps={accum} must divide "
                        f"config.batch_size={batch_size}")
    for name in ("checkpoint_every_steps", "eval_every_steps", "image_every_steps"):
        at_least(name, 0, " (0: never; checkpoints are still saved at the end and on interrupt)"
                 if name.startswith("checkpoint") else " (0: never)")
    if (_get(config, "eval_every_steps") or 0) > 0:
        at_least("eval_examples", 1, " when eval_every_steps > 0")

    _choice(problems, "trainer", _get(config, "trainer"), TRAINERS)
    _choice(problems, "nonfinite", _get(config, "nonfinite"), NONFINITE)
    _choice(problems, "compute_dtype", _get(config, "compute_dtype"), COMPUTE_DTYPES)
    if _get(config, "optimizer") is not None:
        _choice(problems, "optimizer.name", _get(config, "optimizer.name"), OPTIMIZERS)
        _choice(problems, "optimizer.schedule", _get(config, "optimizer.schedule"), LR_SCHEDULES)
    if _get(config, "dataset.crop") is not None:
        _choice(problems, "dataset.crop", _get(config, "dataset.crop"), CROPS)
    if not _get(config, "dataset.name"):
        problems.append("config.dataset.name is empty; name a tfds dataset (e.g. imagenet2012) "
                        "or a built-in one (vqjax_photos, vqjax_digits)")

    if _get(config, "trainer") == "tokenizer":
        _choice(problems, "model.name", _get(config, "model.name"), TOKENIZER_MODELS)
        if _get(config, "discriminator") is not None:
            _choice(problems, "discriminator.name", _get(config, "discriminator.name"),
                    DISCRIMINATORS)
    quantizer = _get(config, "quantizer")
    if quantizer is not None:
        from vqjax import quantizers

        # A valid name is registered and has its option block in the config.
        choices = sorted(k for k in quantizer if k != "name" and k in quantizers.available())
        _choice(problems, "quantizer.name", quantizer.get("name"), choices)

    from vqjax.sampling import mask_schedule

    for name in ("masking.schedule", "sample.schedule"):
        value = _get(config, name)
        if value is not None:
            try:
                mask_schedule.check_method(value)
            except ValueError as error:
                problems.append(f"config.{name}: {error}")

    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems) if len(problems) > 1
                          else problems[0])


def check_batch_split(config, device_count: int) -> None:
    """Raises ConfigError unless config.batch_size and each of its config.grad_accum_steps
    micro-batches split evenly over `device_count` devices (the mesh's size)."""
    batch_size, k = config.batch_size, config.grad_accum_steps
    if batch_size % device_count:
        raise ConfigError(f"config.batch_size={batch_size} must be divisible by the "
                          f"{device_count} devices of the mesh")
    if (batch_size // k) % device_count:
        raise ConfigError(f"config.grad_accum_steps={k} must divide config.batch_size="
                          f"{batch_size} into micro-batches divisible by the {device_count} "
                          "devices")


# ------------------------------------------------------------------------------------------------
# Resuming with another config
# ------------------------------------------------------------------------------------------------
def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and tuples compare as lists."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def _covered(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def model_summary(flat: Mapping[str, Any]) -> str:
    """"vit_vqgan (size tiny, quantizer vq)" / "maskgit (size S)" from a flattened config."""
    kind = flat.get("model.name") or flat.get("trainer", "?")
    details = [f"size {flat['model.size']}"] if "model.size" in flat else []
    if "quantizer.name" in flat:
        details.append(f"quantizer {flat['quantizer.name']}")
    return f"{kind} ({', '.join(details)})" if details else str(kind)


def _fmt(value) -> str:
    return "(absent)" if value is _ABSENT else repr(value)


_ABSENT = object()


def _legacy_unset_as_none(flat: dict[str, Any]) -> dict[str, Any]:
    """"Not set" as None: an old config.json's 0 / -1 (`config.LEGACY_UNSET`) equals today's
    placeholder, so such a run resumes without a change to report."""
    return {name: unset_as_none(name, value) for name, value in flat.items()}


def resume_changes(saved: Mapping, current: Mapping) -> tuple[list[str], list[str], list[str]]:
    """(safe, refused, model) differences between the saved config and the current one (both
    plain dicts as `loop.config_to_dict` makes them), each as "field: old -> new". Options of
    quantizers the run does not use are ignored; a field only one side has is safe (a field
    added to the code since the checkpoint, with its default)."""
    old, new = _legacy_unset_as_none(flatten(saved)), _legacy_unset_as_none(flatten(current))
    active = new.get("quantizer.name")
    safe, refused, model = [], [], []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name, _ABSENT), new.get(name, _ABSENT)
        if a == b:
            continue
        if name.startswith("quantizer.") and name != "quantizer.name" and active and not \
                name.startswith(f"quantizer.{active}."):
            continue
        line = f"{name}: {_fmt(a)} -> {_fmt(b)}"
        if name in PINNED_BY_TRAINER and a == PINNED_BY_TRAINER[name]:
            safe.append(line)
            continue
        if name in MODEL_IDENTITY and a is not _ABSENT and b is not _ABSENT:
            model.append(line)
        elif _covered(name, SAFE_ON_RESUME) or a is _ABSENT or b is _ABSENT:
            safe.append(line)
        else:
            refused.append(line)
    return safe, refused, model


def check_same_model(saved: Mapping, current: Mapping, *, workdir: str) -> None:
    """Raises ConfigError in one line naming both when `workdir` holds a different model."""
    if resume_changes(saved, current)[2]:
        raise ConfigError(
            f"{workdir} holds a {model_summary(flatten(saved))} run, but the config is a "
            f"{model_summary(flatten(current))}: use another --workdir for a different model")


def check_resume_config(saved: Mapping, current: Mapping, *, workdir: str, step: int,
                        accept_changes: bool = False) -> list[str]:
    """The safe changes (to print) of resuming checkpoint `step` of `workdir` with `current`.
    Raises ConfigError: in one line when the workdir holds a different model; with the fields
    named when others would change the model or the data stream (unless `accept_changes`)."""
    check_same_model(saved, current, workdir=workdir)
    safe, refused, _ = resume_changes(saved, current)
    if step == 0:  # fine-tuning a converted run: only the architecture is fixed
        safe += [line for line in refused if not _covered(line.split(":")[0], ARCHITECTURE)]
        refused = [line for line in refused if _covered(line.split(":")[0], ARCHITECTURE)]
    if refused and not accept_changes:
        raise ConfigError(
            f"the config differs from the one checkpoint {step} in {workdir} was trained with, "
            "in fields that change the model or the data stream:\n  " + "\n  ".join(refused)
            + "\nResume with the saved values, use a new --workdir, or pass "
            "--accept_config_changes (accept_config_changes=True) to continue with the new ones")
    return safe + refused
