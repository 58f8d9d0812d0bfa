"""Training: device mesh and sharding, checkpoints, metric writing, and one trainer per model family."""


def run(config, workdir: str):
    """Dispatch to the trainer named by `config.trainer`."""
    if config.trainer == "tokenizer":
        from vqjax.train.tokenizer import train_and_evaluate

        return train_and_evaluate(config, workdir)
    if config.trainer == "maskgit":
        from vqjax.train.maskgit import train_and_evaluate

        return train_and_evaluate(config, workdir)
    raise ValueError(f"config.trainer={config.trainer!r}; available: tokenizer, maskgit")
