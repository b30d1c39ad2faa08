"""Train one Keras model, tracked in MLflow: ``python -m experiments.train model=cnn reg=l2``.

compose -> check -> seed -> data -> model -> callbacks -> fit -> evaluate -> record.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import socket
import sys
from pathlib import Path

import hydra
import mlflow
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from mlflow.utils.validation import MAX_TAG_VAL_LENGTH
from omegaconf import DictConfig, OmegaConf

from experiments.checks import ConfigError, check_class_weight_labels, check_config
from experiments.cli import TrackingStoreError, expand_quoted_option, first_line, open_tracking_store
from experiments.data import Splits, load_splits
from experiments.resume import BACKUP_TAG, HOST_TAG, PID_TAG, ResumePoint, prepare_resume
from plugins.params import flatten, redact, redact_override
from plugins.provenance import git_state
from plugins.sweep import sweep_tags

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Train, evaluate the test split with the best weights, record it all; return the best monitored value."""
    cfg, resume, splits = load_checked_input(cfg)
    # TensorFlow loads only now (it takes seconds and is noisy), once the input is known to be good.
    import keras

    from experiments.data import make_pipeline, steps_per_epoch
    from plugins import MLflowCallback
    from plugins.interrupt import StopOnSignal, TrainingInterrupted

    seed_everything(cfg.trainer)
    start_epoch = resume.next_epoch if resume else 0
    train_data = make_pipeline(
        splits.train, cfg.trainer.batch_size, shuffle_seed=cfg.trainer.seed, start_epoch=start_epoch
    )
    val_data = make_pipeline(splits.val, cfg.trainer.batch_size)
    test_data = make_pipeline(splits.test, cfg.trainer.batch_size)
    steps = steps_per_epoch(splits.train, cfg.trainer.batch_size)
    try:
        model = build_model(cfg, splits, steps_per_epoch=steps)
        callbacks = build_callbacks(cfg)
    except ConfigError as error:  # an argument the class itself refused, e.g. one EarlyStopping does not take
        return stop(error, 2)

    with StopOnSignal() as stopper, start_tracked_run(cfg, splits, resume) as run:
        tracker = MLflowCallback(
            monitor=cfg.mlflow.monitor,
            mode=cfg.mlflow.mode,
            params=flat_params(cfg),
            log_every_n_steps=cfg.mlflow.log_every_n_steps,
            metrics_interval_s=cfg.mlflow.metrics_interval_s,
            log_model=cfg.mlflow.log_model,
            registered_model_name=cfg.mlflow.register_model_name,
            input_example=splits.val.x[:5],
            checkpoint_interval_s=cfg.mlflow.checkpoint_interval_s,
            flush_timeout_s=cfg.mlflow.flush_timeout_s,
            output_dir=Path(HydraConfig.get().runtime.output_dir) / "mlflow",
        )
        restore_for_resume(model, resume, steps_per_epoch=steps)
        try:
            model.fit(
                train_data,
                validation_data=val_data,
                epochs=cfg.trainer.epochs,
                initial_epoch=start_epoch,
                steps_per_epoch=steps,
                class_weight=class_weights(cfg.trainer.class_weight, splits),
                callbacks=[stopper, *callbacks, tracker],  # tracker last: it sees what the others did
                shuffle=False,  # the pipeline shuffles, seeded
                verbose=cfg.trainer.verbose,
            )
            # In the try: a signal now (no batch left to finish) stops at once, and the run ends KILLED.
            test = (
                None if tracker.stop_reason == "nan_loss" else evaluate_best(model, tracker, run.info.run_id, test_data)
            )
        except TrainingInterrupted as interrupt:
            end_run_early(tracker, "KILLED", str(interrupt))
            return stop(
                TrainingStopped(
                    f"{interrupt}: run {run.info.run_id} ended KILLED; continue it with "
                    f"python -m experiments.train resume={run.info.run_id}"
                ),
                interrupt.exit_code,
                whole_sweep=True,
            )
        except Exception as error:
            end_run_early(tracker, "FAILED", f"{type(error).__name__}: {error}")
            raise
        if test is None:
            end_run_early(tracker, "FAILED", "the loss became NaN (callbacks.terminate_on_nan stopped training)")
            return stop(
                TrainingStopped(
                    f"run {run.info.run_id} FAILED: the loss became NaN; try a lower optimizer.learning_rate"
                ),
                1,
            )
        tracker.finish_run("FINISHED", metrics={f"test_{name}": float(value) for name, value in test.items()})
        log.info(
            "run %s (%s): test_accuracy=%.4f", run.info.run_id, run.info.run_name, test.get("accuracy", float("nan"))
        )
    keras.backend.clear_session()
    return tracker.best_value if tracker.best_value is not None else float("nan")


def evaluate_best(model, tracker, run_id: str, test_data) -> dict[str, float]:
    """The test split's metrics, measured with the best epoch's weights."""
    model.set_weights(best_weights(tracker, run_id, model))
    return model.evaluate(test_data, return_dict=True, verbose=0)


class TrainingStopped(Exception):
    """Training ended early for a reason the user should read in one line (interrupt, NaN loss)."""


def stop(error: Exception, exit_code: int, whole_sweep: bool = False):
    """One line on stderr and exit_code for a single run. In a sweep Hydra records the job as failed
    and goes on with the next, unless whole_sweep (an interrupt is meant for all of it)."""
    if HydraConfig.get().mode == RunMode.MULTIRUN and not whole_sweep:
        raise error
    print(f"error: {error}", file=sys.stderr)
    raise SystemExit(exit_code)


def load_checked_input(cfg: DictConfig):
    """(config, resume point, data splits), or a one-line error (exit 2) with no MLflow run touched."""
    try:
        check_config(cfg)
        wait_for_tracking_server(cfg.mlflow.tracking_uri or mlflow.get_tracking_uri(), cfg.mlflow.wait_for_server_s)
        open_tracking_store(cfg.mlflow.tracking_uri)
        cfg, resume = prepare_resume(cfg, list(HydraConfig.get().overrides.task))
        check_config(cfg)  # a resumed run's own config, with this command's overrides on top
        splits = load_splits(cfg.data, seed=cfg.trainer.seed)
        check_class_weight_labels(cfg.trainer.class_weight, splits.num_classes)
        return cfg, resume, splits
    except ConfigError as error:
        return stop(error, 2)
    except TrackingStoreError as error:
        return stop(ConfigError(f"mlflow.tracking_uri: {error}"), 2)


def wait_for_tracking_server(uri: str, wait_s: float) -> None:
    """Refuse to start training into an HTTP tracking server that does not answer within wait_s."""
    if not uri.startswith(("http://", "https://")):
        return  # a local store (sqlite:, file:) has nothing to wait for
    import time
    import urllib.request

    deadline = time.monotonic() + wait_s
    while True:
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5)
            return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise ConfigError(
                    f"the tracking server {uri} does not answer ({getattr(error, 'reason', error)}) "
                    f"after {wait_s:g} s (mlflow.wait_for_server_s); nothing was trained"
                ) from None
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))


def end_run_early(tracker, status: str, reason: str) -> None:
    """Send what training produced so far (epochs, best checkpoint, history), then end the run with status."""
    tracker.end(status)
    tracker.finish_run(status, tags={"failure.reason": reason[:MAX_TAG_VAL_LENGTH]})


def restore_for_resume(model, resume: ResumePoint | None, steps_per_epoch: int) -> None:
    """Keras' BackupAndRestore continues from the run's local backup (weights, optimizer state, epoch).
    When that is gone: the weights of the run's logged best checkpoint, the optimizer's step count
    (a schedule goes on where it was) and, for a plain rate, the last logged one (a plateau's cuts stay)."""
    if resume is None or resume.backup_dir is not None:
        return
    import keras

    model.set_weights(logged_best_weights(resume.run_id))
    optimizer = model.optimizer
    optimizer.iterations.assign(resume.next_epoch * steps_per_epoch)
    if resume.learning_rate is not None:
        with contextlib.suppress(TypeError):  # a LearningRateSchedule's rate is not settable: it follows the step count
            optimizer.learning_rate = resume.learning_rate
    log.warning(
        "no local backup of run %s: continuing from its best checkpoint's weights at learning rate %.3g "
        "(the optimizer's moments start afresh)",
        resume.run_id,
        float(keras.ops.convert_to_numpy(optimizer.learning_rate)),
    )


def best_weights(tracker, run_id: str, model) -> list:
    """The best epoch's weights: the tracker's, or for a resumed run that never improved, the logged checkpoint's."""
    if tracker.best_weights is not None:
        return tracker.best_weights
    try:
        return logged_best_weights(run_id)
    except Exception:  # nothing logged (tracking was off): the weights training ended with
        return model.get_weights()


def logged_best_weights(run_id: str) -> list:
    """The weights in the run's checkpoints/best.keras."""
    from plugins.checkpoint import load_logged_checkpoint

    return load_logged_checkpoint(mlflow.MlflowClient(), run_id).get_weights()


def seed_everything(trainer: DictConfig) -> None:
    """Seeds, determinism and the thread budget: everything that must precede the first TensorFlow op."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(trainer.seed)  # Python, NumPy and TensorFlow
    if trainer.threads:
        # Parallel jobs on one machine each get their share of the cores instead of all fighting for them.
        tf.config.threading.set_intra_op_parallelism_threads(trainer.threads)
        tf.config.threading.set_inter_op_parallelism_threads(trainer.threads)
    if trainer.deterministic:
        tf.config.experimental.enable_op_determinism()


def build_model(cfg: DictConfig, splits: Splits, steps_per_epoch: int):
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
    return [instantiate_at(cfg, key) for key in keys]


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
        import numpy as np
        from sklearn.utils.class_weight import compute_class_weight

        classes = np.unique(splits.train.y)
        weights = compute_class_weight("balanced", classes=classes, y=splits.train.y)
        return {int(label): float(weight) for label, weight in zip(classes, weights)}
    return {int(label): float(weight) for label, weight in setting.items()}


def regularisation_label(reg: DictConfig) -> str:
    """'none', 'l2', 'l2+dropout', ...: what the model really has, whichever options set it."""
    parts = [name for name in ("l1", "l2", "dropout") if reg[name] > 0]
    parts += [name for name in ("batchnorm", "augment") if reg[name]]
    return "+".join(parts) or "none"


def flat_params(cfg: DictConfig) -> dict:
    return flatten(OmegaConf.to_container(cfg, resolve=True))


def start_tracked_run(cfg: DictConfig, splits: Splits, resume: ResumePoint | None) -> mlflow.ActiveRun:
    """Open the MLflow run (or join the one `mlflow run` made, or reopen a resumed one) with its tags,
    Hydra files and data."""
    if cfg.mlflow.tracking_uri:
        mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    if "MLFLOW_RUN_ID" not in os.environ:  # else `mlflow run` chose the run and its experiment
        mlflow.set_experiment(cfg.mlflow.experiment_name)
    reg = regularisation_label(cfg.reg)
    commit, dirty = git_state(PROJECT_ROOT)
    hydra = HydraConfig.get()
    overrides = [redact_override(override) for override in hydra.overrides.task]
    if resume is not None:
        return reopen_run(resume, overrides)
    tags = {
        **cfg.mlflow.tags,
        **sweep_tags(hydra.job.num if hydra.mode == RunMode.MULTIRUN else None),
        "model": cfg.model.name,
        "reg": reg,
        "regularised": str(reg != "none").lower(),
        "data": cfg.data.name,
        "early_stopping": str(bool(cfg.callbacks.get("early_stopping"))).lower(),
        "reduce_lr": str(bool(cfg.callbacks.get("reduce_lr_on_plateau"))).lower(),
        "git.commit": commit or "unknown",
        "git.dirty": "unknown" if dirty is None else str(dirty).lower(),
        "reproduce.command": shlex.join(["python", "-m", "experiments.train", *overrides]),
        BACKUP_TAG: str(OmegaConf.select(cfg, "callbacks.backup_and_restore.backup_dir", default="")),
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(os.getpid()),
    }
    run = mlflow.start_run(run_name=cfg.mlflow.run_name or f"{cfg.model.name}-{reg}", tags=tags)
    mlflow.log_text(OmegaConf.to_yaml(redact(OmegaConf.to_container(cfg, resolve=True))), "hydra/config.yaml")
    mlflow.log_text(OmegaConf.to_yaml(overrides), "hydra/overrides.yaml")
    mlflow.log_text(reproduce_note(run.info.run_id, overrides, commit, dirty), "reproduce.txt")
    log_data_inputs(splits)
    return run


def reopen_run(resume: ResumePoint, overrides: list[str]) -> mlflow.ActiveRun:
    """The interrupted run, RUNNING again; its logged config stays as it was."""
    run = mlflow.start_run(run_id=resume.run_id)
    resumes = int(run.data.tags.get("resumes", "0")) + 1
    mlflow.set_tags(
        {
            HOST_TAG: socket.gethostname(),
            PID_TAG: str(os.getpid()),
            "resumes": str(resumes),
            f"resume.{resumes}.command": shlex.join(["python", "-m", "experiments.train", *overrides]),
            f"resume.{resumes}.from_epoch": str(resume.next_epoch),
        }
    )
    if "failure.reason" in run.data.tags:
        mlflow.delete_tag("failure.reason")
    return run


def reproduce_note(run_id: str, overrides: list[str], commit: str | None, dirty: bool | None) -> str:
    """The command lines that re-run this configuration, for reproduce.txt."""
    state = (
        f"git commit {commit}" + (" with uncommitted changes" if dirty else "") if commit else "no git commit recorded"
    )
    return "\n".join(
        [
            f"# Re-run this configuration (code: {state}).",
            *([f"git checkout {commit}"] if commit else []),
            shlex.join(["python", "-m", "experiments.train", *overrides]),
            f"mlflow run . --env-manager local -P {shlex.quote('overrides=' + shlex.join(overrides))}",
            "# Re-run it and compare the metric histories:",
            f"python -m experiments.reproduce {run_id} --verify",
            "",
        ]
    )


def log_data_inputs(splits: Splits) -> None:
    """The data set as MLflow inputs: name, digest and size of each split."""
    digest = splits.digest()
    for context, split in (("training", splits.train), ("validation", splits.val), ("test", splits.test)):
        dataset = mlflow.data.from_numpy(split.x, targets=split.y, name=f"{splits.name}-{context}", digest=digest)
        for attempt in range(3):
            try:
                mlflow.log_input(dataset, context=context, tags={"samples": str(len(split))})
                break
            except mlflow.exceptions.MlflowException as error:
                # Parallel jobs registering the same data set race in MLflow's get-or-create
                # (a UNIQUE constraint); the retry finds the row the other job made.
                if attempt == 2:
                    log.warning("could not record the %s data set in MLflow: %s", context, str(error)[:200])


if __name__ == "__main__":
    sys.argv = expand_quoted_option(sys.argv, "--overrides")
    main()
