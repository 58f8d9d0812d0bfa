"""Convert pytorch-fid's InceptionV3 weights (.pth, a torch state dict) to the .npz vqjax loads.

    # once, on any machine with torch (the .npz then needs no torch); the weights are
    # pytorch-fid's GitHub release "fid_weights" (vqjax.evaluation.FID_WEIGHTS_URL):
    wget https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
    python -m launch.convert_inception --input pt_inception-2015-12-05-6726825d.pth \
        --output ~/.cache/vqjax/pt_inception-2015-12-05-6726825d.npz

The .npz holds one float32 array per parameter, keyed by its Flax path ("Mixed_5b/branch1x1/conv/
kernel", HWIO kernels, BatchNorm scale/bias/mean/var), exactly the tree `FIDInceptionV3` uses;
`vqjax.evaluation.load_inception_params(path)` reads it. The file's SHA-256 is checked against the
prefix in its name (torch hub's convention) and a mismatch is reported.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pathlib
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from vqjax.evaluation import inception

SHA256_PREFIX = "6726825d"


def convert_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """pytorch-fid FIDInceptionV3 state dict (torch tensors or numpy arrays) -> flat npz dict."""
    return inception.params_from_torch_state_dict(state_dict)


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def convert_file(input_path: str | os.PathLike, output_path: str | os.PathLike) -> pathlib.Path:
    """Read the .pth (needs torch), write the .npz; returns the output path."""
    input_path = pathlib.Path(input_path).expanduser()
    if not input_path.is_file():
        raise inception.InceptionWeightsNotFoundError(
            f"no such file: {input_path}\n  download {inception.PTH_FILENAME} from "
            f"{inception.FID_WEIGHTS_URL}")
    if input_path.name == inception.PTH_FILENAME:
        digest = sha256_of(input_path)
        if not digest.startswith(SHA256_PREFIX):
            print(f"warning: sha256 of {input_path} is {digest[:16]}..., expected a prefix "
                  f"{SHA256_PREFIX} (corrupt or different download?)", file=sys.stderr)
    flat = convert_state_dict(inception.load_torch_state_dict(input_path))
    output_path = pathlib.Path(output_path).expanduser()
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_path.with_name(output_path.name + ".tmp.npz")
    np.savez(tmp, **flat)
    os.replace(tmp, output_path)
    return output_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help=f"path of {inception.PTH_FILENAME}")
    parser.add_argument("--output", default=str(inception.DEFAULT_WEIGHTS_PATH),
                        help="where to write the .npz (default: %(default)s)")
    args = parser.parse_args(argv)
    output = convert_file(args.input, args.output)
    params = inception.load_inception_params(output)  # round trip: structure and shapes
    count = sum(int(np.prod(leaf.shape)) for leaf in __import__("jax").tree.leaves(params))
    print(f"wrote {output} ({count:,} parameters)")


if __name__ == "__main__":
    main()
