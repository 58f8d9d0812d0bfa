"""vqjax.data on image folders (`dataset.name="image_folder"`): layout and labels, decoding of every
image mode to RGB, the guarantees of the tfds path (same global batch at any process count, exact
resume, unreadable files skipped and counted, file list cached), the errors, and
launch/prepare_data.py's array_record export."""

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from vqjax import data
from vqjax.data import folder

CLASSES = ("cat", "dog", "zebra")


def _save(path, image, **kwargs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, **kwargs)


def _photo(rng, height=24, width=32):
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def make_folder(root, per_class=5, val_per_class=2, seed=0):
    """root/train/{cat,dog,zebra}/ in JPEG, PNG and WebP (one per class greyscale, CMYK, RGBA),
    root/val/ alike; returns {split: {relative path: class}}."""
    rng = np.random.default_rng(seed)
    layout = {"train": {}, "val": {}}
    for split, count in (("train", per_class), ("val", val_per_class)):
        for label, name in enumerate(CLASSES):
            for i in range(count):
                image = _photo(rng, 20 + i, 28 + 2 * i)
                kind = i % 5
                if kind == 0:
                    path, kwargs = f"{name}/{i}.jpg", {"quality": 90}
                elif kind == 1:
                    path, kwargs = f"{name}/{i}.PNG", {}
                elif kind == 2:
                    path, kwargs, image = f"{name}/{i}.webp", {"lossless": True}, image
                elif kind == 3:
                    path, kwargs, image = f"{name}/sub/{i}.jpeg", {}, image.convert("L")
                else:
                    path, kwargs, image = f"{name}/{i}.png", {}, image.convert("RGBA")
                _save(os.path.join(root, split, path), image, **kwargs)
                layout[split][path] = label
    (root / "train" / "README.txt").write_text("not an image")  # ignored (at the top level)
    return layout


def _pipeline(data_dir, split="train", *, batch=6, size=16, seed=0, p=0, n=1, **kw):
    return data.input_pipeline("image_folder", split, batch, size, seed, process_index=p,
                               process_count=n, data_dir=str(data_dir), **kw)


def _take(iterator, num):
    return [next(iterator) for _ in range(num)]


@pytest.fixture
def image_dir(tmp_path):
    make_folder(tmp_path / "images")
    return tmp_path / "images"


# --------------------------------------------------------------------------------------------
# Layout, labels, decoding
# --------------------------------------------------------------------------------------------


def test_class_folders_give_sorted_labels_and_val_uses_train_ids(image_dir):
    source = folder.ImageFolderSource(image_dir, "train")
    assert source.class_names == CLASSES and source.num_classes == 3 and len(source) == 15
    for i in range(len(source)):  # each file's label is its class folder's rank
        relative = os.path.relpath(source.path(i), source.root)
        assert source[i]["label"] == CLASSES.index(relative.split(os.sep)[0])
    validation = folder.ImageFolderSource(image_dir, "validation")  # DIR/val accepted
    assert validation.root.endswith("val") and len(validation) == 6
    assert sorted(set(validation.labels.tolist())) == [0, 1, 2]

    it = _pipeline(image_dir)
    batch = next(it)
    assert batch["image"].shape == (6, 16, 16, 3) and batch["image"].dtype == np.float32
    assert it.info.num_classes == 3 and it.info.class_names == CLASSES
    assert set(batch["label"].tolist()) <= {0, 1, 2}


def test_class_names_are_stored_in_the_config(image_dir):
    import ml_collections

    config = ml_collections.ConfigDict(
        {"name": "image_folder", "data_dir": str(image_dir), "train_split": "train"})
    config.lock()
    data.record_class_names(config)
    assert list(config.class_names) == list(CLASSES)
    assert json.loads(json.dumps(config.to_dict()))["class_names"] == list(CLASSES)

    flat_only = ml_collections.ConfigDict(
        {"name": "image_folder", "data_dir": str(image_dir), "eval_split": "test"})
    with pytest.raises(data.DatasetNotFoundError, match="eval_every_steps=0"):
        data.record_class_names(flat_only, require_eval_split=True)
    data.record_class_names(flat_only)  # no evaluation: no eval split needed


def test_flat_folder_is_unlabelled(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(7):
        _save(str(tmp_path / "train" / f"{i:02d}.jpg"), _photo(rng))
    source = folder.ImageFolderSource(tmp_path, "train")
    assert source.class_names == () and source.num_classes is None
    it = _pipeline(tmp_path, batch=4)
    batch = next(it)
    assert it.info.num_classes is None and it.info.class_names is None
    assert batch["label"].tolist() == [0, 0, 0, 0]


def test_every_image_mode_becomes_rgb():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    base = Image.fromarray(rgb)

    def decoded(image, fmt, **kwargs):
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **kwargs)
        out = data.DecodeImage().map({"image": buffer.getvalue()})["image"]
        assert out.shape == (9, 11, 3) and out.dtype == np.uint8, (image.mode, fmt)
        return out

    np.testing.assert_array_equal(decoded(base, "PNG"), rgb)
    np.testing.assert_array_equal(decoded(base, "WEBP", lossless=True), rgb)
    grey = decoded(base.convert("L"), "PNG")
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    cmyk = decoded(base.convert("CMYK"), "JPEG", quality=100)
    assert np.abs(cmyk.astype(int) - rgb).mean() < 12  # JPEG-lossy, but the same picture
    # Transparency is composited over white: a fully transparent pixel shows white, whatever
    # colour it stores; an opaque one its colour.
    rgba = np.dstack([rgb, np.full((9, 11), 255, np.uint8)])
    rgba[0, 0] = (10, 20, 30, 0)
    out = decoded(Image.fromarray(rgba, "RGBA"), "PNG")
    assert out[0, 0].tolist() == [255, 255, 255] and (out[1:] == rgb[1:]).all()
    la = decoded(Image.fromarray(rgba, "RGBA").convert("LA"), "PNG")
    assert la[0, 0].tolist() == [255, 255, 255]
    palette = base.convert("P")
    palette.info["transparency"] = palette.getpixel((0, 0))
    assert decoded(palette, "PNG", transparency=palette.getpixel((0, 0)))[0, 0].tolist() == [
        255, 255, 255]
    sixteen = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
    np.testing.assert_array_equal(decoded(sixteen, "PNG")[..., 0], rgb[..., 0])
    # EXIF orientation 6 (rotate 90 degrees clockwise to display): the decoded image is upright.
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    base.save(buffer, format="JPEG", quality=100, exif=exif)
    upright = data.DecodeImage().map({"image": buffer.getvalue()})["image"]
    assert upright.shape == (11, 9, 3)


# --------------------------------------------------------------------------------------------
# The guarantees of the tfds path
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("process_count", [2, 3])
def test_union_of_process_slices_is_the_global_batch(image_dir, process_count):
    whole = _take(_pipeline(image_dir, seed=3), 4)  # 15 images, batch 6: epochs straddled
    parts = [_take(_pipeline(image_dir, seed=3, p=p, n=process_count), 4)
             for p in range(process_count)]
    for step in range(4):
        for key in ("image", "label"):
            union = np.concatenate([parts[p][step][key] for p in range(process_count)])
            np.testing.assert_array_equal(union, whole[step][key])


def test_resume_at_the_exact_position(image_dir):
    iterator = _pipeline(image_dir, seed=5)
    _take(iterator, 3)
    state = json.loads(json.dumps(iterator.get_state()))  # as a checkpoint stores it
    expected = _take(iterator, 2)
    restored = _pipeline(image_dir, seed=5, p=1, n=2)  # on another topology, too
    restored.set_state(state)
    other = _pipeline(image_dir, seed=5, p=0, n=2)
    other.set_state(state)
    for step in range(2):
        np.testing.assert_array_equal(
            np.concatenate([next(other)["image"], next(restored)["image"]]),
            expected[step]["image"])


def test_unreadable_and_corrupt_files_are_skipped_and_counted(image_dir, caplog):
    (image_dir / "train" / "dog" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (image_dir / "train" / "dog" / "empty.png").write_bytes(b"")
    os.symlink(image_dir / "nowhere.jpg", image_dir / "train" / "zebra" / "dangling.jpg")
    (image_dir / "train" / "cat" / "truncated.png").write_bytes(
        _png_bytes(np.zeros((30, 30, 3), np.uint8))[:60])
    iterator = _pipeline(image_dir, batch=19, seed=2)  # 15 good + 4 bad: exactly one epoch
    with caplog.at_level("WARNING"):
        batch = next(iterator)
    assert iterator.num_skipped == 4 and iterator.get_state()["num_skipped"] == 4
    assert np.isfinite(batch["image"]).all() and "unreadable" in caplog.text

    evaluation = _pipeline(image_dir, "train", batch=8, train=False)
    mask = np.concatenate([b["mask"] for b in evaluation])
    assert evaluation.num_skipped == 4 and mask.sum() == 15


def _png_bytes(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_file_list_is_built_once_and_cached(image_dir, monkeypatch):
    first = folder.ImageFolderSource(image_dir, "train")
    assert (image_dir / ".vqjax_cache" / "train.npz").is_file()

    def no_walk(root):
        raise AssertionError(f"walked {root} again")

    monkeypatch.setattr(folder, "scan", no_walk)
    again = folder.ImageFolderSource(image_dir, "train")
    np.testing.assert_array_equal(again.files, first.files)
    np.testing.assert_array_equal(again.labels, first.labels)
    monkeypatch.undo()

    # A file added to a class folder changes that folder's mtime: the list is rebuilt.
    _save(str(image_dir / "train" / "dog" / "new.png"), _photo(np.random.default_rng(9)))
    assert len(folder.ImageFolderSource(image_dir, "train")) == len(first) + 1


def test_read_only_folder_caches_in_the_user_cache(image_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(folder, "USER_CACHE_DIR", tmp_path / "user_cache")
    (image_dir / ".vqjax_cache").write_text("a file where the cache folder would go")
    folder.ImageFolderSource(image_dir, "train")
    assert len(list((tmp_path / "user_cache").glob("train-*.npz"))) == 1


def test_grain_worker_processes_decode_the_same_batches(image_dir):
    reference = _take(_pipeline(image_dir, seed=4), 3)
    with _pipeline(image_dir, seed=4, num_workers=1) as workers:
        worker_batches = [{k: np.array(v) for k, v in b.items()} for b in _take(workers, 3)]
    for a, b in zip(reference, worker_batches):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_errors_list_what_was_found(tmp_path):
    (tmp_path / "training").mkdir()
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(data.DatasetNotFoundError) as error:
        _pipeline(tmp_path)
    message = str(error.value)
    assert "no 'train' split" in message and "training/" in message and "notes.txt" in message

    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "train" / "a" / "x.gif").write_bytes(b"GIF89a")
    (tmp_path / "train" / "a" / "y.txt").write_text("")
    with pytest.raises(data.DatasetNotFoundError) as error:
        _pipeline(tmp_path)
    message = str(error.value)
    assert "no images" in message and ".gif" in message and ".txt" in message
    assert ".jpg" in message and ".webp" in message  # what it looked for

    with pytest.raises(data.DatasetNotFoundError, match="needs dataset.data_dir"):
        data.input_pipeline("image_folder", "train", 4, 16, process_index=0, process_count=1)
    with pytest.raises(data.DatasetNotFoundError, match="not a directory"):
        _pipeline(tmp_path / "missing")

    rng = np.random.default_rng(0)
    _save(str(tmp_path / "mixed" / "train" / "loose.jpg"), _photo(rng))
    _save(str(tmp_path / "mixed" / "train" / "cls" / "a.jpg"), _photo(rng))
    with pytest.raises(data.DatasetNotFoundError, match="mixes 1 images"):
        _pipeline(tmp_path / "mixed")


def test_validation_class_unknown_to_train_is_an_error(image_dir):
    _save(str(image_dir / "val" / "unicorn" / "a.png"), _photo(np.random.default_rng(0)))
    with pytest.raises(data.DatasetNotFoundError, match="unicorn"):
        folder.ImageFolderSource(image_dir, "validation")


def test_mistyped_dataset_name_lists_what_exists(tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as error:
        data.make_source("image_foldr", "train", data_dir=str(tmp_path))
    message = str(error.value)
    for expected in ("'image_foldr'", "vqjax_photos", "vqjax_digits", "image_folder",
                     "--config.dataset.data_dir", "tfds build", "imagenet2012"):
        assert expected in message, expected
    assert "Did you mean image_folder?" in message
    with pytest.raises(data.DatasetNotFoundError, match="Did you mean imagenet2012"):
        data.make_source("imagenet2021", "train", data_dir=str(tmp_path))


# --------------------------------------------------------------------------------------------
# launch/prepare_data.py: the folder as tfds array_record files
# --------------------------------------------------------------------------------------------


def test_prepare_data_writes_a_tfds_dataset_the_pipeline_reads(image_dir, tmp_path, capsys):
    from launch import prepare_data

    (image_dir / "train" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 broken")
    args = ["--from=image_folder", f"--data_dir={image_dir}", f"--out={tmp_path / 'tfds'}",
            "--image_size=22", "--workers=1"]
    result = prepare_data.main(args)
    out = capsys.readouterr().out
    assert result["name"] == "images/22" and result["splits"] == {"train": 15, "validation": 6}
    assert "broken.jpg" in out and "--config.dataset.name=images/22" in out

    source = data.make_source("images/22", "train", str(tmp_path / "tfds"))
    assert len(source) == 15
    original_sides = []
    for path in (image_dir / "train").rglob("*"):
        if path.suffix.lower() in folder.IMAGE_EXTENSIONS and path.name != "broken.jpg":
            with Image.open(path) as pil:
                original_sides.append(min(pil.size))
    exported_sides = [min(source[i]["image"].shape[:2]) for i in range(len(source))]
    assert all(source[i]["image"].shape[-1] == 3 for i in range(len(source)))
    # the shorter side resized down to 22; smaller images kept as they are (never upscaled)
    assert sorted(exported_sides) == sorted(min(side, 22) for side in original_sides)
    assert source.dataset_info.features["label"].names == list(CLASSES)

    it = data.input_pipeline("images/22", "train", 5, 16, 0, process_index=0, process_count=1,
                             data_dir=str(tmp_path / "tfds"))
    assert next(it)["image"].shape == (5, 16, 16, 3) and it.info.class_names == CLASSES
    with pytest.raises(SystemExit, match="already holds"):
        prepare_data.main(args)  # nothing already written is replaced


# --------------------------------------------------------------------------------------------
# End to end: a tokenizer trains on an image folder
# --------------------------------------------------------------------------------------------


def test_tokenizer_trains_on_an_image_folder(image_dir, tmp_path):
    from tests.train_utils import micro_config, read_metrics
    from vqjax.train import run

    (image_dir / "train" / "dog" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    config = micro_config(image_dir, **{
        "dataset.name": "image_folder", "total_steps": 2, "log_every_steps": 2,
        "checkpoint_every_steps": 2, "eval_every_steps": 2, "image_every_steps": 100,
        "batch_size": 16, "eval_examples": 6})
    config.lock()  # as launch.train's config flag
    run(config, str(tmp_path / "run"))
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["dataset"]["class_names"] == list(CLASSES)  # label id -> class folder
    last = read_metrics(tmp_path / "run")
    train = [m for m in last if "loss/loss" in m][-1]
    assert train["data/skipped_examples"] == 2  # 16 files, batches of 16: one pass per step
    assert any("eval/psnr" in m and m["eval/examples"] == 6 for m in last)
