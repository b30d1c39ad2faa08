"""The runner's Keras side: seeds, pipelines, model, callbacks, fit and test, on the backend Keras
runs on. The one module of the runner that imports Keras (and its backend), loaded once the input is
known to be good (experiments.backends.load_training)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

import keras
import mlflow
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from experiments import backends
from experiments.batches import Batches, EpochOrder
from experiments.checks import ConfigError
from experiments.data import Splits, make_pipeline, steps_per_epoch
from experiments.resume import ResumePoint
from experiments.tracked_run import LossBecameNaN
from plugins import class_report
from plugins.best_epoch import holds_weights
from plugins.checkpoint import load_logged_checkpoint
from plugins.errors import describe, first_line
from plugins.interrupt import StopOnSignal
from plugins.sweep_stop import STOP_FILE_ENV
from plugins.tags import RESTORED_BEST_WEIGHTS

log = logging.getLogger(__name__)


@dataclass
class Job:
    """Everything one fit needs, built from the config."""

    model: keras.Model
    callbacks: list
    train: Any  # tf.data pipelines on TensorFlow, Batches on the other backends
    val: Any
    test: Any
    test_labels: np.ndarray
    steps_per_epoch: int
    initial_epoch: int
    class_weight: dict[int, float] | None


def prepare(cfg: DictConfig, splits: Splits, resume: ResumePoint | None) -> Job:
    """Seeds first (they must precede the backend's first op), then pipelines, model and callbacks.
    A value a class itself refuses is a ConfigError naming its key."""
    seed_everything(cfg.trainer)
    batch_size, start_epoch = cfg.trainer.batch_size, resume.next_epoch if resume else 0
    steps = steps_per_epoch(splits.train, batch_size)
    model = build_model(cfg, splits, steps_per_epoch=steps)
    start_from_logged_checkpoint(model, resume)
    # tf.data on TensorFlow: its prefetch overlaps input and training (docs/benchmarks.md measures both).
    pipeline = make_pipeline if keras.backend.backend() == "tensorflow" else Batches
    train = pipeline(splits.train, batch_size, shuffle_seed=cfg.trainer.seed, start_epoch=start_epoch)
    ordering = [EpochOrder(train)] if isinstance(train, Batches) else []
    return Job(
        model=model,
        callbacks=[*ordering, *build_callbacks(cfg)],
        train=train,
        val=pipeline(splits.val, batch_size),
        test=pipeline(splits.test, batch_size),
        test_labels=splits.test.y,
        steps_per_epoch=steps,
        initial_epoch=start_epoch,
        class_weight=class_weights(cfg.trainer.class_weight, splits),
    )


@dataclass(frozen=True)
class Tested:
    """What a fit and its test give the run at its end."""

    metrics: dict[str, float]  # the test split's, with the best epoch's weights
    tags: dict[str, str]  # what is known only once fit has returned
    matrix: np.ndarray | None = None  # the test split's confusion matrix, for a classifier


def fit_and_test(job: Job, cfg: DictConfig, tracker, stopper, resume: ResumePoint | None) -> Tested:
    """Train, then the test split's metrics with the best epoch's weights."""
    restore_for_resume(job.model, resume, job.steps_per_epoch)
    job.model.fit(
        job.train,
        validation_data=job.val,
        epochs=cfg.trainer.epochs,
        initial_epoch=job.initial_epoch,
        steps_per_epoch=job.steps_per_epoch,
        class_weight=job.class_weight,
        # The tracker before the callbacks that write files: one that fails (a full disk) cannot cost
        # the epoch's metrics. It reads what the others changed (rates, stops) wherever it sits.
        callbacks=[stopper, tracker, *job.callbacks],
        shuffle=False,  # the pipeline shuffles, seeded
        verbose=cfg.trainer.verbose,
    )
    if tracker.stop_reason == "nan_loss":
        raise LossBecameNaN("the loss became NaN (callbacks.terminate_on_nan stopped training)")
    tags = {}
    if tracker.stop_reason == "early_stopping":
        # Keras' EarlyStopping restores its best weights in its own on_train_end, after the tracker's
        # (the tracker comes first): only now is it known which weights the model ended fit with.
        tags[RESTORED_BEST_WEIGHTS] = str(holds_weights(job.model, tracker.best_weights)).lower()
    job.model.set_weights(best_weights(tracker, job.model))
    measured = job.model.evaluate(job.test, return_dict=True, verbose=0)
    # Keras' loss holds the L1/L2 penalty of the weights: a comparison of regularisers needs the data's part.
    penalty = float(sum(keras.ops.convert_to_numpy(loss) for loss in job.model.losses))
    matrix = test_confusion_matrix(job.model, job.test, job.test_labels)
    metrics = {**measured, "data_loss": measured["loss"] - penalty, "examples": len(job.test_labels)}
    return Tested({**metrics, **class_report.per_class(matrix)} if matrix is not None else metrics, tags, matrix)


def test_confusion_matrix(model: keras.Model, test, labels: np.ndarray) -> np.ndarray | None:
    """The test split's confusion matrix, for a classifier (one output of a column per class);
    ``test`` yields the split in its own order, whose labels are ``labels``."""
    classes = model.output_shape[-1] if isinstance(model.output_shape, tuple) else None
    if not classes or classes < 2:
        return None
    predicted = model.predict(test, verbose=0).argmax(axis=-1)
    return class_report.confusion_matrix(labels, predicted, classes)


def clear() -> None:
    keras.backend.clear_session()


def stop_on_signal() -> StopOnSignal:
    """SIGINT and SIGTERM stop fit at the next batch boundary, and so does a stop of the sweep the
    job belongs to (its stop file: see plugins.interrupt and plugins.sweep_stop)."""
    return StopOnSignal(stop_file=os.environ.get(STOP_FILE_ENV))


def seed_everything(trainer: DictConfig) -> None:
    """The thread budget, seeds and determinism: everything that must precede the backend's first op."""
    backend = keras.backend.backend()
    threads = trainer.threads or ray_task_cpus()
    if threads and not trainer.threads:
        log.info("threads: %d, the CPUs Ray reserved for this job", threads)
    if threads:
        # Parallel jobs on one machine each get their share of the cores instead of all fighting for them.
        backends.limit_threads(backend, threads, slot=job_number())
    keras.utils.set_random_seed(trainer.seed)  # Python, NumPy and the backend's
    if trainer.deterministic:
        backends.make_deterministic(backend)


def job_number() -> int:
    """This job's number in its sweep (0 outside one)."""
    return HydraConfig.get().job.get("num", 0) if HydraConfig.initialized() else 0


def ray_task_cpus() -> int | None:
    """The CPUs Ray reserved for this job when it runs as a Ray task: Ray does not pin a task to them,
    and TensorFlow would otherwise use every core. (A SLURM task is pinned; TensorFlow sees its CPUs.)"""
    ray = sys.modules.get("ray")  # imported only in a Ray worker or driver
    if ray is None or not ray.is_initialized():
        return None
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    return max(1, round(cpus)) if cpus else None


def build_model(cfg: DictConfig, splits: Splits, steps_per_epoch: int) -> keras.Model:
    # _convert_="object" hands the builder the Regularisation object itself, not a config copy of it.
    model = instantiate_at(
        cfg,
        "model",
        input_shape=splits.input_shape,
        num_classes=splits.num_classes,
        reg=instantiate_at(cfg, "reg"),
        _convert_="object",
    )
    learning_rate = cfg.optimizer.learning_rate
    if cfg.schedule.get("learning_rate"):
        learning_rate = instantiate_at(cfg, "schedule.learning_rate", steps_per_epoch=steps_per_epoch)
    model.compile(
        optimizer=instantiate_at(cfg, "optimizer", learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def build_callbacks(cfg: DictConfig) -> list:
    """The Keras callbacks conf/callbacks/ lists (null ones are switched off), plus the schedule's."""
    keys = [f"callbacks.{name}" for name, callback in cfg.callbacks.items() if callback is not None]
    if cfg.schedule.get("callback"):
        keys.append("schedule.callback")
    return [instantiate_at(cfg, key) for key in keys if runs_here(cfg, key)]


def runs_here(cfg: DictConfig, key: str) -> bool:
    """Keras' TensorBoard callback writes through TensorFlow: without it, the run goes on without
    TensorBoard files, saying so in one line."""
    if OmegaConf.select(cfg, f"{key}._target_") != "keras.callbacks.TensorBoard":
        return True
    if backends.tensorboard_runs(keras.backend.backend()):
        return True
    log.warning("%s: no TensorBoard files: Keras writes them through TensorFlow, which is not installed", key)
    return False


def instantiate_at(cfg: DictConfig, key: str, **kwargs):
    """instantiate() the config at key; a value its class refuses is a ConfigError naming the key."""
    try:
        return instantiate(OmegaConf.select(cfg, key), **kwargs)
    except InstantiationException as error:
        if not isinstance(error.__cause__, (TypeError, ValueError)):
            raise  # not a refused value: a fault, with its traceback
        raise ConfigError(f"{key}: {first_line(error.__cause__)}") from None


def class_weights(setting, splits: Splits) -> dict[int, float] | None:
    if setting is None:
        return None
    if setting == "balanced":
        from sklearn.utils.class_weight import compute_class_weight

        classes = np.unique(splits.train.y)
        weights = compute_class_weight("balanced", classes=classes, y=splits.train.y)
        return {int(label): float(weight) for label, weight in zip(classes, weights)}
    return {int(label): float(weight) for label, weight in setting.items()}


def start_from_logged_checkpoint(model: keras.Model, resume: ResumePoint | None) -> None:
    """For a resume without a local backup: the weights of the run's logged checkpoints/best.keras,
    read before the run is reopened, so a file that cannot be used leaves the run as it was."""
    if resume is None or resume.backup_dir is not None:
        return
    try:
        model.set_weights(logged_best_weights(resume.run_id))
    except Exception as error:  # missing, corrupt, another model's, or refused by Keras' safe mode (a Lambda)
        raise ConfigError(
            f"resume={resume.run_id}: its checkpoints/best.keras cannot be used ({describe(error)}); "
            "the run is left as it was"
        ) from None


def restore_for_resume(model: keras.Model, resume: ResumePoint | None, steps_per_epoch: int) -> None:
    """Keras' BackupAndRestore continues from the run's local backup (weights, optimizer state, epoch).
    When that is gone (the weights are the logged checkpoint's by now): the optimizer's step count
    (a schedule goes on where it was) and, for a plain rate, the last logged one (a plateau's cuts stay)."""
    if resume is None or resume.backup_dir is not None:
        return
    optimizer = model.optimizer
    optimizer.iterations.assign(resume.next_epoch * steps_per_epoch)
    if resume.learning_rate is not None:
        with contextlib.suppress(TypeError):  # a LearningRateSchedule's rate is not settable: it follows the step count
            optimizer.learning_rate = resume.learning_rate
    rate = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    log.warning(
        "no local backup of run %s (%s): continuing from its best checkpoint's weights at learning rate %.3g "
        "(the optimizer's moments start afresh)",
        resume.run_id,
        resume.no_backup,
        rate,
    )


def best_weights(tracker, model: keras.Model) -> list:
    """The best epoch's weights: the tracker's, or for a resumed run that never improved, the logged checkpoint's."""
    if tracker.best_weights is not None:
        return tracker.best_weights
    try:
        return logged_best_weights(tracker.run_id)
    except Exception:  # nothing logged (tracking was off): the weights training ended with
        return model.get_weights()


def logged_best_weights(run_id: str) -> list:
    """The weights in the run's checkpoints/best.keras."""
    return load_logged_checkpoint(mlflow.MlflowClient(), run_id).get_weights()
