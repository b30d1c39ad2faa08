"""Data sets -> checked arrays -> stratified, seeded splits -> tf.data pipelines.

Loading and checking use NumPy only, so a bad file is refused before TensorFlow loads.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from experiments.checks import ConfigError
from plugins.errors import first_line


@dataclass(frozen=True)
class Split:
    """Images (N, H, W, C) as float32 and integer labels (N,)."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def digest(self) -> str:
        """A short fingerprint of the images and labels: two runs validated on the same examples share it."""
        sha = hashlib.sha256(np.ascontiguousarray(self.x).tobytes())
        sha.update(np.ascontiguousarray(self.y).tobytes())
        return sha.hexdigest()[:12]

    def __repr__(self) -> str:
        return f"Split({len(self)} samples of {self.x.shape[1:]})"


@dataclass(frozen=True)
class Splits:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


@dataclass(frozen=True)
class RawData:
    """What a loader returns: a training part and, when the data set has one, a test part."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    source: str = ""


def load_digits() -> RawData:
    """scikit-learn's bundled 8x8 digits (no download)."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    return RawData(digits.images, digits.target, source="sklearn.datasets.load_digits")


def load_keras_dataset(name: str) -> RawData:
    """mnist, fashion_mnist or cifar10 from keras.datasets (downloaded once, then cached)."""
    import keras

    cache = Path.home() / ".keras" / "datasets"
    try:
        (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, name).load_data()
    except Exception as error:  # urllib, ssl, tarfile, ...: all mean "no usable file here"
        raise ConfigError(
            f"data={name}: could not download or read the data set ({type(error).__name__}: {error}); "
            f"without network access, put the file keras.datasets.{name} downloads into {cache}/"
        ) from None
    return RawData(x_train, y_train, x_test, y_test, source=f"keras.datasets.{name}")


def load_npz(path: str, max_gib: float) -> RawData:
    """A user's .npz with x_train, y_train and optionally x_test, y_test; none larger than ``max_gib``."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"data.path={path}: no such file")
    if not zipfile.is_zipfile(file):  # np.load would read a .npy array, or call anything else pickled data
        raise ConfigError(
            f"data.path={path}: not a readable .npz file (expected a zip archive of arrays, "
            "as np.savez writes; a .npy file holds one array)"
        )
    _refuse_large_arrays(file, path, max_gib)
    try:
        with np.load(file, allow_pickle=False) as arrays:
            found = {name: arrays[name] for name in arrays.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise ConfigError(f"data.path={path}: not a readable .npz file ({error})") from None
    missing = [name for name in ("x_train", "y_train") if name not in found]
    if missing:
        raise ConfigError(f"data.path={path}: lacks {', '.join(missing)} (has: {', '.join(found) or 'nothing'})")
    if ("x_test" in found) != ("y_test" in found):
        raise ConfigError(f"data.path={path}: has only one of x_test, y_test; give both or neither")
    return RawData(found["x_train"], found["y_train"], found.get("x_test"), found.get("y_test"), source=str(file))


def _refuse_large_arrays(file: Path, path: str, max_gib: float) -> None:
    """Read each array's size from the archive's own records and .npy headers, never its data: a
    header that claims a huge shape, or a small member that unpacks to gigabytes (a zip bomb), is
    refused before anything is allocated."""
    limit = max_gib * 2**30
    try:
        with zipfile.ZipFile(file) as archive:
            sizes = {member.filename: _stored_size(archive, member) for member in archive.infolist()}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise ConfigError(f"data.path={path}: not a readable .npz file ({first_line(error)})") from None
    for name, size in sizes.items():
        if size > limit:
            raise ConfigError(
                f"data.path={path}: {name} holds {_size(size)}, more than data.max_gib={max_gib:g}; nothing was read"
            )


def _size(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"


def _stored_size(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> int:
    """Bytes a member unpacks to, and for an array the bytes its header's shape and dtype claim."""
    if not member.filename.endswith(".npy"):
        return member.file_size
    with archive.open(member) as stream:
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(stream)
    return max(member.file_size, int(np.prod(shape, dtype=np.float64)) * dtype.itemsize)


def load_splits(data_cfg: DictConfig, seed: int) -> Splits:
    """Load the configured data set, check it and split it (stratified, seeded)."""
    raw = _load(data_cfg.loader)
    label = f"data={data_cfg.name}" + (f" ({raw.source})" if data_cfg.name == "npz" else "")
    x_train, y_train = (
        _images(raw.x_train, data_cfg.pixel_max, f"{label} x_train"),
        _labels(raw.y_train, f"{label} y_train"),
    )
    _check_lengths(x_train, y_train, label, "train")
    if raw.x_test is None:
        num_classes = _num_classes(data_cfg.num_classes, (y_train,), label)
        x_train, x_test, y_train, y_test = _stratified_split(x_train, y_train, data_cfg.test_fraction, seed, label)
    else:
        x_test, y_test = (
            _images(raw.x_test, data_cfg.pixel_max, f"{label} x_test"),
            _labels(raw.y_test, f"{label} y_test"),
        )
        _check_lengths(x_test, y_test, label, "test")
        if x_test.shape[1:] != x_train.shape[1:]:
            raise ConfigError(
                f"{label}: x_test images are {x_test.shape[1:]} but x_train images are {x_train.shape[1:]}"
            )
        num_classes = _num_classes(data_cfg.num_classes, (y_train, y_test), label)
    if data_cfg.get("folds") is None:
        x_train, x_val, y_train, y_val = _stratified_split(x_train, y_train, data_cfg.val_fraction, seed, label)
    else:
        x_train, x_val, y_train, y_val = _fold_split(x_train, y_train, data_cfg.folds, data_cfg.fold, seed, label)
    return Splits(data_cfg.name, Split(x_train, y_train), Split(x_val, y_val), Split(x_test, y_test), num_classes)


def _load(loader_cfg: DictConfig) -> RawData:
    try:
        return instantiate(loader_cfg)
    except InstantiationException as error:
        if isinstance(error.__cause__, ConfigError):
            raise error.__cause__ from None  # our message, without Hydra's wrapping
        raise


def _images(x: np.ndarray, pixel_max: float | None, what: str) -> np.ndarray:
    """Scale to [0, 1]-ish float32 with a channel axis: (N, H, W) -> (N, H, W, 1)."""
    x = np.asarray(x)
    if x.ndim not in (3, 4) or x.shape[0] == 0:
        raise ConfigError(f"{what}: expected images of shape (N, H, W) or (N, H, W, C) with N > 0, got {x.shape}")
    if not (np.issubdtype(x.dtype, np.number) and not np.issubdtype(x.dtype, np.complexfloating)):
        raise ConfigError(f"{what}: expected numbers, got dtype {x.dtype}")
    if not np.isfinite(x).all():
        raise ConfigError(f"{what}: contains NaN or infinite values")
    if pixel_max is None:
        pixel_max = 255.0 if np.issubdtype(x.dtype, np.integer) else 1.0
    x = x.astype("float32") / np.float32(pixel_max)
    return x[..., np.newaxis] if x.ndim == 3 else x


def _labels(y: np.ndarray, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]  # keras.datasets.cifar10 ships labels as (N, 1)
    if y.ndim != 1:
        raise ConfigError(f"{what}: expected integer class labels of shape (N,), got {y.shape}")
    if np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and (y == np.round(y)).all():
        y = y.astype("int64")
    if not np.issubdtype(y.dtype, np.integer):
        raise ConfigError(f"{what}: expected integer class labels, got dtype {y.dtype}")
    if y.size and y.min() < 0:
        raise ConfigError(f"{what}: labels must be >= 0, found {y.min()}")
    return y.astype("int64")


def _check_lengths(x: np.ndarray, y: np.ndarray, label: str, part: str) -> None:
    if len(x) != len(y):
        raise ConfigError(f"{label}: x_{part} has {len(x)} images but y_{part} has {len(y)} labels")


def _num_classes(configured: int | None, labels: tuple[np.ndarray, ...], label: str) -> int:
    largest = max(int(y.max()) for y in labels)
    if configured is None:
        # Told by the labels alone, the classes are 0..K-1, every one present: one stray label of
        # 10^8 would otherwise build a 10^8-way classifier and exhaust memory.
        present = len(np.unique(np.concatenate(labels)))
        if present != largest + 1:
            raise ConfigError(
                f"{label}: the labels hold {present} classes but run up to {largest}; labels must be 0..K-1 with "
                "every class present, or give data.num_classes"
            )
        return largest + 1
    if largest >= configured:
        raise ConfigError(
            f"{label}: label {largest} does not fit data.num_classes={configured} (labels must be 0..{configured - 1})"
        )
    return configured


def _stratified_split(x, y, fraction: float, seed: int, label: str):
    # Imported here: scikit-learn's model_selection takes most of a second to load, which a
    # command refused for a bad config value should not wait for.
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(x, y, test_size=fraction, random_state=seed, stratify=y)
    except ValueError as error:  # too few samples of a class, or of all
        raise ConfigError(f"{label}: cannot split {len(y)} samples with fraction {fraction}: {error}") from None


def _fold_split(x, y, folds: int, fold: int, seed: int, label: str):
    """Fold ``fold`` of ``folds`` stratified folds (shuffled by ``seed``) validates; the rest trains."""
    from sklearn.model_selection import StratifiedKFold

    try:
        train_index, val_index = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y))[fold]
    except ValueError as error:  # more folds than samples of a class
        raise ConfigError(f"{label}: cannot make data.folds={folds} folds of {len(y)} samples: {error}") from None
    return x[train_index], x[val_index], y[train_index], y[val_index]


def steps_per_epoch(split: Split, batch_size: int) -> int:
    return -(-len(split) // batch_size)


def make_pipeline(split: Split, batch_size: int, shuffle_seed: int | None = None, start_epoch: int = 0):
    """A tf.data pipeline: cache, then batch and prefetch.

    With a shuffle seed (training) it repeats for ever, one seeded order per pass: fit reads
    steps_per_epoch batches an epoch, and a resumed run skips the passes already trained, so epoch
    k sees the same order whether or not training stopped in between.
    """
    import tensorflow as tf  # only here: the rest of this module must not load TensorFlow

    dataset = tf.data.Dataset.from_tensor_slices((split.x, split.y)).cache()
    if shuffle_seed is None:
        return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    dataset = dataset.shuffle(len(split), seed=shuffle_seed, reshuffle_each_iteration=True).batch(batch_size).repeat()
    return dataset.skip(start_epoch * steps_per_epoch(split, batch_size)).prefetch(tf.data.AUTOTUNE)
