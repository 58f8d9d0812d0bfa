"""Which (params, quantizer state) pair to evaluate a tokenizer with: a short tiny run, evaluated
at a few steps with (live params, live quantizer state), (EMA params, live state) and (EMA params,
EMA state), plus (live params, EMA state) for completeness (docs/training.md has the figures).

    python -m bench.ema_pairing --config=vitvqgan --steps=600 --evals=200,400,600

The run is `TokenizerTrainer.train_step` on the config's `tiny` variant (its own dataset, batch
and EMA decay); each pair is scored with the trainer's `eval_sums` on the same
`--eval_examples` images of the eval split (PSNR, L2, codebook usage).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from configs import vitvqgan, vqgan
from vqjax import data as data_lib
from vqjax.train import loop
from vqjax.train import mesh as mesh_lib
from vqjax.train.tokenizer import TokenizerTrainer

CONFIGS = {"vitvqgan": vitvqgan, "vqgan": vqgan}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="vitvqgan")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--evals", default="200,400,600", help="steps to evaluate at")
    parser.add_argument("--eval_examples", type=int, default=96)
    args = parser.parse_args(argv)
    evals = sorted({int(s) for s in args.evals.split(",")})
    if not evals or evals[0] < 1 or evals[-1] > args.steps:
        raise ValueError(f"--evals={args.evals}: steps in 1..--steps={args.steps}")

    config = CONFIGS[args.config].get_config("tiny")
    config.unlock()
    config.total_steps = args.steps
    config.eval_examples = args.eval_examples
    mesh = mesh_lib.from_config(config)
    trainer = TokenizerTrainer(config, mesh)
    ds = config.dataset
    train_iter = data_lib.input_pipeline(
        ds.name, ds.train_split, global_batch_size=config.batch_size, image_size=ds.image_size,
        seed=config.seed, process_index=0, process_count=1, train=True,
        data_dir=ds.data_dir or None, crop=ds.crop, area_range=(ds.crop_area_min, 1.0),
        flip=ds.flip, num_workers=0)
    state = jax.jit(trainer.init_state)(jax.random.key(config.seed))
    step_fn = jax.jit(trainer.train_step)
    eval_sums = jax.jit(trainer.eval_sums)

    def score(params, quantizer_state) -> dict:
        def make_iterator(batch_size):
            return data_lib.input_pipeline(
                ds.name, ds.eval_split, global_batch_size=batch_size, image_size=ds.image_size,
                seed=config.seed, process_index=0, process_count=1, train=False,
                data_dir=ds.data_dir or None)

        totals = None
        for _, batch in loop.eval_batches(make_iterator, config, mesh, ("image",)):
            totals = loop.add_sums(totals, loop.to_host(
                eval_sums(params, quantizer_state, batch["image"], batch["mask"])))
        examples = float(totals["examples"])
        return {"psnr": round(float(totals["psnr"]) / examples, 3),
                "l2": round(float(totals["l2"]) / examples, 5),
                "usage": round(float(np.mean(totals["code_counts"] > 0)), 4)}

    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = mesh_lib.global_batch(mesh, {"image": next(train_iter)["image"]})
        state, _ = step_fn(state, batch)
        if step in evals:
            print(json.dumps({
                "config": args.config, "step": step, "ema_decay": config.ema_decay,
                "seconds": round(time.perf_counter() - start),
                "live params, live state": score(state.params, state.quantizer_state),
                "EMA params, live state": score(state.ema_params, state.quantizer_state),
                "EMA params, EMA state": score(state.ema_params, state.ema_quantizer_state),
                "live params, EMA state": score(state.params, state.ema_quantizer_state),
            }), flush=True)


if __name__ == "__main__":
    main()
