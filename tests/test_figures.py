"""PNG grids made for people: pairs side by side, nearest-neighbour upscaled, a caption row."""

import numpy as np
from PIL import Image

from vqjax.train import metrics_writer


def test_comparison_grid_places_each_pair_side_by_side():
    rng = np.random.default_rng(0)
    inputs = rng.uniform(-1, 1, (6, 4, 5, 3)).astype(np.float32)
    outputs = rng.uniform(-1, 1, (6, 4, 5, 3)).astype(np.float32)
    grid = metrics_writer.comparison_grid(inputs, outputs, pairs_per_row=4, pad=2)
    to_uint8 = lambda x: np.clip(np.round((x + 1) * 127.5), 0, 255).astype(np.uint8)  # noqa: E731
    pair_width, gap = 2 * 5 + 2, 6
    assert grid.shape == (2 * (4 + 2) + 2, 4 * (pair_width + gap) - gap + 4, 3)
    for i in range(6):
        r, c = divmod(i, 4)
        y, x = 2 + r * 6, 2 + c * (pair_width + gap)
        np.testing.assert_array_equal(grid[y:y + 4, x:x + 5], to_uint8(inputs[i]))
        np.testing.assert_array_equal(grid[y:y + 4, x + 7:x + 12], to_uint8(outputs[i]))
    assert (grid[:2] == 255).all()  # padding is white


def test_figure_is_wide_enough_sharp_and_captioned(tmp_path):
    grid = np.random.default_rng(1).integers(0, 256, (38, 138, 3), dtype=np.uint8)  # 32 px crops
    fig = metrics_writer.figure(grid, "step 200: inputs (left) and reconstructions (right)")
    factor = -(-512 // 138)
    assert fig.shape[1] == 138 * factor >= 512
    caption_rows = fig.shape[0] - 38 * factor
    assert caption_rows > 10
    # Nearest neighbour: each source pixel becomes a factor x factor block, exactly.
    body = fig[caption_rows:]
    np.testing.assert_array_equal(body[::factor, ::factor], grid)
    np.testing.assert_array_equal(body, np.repeat(np.repeat(grid, factor, 0), factor, 1))
    # The caption row holds dark text on white.
    caption = fig[:caption_rows]
    assert (caption == 255).mean() > 0.8 and caption.min() < 100
    path = tmp_path / "grid.png"
    metrics_writer.save_png(path, fig)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), fig)


def test_figure_leaves_wide_grids_at_their_size():
    grid = np.zeros((100, 600, 1), np.uint8)
    fig = metrics_writer.figure(grid, "a long caption " * 20)
    assert fig.shape[1] == 600 and fig.shape[2] == 3  # greyscale becomes RGB
    assert fig.shape[0] > 100 + 40  # the long caption wraps over several lines
