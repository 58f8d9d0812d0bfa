"""Where training numbers and pictures go: TensorBoard events, `<workdir>/metrics.jsonl`, PNG grids,
and a progress bar on the console. Only process 0 writes; other processes get a no-op writer.

A resumed run continues from its checkpoint's step, so whatever was logged after that step (by
the run that was killed before its next checkpoint) is rewound: `MetricWriter(resume_step=S)`
moves the rows after S from metrics.jsonl to metrics_rewound.jsonl (kept: they show what happened
before the crash) and starts its TensorBoard events with `purge_step=S + 1`, which makes
TensorBoard hide the older events after S. The logs then read as one run."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Mapping

import numpy as np


def _summary_writer_class():
    """tensorboardX's SummaryWriter (TensorBoard event files without TensorFlow), or None if it is
    not installed. Imported when a writer is opened: tensorboardX imports torch when torch is
    installed (~2 s), which modules that only use `Progress` or the figures should not pay."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:  # pragma: no cover - tensorboardX is in requirements.txt
        return None
    return SummaryWriter


def image_grid(images: np.ndarray, columns: int | None = None, pad: int = 2) -> np.ndarray:
    """[N, H, W, C] float images in [-1, 1] -> one uint8 [rows*(H+pad), cols*(W+pad), C] grid."""
    images = np.asarray(images, np.float32)
    n, h, w, c = images.shape
    columns = columns or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / columns))
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, np.uint8)
    pixels = np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
    for i in range(n):
        r, col = divmod(i, columns)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y:y + h, x:x + w] = pixels[i]
    return grid


def upscale(grid: np.ndarray, min_width: int = 512) -> np.ndarray:
    """Nearest-neighbour upscaling by the smallest integer factor that makes the grid at least
    `min_width` pixels wide (32 px crops stay sharp pixels, not a blur)."""
    factor = max(1, -(-min_width // grid.shape[1]))
    return np.repeat(np.repeat(grid, factor, axis=0), factor, axis=1)


def add_caption(grid: np.ndarray, text: str, height: int | None = None) -> np.ndarray:
    """`grid` with a white caption row above it that says what is shown."""
    from PIL import Image, ImageDraw, ImageFont

    rgb = np.repeat(grid, 3, axis=-1) if grid.shape[-1] == 1 else grid
    width = rgb.shape[1]
    font_size = int(np.clip(width // 48, 12, 28))
    try:
        font = ImageFont.load_default(size=font_size)
    except TypeError:  # pragma: no cover - Pillow < 10.1: fixed bitmap font
        font = ImageFont.load_default()
    # Wrap the text to the grid's width.
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > width - 2 * font_size // 2:
            lines.append(line)
            line = word
        else:
            line = trial
    lines.append(line)
    line_height = int(font_size * 1.3)
    height = height or line_height * len(lines) + font_size // 2
    caption = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(caption)
    for i, text_line in enumerate(lines):
        draw.text((font_size // 2, font_size // 4 + i * line_height), text_line, fill=(0, 0, 0),
                  font=font)
    return np.concatenate([np.asarray(caption), rgb], axis=0)


def figure(grid: np.ndarray, caption: str, min_width: int = 512) -> np.ndarray:
    """A grid made for people: upscaled to >= `min_width` px across, with a caption row."""
    return add_caption(upscale(grid, min_width), caption)


def comparison_grid(inputs: np.ndarray, outputs: np.ndarray, pairs_per_row: int = 4,
                    pad: int = 2) -> np.ndarray:
    """[N, H, W, C] inputs and outputs in [-1, 1] -> a uint8 grid of (input, output) pairs side
    by side, `pairs_per_row` pairs a row, with a wider gap between pairs than inside one."""
    inputs, outputs = np.asarray(inputs, np.float32), np.asarray(outputs, np.float32)
    n, h, w, c = inputs.shape
    rows = int(math.ceil(n / pairs_per_row))
    gap = 3 * pad
    pair_width = 2 * w + pad
    grid = np.full((rows * (h + pad) + pad, pairs_per_row * (pair_width + gap) - gap + 2 * pad, c),
                   255, np.uint8)
    to_uint8 = lambda x: np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)  # noqa: E731
    for i in range(n):
        r, col = divmod(i, pairs_per_row)
        y, x = pad + r * (h + pad), pad + col * (pair_width + gap)
        grid[y:y + h, x:x + w] = to_uint8(inputs[i])
        grid[y:y + h, x + w + pad:x + pair_width] = to_uint8(outputs[i])
    return grid


def save_png(path: str | os.PathLike, array: np.ndarray) -> None:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(tmp)
    os.replace(tmp, path)  # never leave a half-written image behind


REWOUND_FILE = "metrics_rewound.jsonl"


def rewind_metrics(path: str | os.PathLike, step: int) -> int:
    """Keeps the rows of the JSON-lines file `path` with "step" <= `step`; the others (and any line
    cut short by a kill) are appended to metrics_rewound.jsonl next to it. Returns how many rows
    moved. The file is replaced atomically."""
    path = Path(path)
    if not path.exists():
        return 0
    kept, moved = [], []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            keep = int(json.loads(line)["step"]) <= step
        except (ValueError, KeyError, TypeError):
            keep = False
        (kept if keep else moved).append(line)
    if moved:
        with open(path.parent / REWOUND_FILE, "a") as f:
            f.write("".join(line + "\n" for line in moved))
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)
    return len(moved)


class MetricWriter:
    """Scalars to TensorBoard + metrics.jsonl; images to PNG (+ TensorBoard). With `resume_step`,
    rows and events after that step are rewound first (see the module docstring)."""

    def __init__(self, workdir: str | os.PathLike, enabled: bool = True,
                 resume_step: int | None = None):
        self.workdir = Path(workdir)
        self.enabled = enabled
        self._tb = None
        if enabled:
            self.workdir.mkdir(parents=True, exist_ok=True)
            purge_step = None
            if resume_step is not None:
                rewind_metrics(self.workdir / "metrics.jsonl", resume_step)
                purge_step = resume_step + 1
            summary_writer = _summary_writer_class()
            if summary_writer is not None:
                self._tb = summary_writer(str(self.workdir / "tensorboard"), purge_step=purge_step)
            self._jsonl = open(self.workdir / "metrics.jsonl", "a")

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: float(v) for k, v in scalars.items()}
        self._jsonl.write(json.dumps({"step": int(step), **clean}) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for key, value in clean.items():
                self._tb.add_scalar(key, value, int(step))
            self._tb.flush()

    def write_images(self, step: int, name: str, grid: np.ndarray) -> Path | None:
        if not self.enabled:
            return None
        path = self.workdir / "images" / f"{name}_{int(step):08d}.png"
        save_png(path, grid)
        if self._tb is not None:
            self._tb.add_image(name, grid, int(step), dataformats="HWC")
        return path

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            if self._tb is not None:
                self._tb.close()


class Progress:
    """A one-line console progress report: step, images/s and ETA (process 0 only)."""

    def __init__(self, total_steps: int, start_step: int, enabled: bool = True):
        self.total = total_steps
        self.enabled = enabled
        self.start_step = start_step
        self.start_time = time.perf_counter()
        self._bar = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)

    def update(self, step: int, **postfix) -> None:
        if self._bar is not None:
            self._bar.n = step
            self._bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v)
                                   for k, v in postfix.items()}, refresh=False)
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
