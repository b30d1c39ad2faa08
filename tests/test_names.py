"""One place each: an error's first line, metric families and directions, the train command line."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from experiments.command import override_key, overrides_of, train_command
from plugins.errors import describe, first_line
from plugins.metric_names import higher_is_better, is_batch, is_summary, validation_twin


def test_an_error_s_first_line_is_its_first_sentence_on_one_line():
    keras_message = """
            Object GAN was created by passing
            non-serializable argument values in `__init__()`,
            and therefore the object must override `get_config()` in
            order to be serializable. Please implement `get_config()`.

            Example:
    """
    assert first_line(NotImplementedError(keras_message)) == (
        "Object GAN was created by passing non-serializable argument values in `__init__()`, and therefore the "
        "object must override `get_config()` in order to be serializable. Please implement `get_config()`."
    )
    sqlalchemy_message = "(sqlite3.OperationalError) attempt to write a readonly database\n[SQL: INSERT INTO runs]"
    assert (
        first_line(RuntimeError(sqlalchemy_message))
        == "(sqlite3.OperationalError) attempt to write a readonly database"
    )
    assert first_line(ValueError("")) == "ValueError"
    assert len(first_line(ValueError("x " + "and more " * 100))) == 400
    assert describe(RuntimeError("boom\nMore")) == "RuntimeError: boom"
    assert describe(KeyboardInterrupt()) == "KeyboardInterrupt"


@pytest.mark.parametrize(
    ("name", "higher"),
    [
        ("val_accuracy", True),
        ("test_accuracy", True),
        ("d_test_accuracy", True),
        ("best_val_loss", False),
        ("val_auc", True),
        ("loss", False),
        ("mae", False),
        ("val_f1_score", True),
    ],
)
def test_which_way_a_metric_is_better_by_its_name(name, higher):
    assert higher_is_better(name) is higher


def test_a_direction_the_metric_declares_wins_over_its_name():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse", metrics=[keras.metrics.R2Score(name="score")])
    model.fit(np.ones((4, 3)), np.ones(4), verbose=0)  # Keras makes the metric objects at the first batch
    assert higher_is_better("val_score", model.metrics)
    assert not higher_is_better("val_score")


def test_metric_families():
    assert is_summary("best_val_loss") and is_summary("test_accuracy") and is_summary("val_accuracy_at_best")
    assert is_summary("batch_loss") and is_batch("batch_loss")
    assert not is_summary("val_loss") and not is_summary("learning_rate")
    assert validation_twin("accuracy") == "val_accuracy"


def test_the_train_command_reads_back_the_overrides_it_was_built_from():
    overrides = ["model=cnn", "reg=[l2,dropout]", "+mlflow.tags.team=vision team"]
    command = train_command(overrides)
    assert command == "python -m experiments.train model=cnn 'reg=[l2,dropout]' '+mlflow.tags.team=vision team'"
    assert overrides_of(command) == overrides
    assert overrides_of("python -m experiments.compare --parent x") == []
    assert overrides_of("python -m 'unclosed") == []
    assert [override_key(o) for o in overrides] == ["model", "reg", "mlflow.tags.team"]
