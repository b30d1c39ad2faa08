"""Splits: sizes, stratification, no overlap, reproducible; the npz loader; the tf.data pipeline."""

from __future__ import annotations

import math

import numpy as np
import pytest

from experiments.checks import ConfigError
from experiments.data import load_splits, make_pipeline, steps_per_epoch


def rows(x: np.ndarray) -> set[bytes]:
    return {image.tobytes() for image in x}


def test_digits_split_sizes_scaling_and_shape(compose_cfg):
    splits = load_splits(compose_cfg().data, seed=0)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 1797
    # scikit-learn rounds a held-out share up
    assert len(splits.test) == math.ceil(1797 * 0.15) == 270
    assert len(splits.val) == math.ceil((1797 - 270) * 0.15) == 230
    assert splits.input_shape == (8, 8, 1) and splits.num_classes == 10
    assert splits.train.x.dtype == np.float32
    assert 0.0 <= splits.train.x.min() and splits.train.x.max() == pytest.approx(1.0)


def test_splits_do_not_overlap(compose_cfg):
    splits = load_splits(compose_cfg().data, seed=0)
    train, val, test = rows(splits.train.x), rows(splits.val.x), rows(splits.test.x)
    # digits holds a few duplicate images; compare index-free by content, allowing those
    assert len(train & test) <= 2 and len(train & val) <= 2 and len(val & test) <= 2
    assert len(train) + len(val) + len(test) >= 1797 - 6


def test_splits_are_stratified(compose_cfg):
    splits = load_splits(compose_cfg().data, seed=0)
    overall = np.bincount(np.concatenate([splits.train.y, splits.val.y, splits.test.y])) / 1797
    for part in (splits.train, splits.val, splits.test):
        share = np.bincount(part.y, minlength=10) / len(part)
        assert np.abs(share - overall).max() < 0.01


def test_same_seed_same_split_other_seed_other_split(compose_cfg):
    data = compose_cfg().data
    first, again, other = load_splits(data, seed=1), load_splits(data, seed=1), load_splits(data, seed=2)
    assert np.array_equal(first.test.y, again.test.y) and np.array_equal(first.val.x, again.val.x)
    assert not np.array_equal(first.test.x, other.test.x)
    assert [part.digest() for part in (first.train, first.val, first.test)] == [
        part.digest() for part in (again.train, again.val, again.test)
    ]
    assert first.test.digest() != other.test.digest()


def test_k_folds_validate_on_disjoint_folds_of_the_training_data_and_share_the_test_split(compose_cfg):
    folds = [load_splits(compose_cfg("data.folds=3", f"data.fold={k}").data, seed=1) for k in range(3)]
    plain = load_splits(compose_cfg().data, seed=1)
    pool = len(plain.train) + len(plain.val)  # the training data: all but the test split
    assert len({fold.test.digest() for fold in folds}) == 1 and folds[0].test.digest() == plain.test.digest()
    assert len({fold.val.digest() for fold in folds}) == 3
    validated = [{row.tobytes() for row in fold.val.x.reshape(len(fold.val), -1)} for fold in folds]
    assert not (validated[0] & validated[1]) and not (validated[1] & validated[2]) and not (validated[0] & validated[2])
    for fold in folds:
        assert len(fold.train) + len(fold.val) == pool and abs(len(fold.val) - pool / 3) <= 10
        share = np.bincount(fold.val.y, minlength=10) / len(fold.val)
        assert np.abs(share - np.bincount(fold.train.y, minlength=10) / len(fold.train)).max() < 0.02  # stratified


def test_fractions_are_configurable(compose_cfg):
    splits = load_splits(compose_cfg("data.test_fraction=0.5", "data.val_fraction=0.5").data, seed=0)
    assert len(splits.test) == math.ceil(1797 * 0.5)
    assert abs(len(splits.val) - len(splits.train)) <= 1


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_npz_with_its_own_test_split(compose_cfg, tmp_path):
    rng = np.random.default_rng(0)
    file = write_npz(
        tmp_path / "own.npz",
        x_train=rng.integers(0, 256, (200, 6, 6), dtype=np.uint8),
        y_train=np.arange(200) % 4,
        x_test=rng.integers(0, 256, (40, 6, 6), dtype=np.uint8),
        y_test=np.arange(40) % 4,
    )
    splits = load_splits(compose_cfg("data=npz", f"data.path={file}").data, seed=0)
    assert len(splits.test) == 40 and len(splits.train) + len(splits.val) == 200
    assert splits.num_classes == 4 and splits.input_shape == (6, 6, 1)
    assert splits.train.x.max() <= 1.0  # uint8 scaled by 255


def test_npz_without_test_split_and_colour_images(compose_cfg, tmp_path):
    file = write_npz(
        tmp_path / "rgb.npz", x_train=np.random.rand(100, 5, 5, 3).astype("float32"), y_train=np.arange(100) % 2
    )
    splits = load_splits(compose_cfg("data=npz", f"data.path={file}").data, seed=0)
    assert splits.input_shape == (5, 5, 3) and len(splits.test) == 15


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x_train": np.zeros((10, 4, 4))}, "lacks y_train"),
        (
            {"x_train": np.zeros((10, 4, 4)), "y_train": np.zeros(9, int)},
            "x_train has 10 images but y_train has 9 labels",
        ),
        ({"x_train": np.zeros((10, 16)), "y_train": np.zeros(10, int)}, "expected images of shape"),
        ({"x_train": np.full((10, 4, 4), np.nan), "y_train": np.zeros(10, int)}, "NaN or infinite"),
        ({"x_train": np.zeros((10, 4, 4)), "y_train": np.full(10, 0.5)}, "expected integer class labels"),
        ({"x_train": np.zeros((10, 4, 4)), "y_train": np.full(10, -1)}, "labels must be >= 0"),
        ({"x_train": np.zeros((0, 4, 4)), "y_train": np.zeros(0, int)}, "N > 0"),
        (
            {"x_train": np.zeros((10, 4, 4)), "y_train": np.zeros(10, int), "x_test": np.zeros((2, 4, 4))},
            "only one of x_test",
        ),
    ],
)
def test_bad_npz_contents_are_refused_with_the_file_named(compose_cfg, tmp_path, arrays, message):
    file = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ConfigError, match=message) as refused:
        load_splits(compose_cfg("data=npz", f"data.path={file}").data, seed=0)
    assert "bad.npz" in str(refused.value)  # the file is named


@pytest.mark.parametrize(
    ("name", "write"),
    [
        ("one_array.npz", lambda path: np.save(open(path, "wb"), np.zeros((10, 4, 4)))),
        ("notes.npz", lambda path: path.write_text("x_train,y_train\n")),
    ],
)
def test_a_file_that_is_no_npz_archive_is_refused_with_the_file_named(compose_cfg, tmp_path, name, write):
    write(tmp_path / name)
    with pytest.raises(ConfigError, match=f"data.path=.*{name}: not a readable .npz file \\(expected a zip archive"):
        load_splits(compose_cfg("data=npz", f"data.path={tmp_path / name}").data, seed=0)


def test_pipeline_batches_and_shuffles_reproducibly(compose_cfg):
    splits = load_splits(compose_cfg().data, seed=0)
    steps = steps_per_epoch(splits.val, 32)
    passes = [
        np.concatenate([y.numpy() for _, y in make_pipeline(splits.val, 32, shuffle_seed=5).take(2 * steps)])
        for _ in range(2)
    ]
    plain = np.concatenate([y.numpy() for _, y in make_pipeline(splits.val, 32)])
    assert steps == int(np.ceil(len(splits.val) / 32)) and len(plain) == len(splits.val)
    assert np.array_equal(plain, splits.val.y)  # unshuffled for validation and test
    first, second = passes[0][: len(plain)], passes[0][len(plain) :]
    assert np.array_equal(passes[0], passes[1])  # same seed, same orders
    assert sorted(first) == sorted(plain) and not np.array_equal(first, second)  # a new order every pass


def test_resumed_pipeline_sees_the_orders_it_would_have_seen(compose_cfg):
    splits = load_splits(compose_cfg().data, seed=0)
    steps = steps_per_epoch(splits.train, 32)
    straight = [y.numpy() for _, y in make_pipeline(splits.train, 32, shuffle_seed=3).take(3 * steps)]
    resumed = [y.numpy() for _, y in make_pipeline(splits.train, 32, shuffle_seed=3, start_epoch=2).take(steps)]
    assert all(np.array_equal(a, b) for a, b in zip(straight[2 * steps :], resumed))


def test_more_folds_than_a_class_has_examples_is_one_line(compose_cfg):
    with pytest.raises(ConfigError) as refused:
        load_splits(compose_cfg("data.folds=500", "data.fold=0").data, seed=1)
    assert str(refused.value).startswith("data=digits: cannot make data.folds=500 folds of 1527 samples: ")
