"""Released checkpoints -> ordinary vqjax runs (`python -m launch.convert --from=NAME ...`).

One module per source (`vqjax.convert.maskgit`, `taming`, `llamagen`): each reads the released files, infers the
architecture from the checkpoint tree, checks every key and shape against the vqjax model it
builds, and returns (config, variables) for the shared writers in `vqjax.convert.common`, which
write a run (Orbax checkpoint at step 0 + config) atomically. The written runs are loaded by
`vqjax.load`, sampled by `launch.sample`, evaluated by `launch.evaluate` and fine-tuned by
`launch.train`, like any run. See docs/pretrained.md.
"""

from vqjax.convert.common import ConversionError  # noqa: F401
