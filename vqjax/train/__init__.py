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


def run(config, workdir: str):
    """Dispatch to the trainer named by `config.trainer`; `workdir` may be relative or use `~`."""
    workdir = resolve(workdir)
    resolve_config_paths(config)
    if config.get("dataset") is not None:
        from vqjax.data import record_class_names

        # image folders: label names into the saved config; a bad folder fails before training
        record_class_names(config.dataset,
                           require_eval_split=config.get("eval_every_steps", 0) > 0)
    if config.trainer == "tokenizer":
        from vqjax.train.tokenizer import train_and_evaluate

        return train_and_evaluate(config, workdir)
    if config.trainer == "maskgit":
        from vqjax.train.maskgit import train_and_evaluate

        return train_and_evaluate(config, workdir)
    raise ValueError(f"config.trainer={config.trainer!r}; available: tokenizer, maskgit")
