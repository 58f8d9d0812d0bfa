"""vqjax.data: built-in tfds datasets (offline, array_record) and the grain input pipeline."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from vqjax import data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """One data_dir for the whole session (shared by xdist workers: their builds meet the lock)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    path = str(root / "tensorflow_datasets")
    data.build_builtin(path)
    return path


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


class IndexedSource:
    """N tiny images whose label is their record index, so a batch says which records it holds."""

    def __init__(self, n, corrupt=(), unreadable=()):
        rng = np.random.default_rng(0)
        self.images = rng.integers(0, 256, (n, 12, 16, 3), dtype=np.uint8)
        self.corrupt, self.unreadable = set(corrupt), set(unreadable)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        if i in self.unreadable:
            raise OSError(f"cannot read record {i}")
        image = b"\x89PNG\r\n garbage" if i in self.corrupt else _png(self.images[i])
        return {"image": image, "label": i}


def _pipeline(dataset, data_dir=None, *, batch=8, size=16, seed=0, p=0, n=1, **kw):
    return data.input_pipeline(
        dataset, "train" if "split" not in kw else kw.pop("split"), batch, size, seed,
        process_index=p, process_count=n, data_dir=data_dir, **kw,
    )


def _take(iterator, num):
    return [next(iterator) for _ in range(num)]


# --------------------------------------------------------------------------------------------
# Built-in datasets
# --------------------------------------------------------------------------------------------


def test_builtin_datasets_build_offline_and_load_through_tfds(data_dir):
    photos = tfds.data_source("vqjax_photos", data_dir=data_dir)
    digits = tfds.data_source("vqjax_digits", data_dir=data_dir)
    assert set(photos) == set(digits) == {"train", "validation"}
    assert len(digits["train"]) == 1500 and len(digits["validation"]) == 297
    assert len(photos["train"]) > 500 and len(photos["validation"]) > 100

    example = photos["train"][0]
    assert example["image"].shape == (64, 64, 3) and example["image"].dtype == np.uint8
    assert example["image"].std() > 0  # a real crop, not a blank
    assert photos["train"].dataset_info.features["label"].num_classes == len(data.builtin.PHOTO_NAMES)

    labels = [digits["validation"][i]["label"] for i in range(len(digits["validation"]))]
    assert set(labels) == set(range(10))
    assert digits["train"][0]["image"].shape == (32, 32, 3)
    assert digits["train"].dataset_info.features["label"].num_classes == 10

    version_dir = os.path.join(data_dir, "vqjax_photos", "64", "1.0.0")
    assert any(f.startswith("vqjax_photos-train.array_record") for f in os.listdir(version_dir))


def test_builtin_splits_share_no_pixels():
    photos = data.builtin.load_photos()
    assert len(photos) == len(data.builtin.PHOTO_NAMES)  # all ship in the installed wheels
    splits = data.builtin.photo_crops(photos, 64)

    def rows(key):  # full-resolution rows a crop covers
        scale, y = float(key.split("_s")[1].split("_")[0]), int(key.split("_y")[1].split("_")[0])
        return y, y + 64 / scale

    for name in photos:
        train = [rows(k) for k, _, _ in splits["train"] if k.startswith(name + "_s")]
        validation = [rows(k) for k, _, _ in splits["validation"] if k.startswith(name + "_s")]
        assert train and validation, name
        assert max(bottom for _, bottom in train) <= min(top for top, _ in validation) + 1, name


def test_build_is_idempotent_and_safe_when_concurrent(tmp_path):
    code = (
        "import sys; from vqjax.data import builtin; "
        "print(builtin.build_builtin(sys.argv[1], ('vqjax_digits/32',)))"
    )
    env = {**os.environ, "PYTHONPATH": REPO}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        assert "vqjax_digits/32/1.0.0" in out
    assert os.listdir(tmp_path / "vqjax_digits" / "32") == ["1.0.0"]  # no stray incomplete.* dirs
    data.build_builtin(str(tmp_path), ("vqjax_digits/32",))  # again: reuses, does not rebuild
    assert len(tfds.data_source("vqjax_digits", split="train", data_dir=str(tmp_path))) == 1500


def test_missing_dataset_gives_a_clear_error(tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as error:
        data.make_source("cifar10", "train", data_dir=str(tmp_path))
    message = str(error.value)
    assert "'cifar10'" in message and str(tmp_path) in message and "tfds build cifar10" in message

    with pytest.raises(data.DatasetNotFoundError, match="downloads/manual"):
        data.input_pipeline("imagenet2012", "train", 8, 32, process_index=0, process_count=1,
                            data_dir=str(tmp_path))
    with pytest.raises(data.DatasetNotFoundError, match="no_such_dataset_xyz"):
        data.make_source("no_such_dataset_xyz", "train", data_dir=str(tmp_path))


# --------------------------------------------------------------------------------------------
# Pipeline
# --------------------------------------------------------------------------------------------


def test_batches_have_the_documented_shapes_dtypes_and_range(data_dir):
    iterator = _pipeline("vqjax_photos", data_dir, batch=8, size=48)
    batch = next(iterator)
    assert set(batch) == {"image", "label"}
    assert batch["image"].shape == (8, 48, 48, 3) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (8,) and batch["label"].dtype == np.int32
    assert -1.0 <= batch["image"].min() < batch["image"].max() <= 1.0
    assert iterator.info.num_classes == len(data.builtin.PHOTO_NAMES)
    assert iterator.info.local_batch_size == 8

    digits = _pipeline("vqjax_digits", data_dir, batch=16, size=32, p=1, n=2)
    batch = next(digits)
    assert batch["image"].shape == (8, 32, 32, 3) and digits.info.num_classes == 10
    assert 0 <= batch["label"].min() and batch["label"].max() <= 9


def test_same_seed_same_batches_other_seed_other_batches(data_dir):
    first = _take(_pipeline("vqjax_photos", data_dir, seed=7), 3)
    again = _take(_pipeline("vqjax_photos", data_dir, seed=7), 3)
    other = _take(_pipeline("vqjax_photos", data_dir, seed=8), 3)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
    assert not np.array_equal(first[0]["image"], other[0]["image"])


@pytest.mark.parametrize("process_count", [2, 4])
def test_union_of_process_slices_is_the_global_batch(process_count):
    source = IndexedSource(37)  # 37 records, batch 8: steps 4 and 9 straddle epoch boundaries
    steps = 10
    whole = _take(_pipeline(source, batch=8, seed=3), steps)
    parts = [_take(_pipeline(source, batch=8, seed=3, p=p, n=process_count), steps)
             for p in range(process_count)]
    for step in range(steps):
        for key in ("image", "label"):
            union = np.concatenate([parts[p][step][key] for p in range(process_count)])
            np.testing.assert_array_equal(union, whole[step][key])


def test_union_of_process_slices_on_a_tfds_dataset(data_dir):
    whole = _take(_pipeline("vqjax_digits", data_dir, batch=12, seed=1), 2)
    parts = [
        _take(_pipeline("vqjax_digits", data_dir, batch=12, seed=1, p=p, n=4), 2) for p in range(4)
    ]
    for step in range(2):
        union = np.concatenate([parts[p][step]["image"] for p in range(4)])
        np.testing.assert_array_equal(union, whole[step]["image"])


def test_every_epoch_is_a_fresh_permutation():
    source = IndexedSource(24)
    labels = np.concatenate([b["label"] for b in _take(_pipeline(source, batch=8), 6)])
    epoch_0, epoch_1 = labels[:24], labels[24:]
    assert sorted(epoch_0) == sorted(epoch_1) == list(range(24))
    assert not np.array_equal(epoch_0, epoch_1) and not np.array_equal(epoch_0, np.arange(24))


def test_iterator_state_restores_exactly_even_on_another_topology(data_dir):
    iterator = _pipeline("vqjax_photos", data_dir, seed=5)
    _take(iterator, 3)
    state = json.loads(json.dumps(iterator.get_state()))  # as a checkpoint stores it
    expected = _take(iterator, 2)
    assert state["step"] == 3

    restored = _pipeline("vqjax_photos", data_dir, seed=5)
    restored.set_state(state)
    for a, b in zip(expected, _take(restored, 2)):
        np.testing.assert_array_equal(a["image"], b["image"])

    halves = [_pipeline("vqjax_photos", data_dir, seed=5, p=p, n=2) for p in range(2)]
    for half in halves:
        half.set_state(state)
    np.testing.assert_array_equal(
        np.concatenate([next(h)["image"] for h in halves]), expected[0]["image"]
    )

    with pytest.raises(ValueError, match="seed"):
        _pipeline("vqjax_photos", data_dir, seed=6).set_state(state)


def test_unreadable_examples_are_skipped_and_counted(caplog):
    corrupt, unreadable = {3, 17}, {9}
    source = IndexedSource(40, corrupt=corrupt, unreadable=unreadable)
    iterator = _pipeline(source, batch=8, seed=2)
    with caplog.at_level("WARNING"):
        batches = _take(iterator, 5)  # exactly one epoch
    labels = np.concatenate([b["label"] for b in batches])
    assert iterator.num_skipped == 3 and iterator.get_state()["num_skipped"] == 3
    assert not set(labels) & (corrupt | unreadable)  # replaced by readable neighbours
    assert all(np.isfinite(b["image"]).all() for b in batches)
    assert "unreadable" in caplog.text

    evaluation = _pipeline(source, batch=16, seed=2, train=False, split="validation")
    batches = list(evaluation)
    mask = np.concatenate([b["mask"] for b in batches])
    labels = np.concatenate([b["label"] for b in batches])
    assert evaluation.num_skipped == 3 and mask.sum() == 40 - 3 and len(mask) == 48
    assert sorted(labels[mask]) == sorted(set(range(40)) - corrupt - unreadable)


def test_eval_covers_each_example_once_in_order_with_padding_masked():
    source = IndexedSource(21)
    parts = [list(_pipeline(source, batch=8, p=p, n=2, train=False)) for p in range(2)]
    assert [len(part) for part in parts] == [3, 3]
    labels, mask = [], []
    for step in range(3):
        for p in range(2):
            labels.append(parts[p][step]["label"])
            mask.append(parts[p][step]["mask"])
    labels, mask = np.concatenate(labels), np.concatenate(mask)
    np.testing.assert_array_equal(labels[mask], np.arange(21))
    assert mask.sum() == 21 and not mask[21:].any()


def test_grain_threads_and_workers_do_not_change_batches(data_dir):
    reference = _take(_pipeline("vqjax_digits", data_dir, batch=8, seed=4), 4)
    with _pipeline("vqjax_digits", data_dir, batch=8, seed=4, num_threads=2) as threaded:
        threaded_batches = _take(threaded, 4)
    with _pipeline("vqjax_digits", data_dir, batch=8, seed=4, num_workers=1) as workers:
        worker_batches = [{k: np.array(v) for k, v in b.items()} for b in _take(workers, 4)]
    for a, b, c in zip(reference, threaded_batches, worker_batches):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["image"], c["image"])


def test_random_resized_crop_and_center_crop():
    crop = data.RandomResizedCrop(16, area_range=(0.25, 0.5))
    rng = np.random.default_rng(0)
    for _ in range(50):
        left, top, right, bottom = crop.crop_box(60, 80, rng)
        assert 0 <= left < right <= 80 and 0 <= top < bottom <= 60
        area = (right - left) * (bottom - top) / (60 * 80)
        assert 0.2 < area < 0.55
        assert 0.7 < (right - left) / (bottom - top) < 1.4

    image = np.zeros((40, 60, 3), np.uint8)
    image[:, 10:50] = 255  # the central 40x40 square is white, the side bands black
    out = data.CenterCrop(20).map({"image": image})["image"]
    assert out.shape == (20, 20, 3) and out[:, 1:-1].min() == 255  # (the filter reaches 1px past)
    assert out.min() > 200
    flipped = data.RandomFlip().random_map({"image": image[:, :30]}, np.random.default_rng(1))
    assert flipped["image"].shape == (40, 30, 3)
