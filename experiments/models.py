"""Model builders (mlp, cnn) that take a regularisation spec and adapt to the data's shape."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
from keras import layers


@dataclass(frozen=True)
class Regularisation:
    """What conf/reg/ asked for; values are checked by experiments.checks."""

    l1: float
    l2: float
    dropout: float
    batchnorm: bool
    batchnorm_momentum: float
    augment: bool
    flip: str | None
    rotation: float
    zoom: float
    translation: float

    def kernel_regularizer(self) -> keras.regularizers.Regularizer | None:
        if not (self.l1 or self.l2):
            return None
        return keras.regularizers.L1L2(l1=self.l1, l2=self.l2)

    def augmentation_layers(self) -> list[layers.Layer]:
        """Random image transforms; Keras runs them in training only."""
        if not self.augment:
            return []
        transforms: list[layers.Layer] = []
        if self.flip:
            transforms.append(layers.RandomFlip(self.flip))
        if self.rotation:
            transforms.append(layers.RandomRotation(self.rotation))
        if self.zoom:
            transforms.append(layers.RandomZoom(self.zoom))
        if self.translation:
            transforms.append(layers.RandomTranslation(self.translation, self.translation))
        return transforms


def build_cnn(
    input_shape: tuple[int, ...],
    num_classes: int,
    reg: Regularisation,
    filters: list[int],
    kernel_size: int,
    dense_units: int,
    name: str,
) -> keras.Model:
    """Conv blocks (Conv2D -> [BatchNorm] -> ReLU -> MaxPool -> [Dropout]), Dense -> [Dropout] -> softmax."""
    model = _input_stem(input_shape, reg, name)
    for width in _block_widths("filters", filters, "conv block"):
        # A bias before BatchNormalization is cancelled by its mean subtraction.
        model.add(
            layers.Conv2D(
                width,
                kernel_size,
                padding="same",
                use_bias=not reg.batchnorm,
                kernel_regularizer=reg.kernel_regularizer(),
            )
        )
        _add_normalised_activation(model, reg)
        model.add(layers.MaxPooling2D(pool_size=2, padding="same"))
        _add_dropout(model, reg)
    model.add(layers.Flatten())
    model.add(layers.Dense(dense_units, activation="relu", kernel_regularizer=reg.kernel_regularizer()))
    _add_dropout(model, reg)
    return _add_classifier(model, num_classes, reg)


def build_mlp(
    input_shape: tuple[int, ...],
    num_classes: int,
    reg: Regularisation,
    units: list[int],
    name: str,
) -> keras.Model:
    """Dense blocks (Dense -> [BatchNorm] -> ReLU -> [Dropout]) on the flattened image, then softmax."""
    model = _input_stem(input_shape, reg, name)
    model.add(layers.Flatten())
    for width in _block_widths("units", units, "dense block"):
        model.add(layers.Dense(width, use_bias=not reg.batchnorm, kernel_regularizer=reg.kernel_regularizer()))
        _add_normalised_activation(model, reg)
        _add_dropout(model, reg)
    return _add_classifier(model, num_classes, reg)


def _block_widths(argument: str, widths: Sequence[int], block: str) -> Sequence[int]:
    """``widths``, one block per entry. A single number (``model.units=256``) is refused by name: Python
    would say only that an int is not iterable."""
    if isinstance(widths, str) or not isinstance(widths, Sequence):
        raise ValueError(f"{argument}={widths!r}: expected a list with one width per {block}, e.g. [{widths}] for one")
    return widths


def _input_stem(input_shape: tuple[int, ...], reg: Regularisation, name: str) -> keras.Sequential:
    """The input and, when asked for, the augmentation layers every model starts with."""
    model = keras.Sequential(name=name)
    model.add(keras.Input(shape=input_shape))
    for layer in reg.augmentation_layers():
        model.add(layer)
    return model


def _add_classifier(model: keras.Sequential, num_classes: int, reg: Regularisation) -> keras.Sequential:
    model.add(layers.Dense(num_classes, activation="softmax", kernel_regularizer=reg.kernel_regularizer()))
    return model


def _add_normalised_activation(model: keras.Sequential, reg: Regularisation) -> None:
    if reg.batchnorm:
        model.add(layers.BatchNormalization(momentum=reg.batchnorm_momentum))
    model.add(layers.ReLU())


def _add_dropout(model: keras.Sequential, reg: Regularisation) -> None:
    if reg.dropout:
        model.add(layers.Dropout(reg.dropout))
