"""Which optimizers train a model, and their learning rates.

Most models step ``model.optimizer``. A model with its own ``compile(d_optimizer=..., g_optimizer=...)``
(a GAN) steps the optimizers it holds as attributes, while ``model.optimizer`` (Keras' default,
made by ``super().compile()``) never moves: its rate is no rate of this training.
"""

from __future__ import annotations

import keras


def own_optimizer_steps(model: keras.Model) -> bool:
    """Whether ``model.optimizer`` is the one that trains it (it has stepped, or no other one has)."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return False
    return steps(optimizer) > 0 or not other_optimizers(model)


def other_optimizers(model: keras.Model) -> dict[str, keras.optimizers.Optimizer]:
    """The optimizers a model holds as attributes besides ``model.optimizer``, by attribute name."""
    own = getattr(model, "optimizer", None)
    return {
        name: value
        for name, value in sorted(vars(model).items())
        if isinstance(value, keras.optimizers.Optimizer) and value is not own
    }


def stepping_rates(model: keras.Model) -> dict[str, float]:
    """``<attribute>.learning_rate`` -> the rate, for each other optimizer that has stepped."""
    return {
        f"{name}.learning_rate": rate(optimizer)
        for name, optimizer in other_optimizers(model).items()
        if steps(optimizer) > 0
    }


def steps(optimizer: keras.optimizers.Optimizer) -> int:
    return int(keras.ops.convert_to_numpy(optimizer.iterations))


def rate(optimizer: keras.optimizers.Optimizer) -> float:
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def training_steps(model: keras.Model) -> int:
    """Optimizer steps taken so far: ``model.optimizer``'s, or where it never stepped (a GAN), the
    most any other optimizer of the model has taken. On the batch path: the usual case reads one."""
    own = getattr(model, "optimizer", None)
    own_steps = steps(own) if own is not None else 0
    if own_steps:
        return own_steps
    return max([0, *(steps(optimizer) for optimizer in other_optimizers(model).values())])


def current_rate(model: keras.Model) -> float:
    """``model.optimizer``'s learning rate now."""
    return rate(model.optimizer)


def has_schedule(model: keras.Model) -> bool:
    """Whether ``model.optimizer``'s rate comes from a LearningRateSchedule (it changes by itself)."""
    schedule = getattr(model.optimizer, "_learning_rate", None)
    return isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule)
