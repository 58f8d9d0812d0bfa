"""Training: device mesh and sharding, checkpoints, metric writing, and one trainer per model family."""

from vqjax.paths import resolve


def resolve_config_paths(config) -> None:
    """Make the config's path fields absolute in place (`~` expanded; remote paths unchanged), so a
    relative `--config.tokenizer_workdir=runs/tok` means the same thing to Orbax and in the saved
    config wherever the run is resumed or sampled from."""
    for owner, key in ((config, "tokenizer_workdir"), (config, "tokens_dir"),
                       (config.get("dataset"), "data_dir")):
        if owner is not None and owner.get(key):
            owner[key] = resolve(owner[key])


def run(config, workdir: str, *, step: int | None = None, accept_config_changes: bool = False):
    """Dispatch to the trainer named by `config.trainer`; `workdir` may be relative or use `~`.

    The config is checked first (every bad field named, `validate.ConfigError`) and the workdir's
    layout (`checkpoint.WorkdirError`), before any dataset, model or compilation. `step` resumes
    from that checkpoint instead of the newest; `accept_config_changes` resumes even when fields
    that change the model or the data stream differ from the saved config (see `loop.Resume`)."""
    from vqjax.train import checkpoint, loop, validate

    workdir = resolve(workdir)
    validate.check_config(config)
    checkpoint.check_workdir(workdir)
    resolve_config_paths(config)
    if config.get("dataset") is not None:
        from vqjax.data import record_class_names

        # image folders: label names into the saved config; a bad folder fails before training
        record_class_names(config.dataset,
                           require_eval_split=config.get("eval_every_steps", 0) > 0)
    resume = loop.Resume(step=step, accept_config_changes=accept_config_changes)
    if config.trainer == "tokenizer":
        from vqjax.train.tokenizer import train_and_evaluate

        return train_and_evaluate(config, workdir, resume=resume)
    if config.trainer == "maskgit":
        from vqjax.train.maskgit import train_and_evaluate

        return train_and_evaluate(config, workdir, resume=resume)
    raise ValueError(f"config.trainer={config.trainer!r}; available: tokenizer, maskgit")
