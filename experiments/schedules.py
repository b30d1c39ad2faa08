"""Learning-rate schedules expressed in epochs, as conf/schedule/ describes them."""

from __future__ import annotations

from bisect import bisect_right

import keras


class StepDecay:
    """Epoch -> rate for keras.callbacks.LearningRateScheduler: x factor at each boundary epoch."""

    def __init__(self, initial_learning_rate: float, boundaries: list[int], factor: float):
        self.initial_learning_rate = initial_learning_rate
        self.boundaries = sorted(boundaries)
        self.factor = factor

    def __call__(self, epoch: int, learning_rate: float | None = None) -> float:
        return self.initial_learning_rate * self.factor ** bisect_right(self.boundaries, epoch)


def cosine_decay(initial_learning_rate: float, epochs: int, alpha: float, steps_per_epoch: int):
    """CosineDecay over the whole run (Keras counts in optimizer steps, the config in epochs)."""
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate, decay_steps=epochs * steps_per_epoch, alpha=alpha
    )


def exponential_decay(initial_learning_rate: float, decay_rate: float, steps_per_epoch: int):
    """ExponentialDecay by decay_rate per epoch, applied smoothly per step."""
    return keras.optimizers.schedules.ExponentialDecay(
        initial_learning_rate, decay_steps=steps_per_epoch, decay_rate=decay_rate
    )
