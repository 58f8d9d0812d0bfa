"""vqjax is an installable library: a wheel built from the checkout, installed into a fresh venv
(reusing this environment's dependencies), imports every module from outside the checkout."""

from __future__ import annotations

import ast
import os
import pathlib
import site
import subprocess
import sys
import zipfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def library_modules() -> list[str]:
    names = []
    for path in sorted((REPO / "vqjax").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_library_never_imports_configs_or_launch():
    """The design rule itself, checked on the source (a lazy import inside a function counts)."""
    offenders = []
    for path in sorted((REPO / "vqjax").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            offenders += [f"{path.relative_to(REPO)}:{node.lineno} imports {m}" for m in modules
                          if m.split(".")[0] in ("configs", "launch", "tests", "bench")]
    assert not offenders, "\n".join(offenders)


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_imports_every_module(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist),
                    str(REPO)], check=True, cwd=tmp_path, timeout=600)
    (wheel,) = dist.glob("vqjax-*.whl")
    top_level = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert "vqjax" in top_level
    assert not top_level & {"configs", "launch", "tests", "bench", "notebooks"}, top_level

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=300)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, timeout=600)
    # Reuse this environment's dependencies: a .pth line appends our site-packages after the
    # venv's own (its .pth files, such as an editable vqjax, are not processed from there).
    venv_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip()
    (pathlib.Path(venv_site) / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    script = (
        "import importlib, pathlib, sys\n"
        f"names = {library_modules()!r}\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "import vqjax\n"
        "print(pathlib.Path(vqjax.__file__).resolve())\n"
        "for gone in ('configs', 'launch'):\n"
        "    try:\n"
        "        importlib.import_module(gone)\n"
        "    except ModuleNotFoundError:\n"
        "        pass\n"
        "    else:\n"
        "        sys.exit(f'{gone} importable outside the checkout')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    result = subprocess.run([str(python), "-c", script], cwd=outside, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    location = pathlib.Path(result.stdout.strip().splitlines()[-1])
    assert location.is_relative_to(venv.resolve()), location


def test_notebooks_use_the_installed_package_without_path_edits():
    import json

    from vqjax.train.config import load_config

    before = list(sys.path)
    config = load_config(REPO / "configs" / "vitvqgan.py", "tiny,res=16")
    assert config.dataset.image_size == 16 and config.model.name == "vit_vqgan"
    assert load_config(f"{REPO}/configs/vqgan.py:tiny").model.name == "vqgan"
    assert sys.path == before
    for notebook in (REPO / "notebooks").glob("*.ipynb"):
        cells = json.loads(notebook.read_text())["cells"]
        source = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        assert "sys.path" not in source and "from configs" not in source, notebook.name
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(REPO / "configs" / "nope.py")
