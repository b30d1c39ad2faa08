"""Train one Keras model, tracked in MLflow: ``python -m experiments.train model=cnn reg=l2``.

compose -> check -> seed -> data -> model -> callbacks -> fit -> evaluate -> record.
"""

from __future__ import annotations

import logging
import math
import os
import shlex
import sys
from pathlib import Path

import hydra
import mlflow
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from experiments.checks import ConfigError, check_class_weight_labels, check_config
from experiments.cli import expand_quoted_option
from experiments.data import Splits, load_splits
from plugins.params import flatten, redact
from plugins.provenance import git_state
from plugins.sweep import sweep_tags

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Train, evaluate the test split with the best weights, record it all; return the best monitored value."""
    splits = load_checked_input(cfg)
    # TensorFlow loads only now (it takes seconds and is noisy), once the input is known to be good.
    import keras

    from experiments.data import make_pipeline
    from plugins import MLflowCallback

    seed_everything(cfg.trainer)
    train_data = make_pipeline(splits.train, cfg.trainer.batch_size, shuffle_seed=cfg.trainer.seed)
    val_data = make_pipeline(splits.val, cfg.trainer.batch_size)
    test_data = make_pipeline(splits.test, cfg.trainer.batch_size)
    model = build_model(cfg, splits, steps_per_epoch=math.ceil(len(splits.train) / cfg.trainer.batch_size))
    callbacks = build_callbacks(cfg)

    with start_tracked_run(cfg, splits) as run:
        tracker = MLflowCallback(
            monitor=cfg.mlflow.monitor,
            mode=cfg.mlflow.mode,
            params=flat_params(cfg),
            log_every_n_steps=cfg.mlflow.log_every_n_steps,
            log_model=cfg.mlflow.log_model,
            registered_model_name=cfg.mlflow.register_model_name,
            input_example=splits.val.x[:5],
            checkpoint_interval_s=cfg.mlflow.checkpoint_interval_s,
            output_dir=Path(HydraConfig.get().runtime.output_dir) / "mlflow",
        )
        try:
            model.fit(
                train_data,
                validation_data=val_data,
                epochs=cfg.trainer.epochs,
                class_weight=class_weights(cfg.trainer.class_weight, splits),
                callbacks=[*callbacks, tracker],  # last: it sees what the other callbacks did
                shuffle=False,  # the pipeline shuffles, seeded
                verbose=cfg.trainer.verbose,
            )
        except BaseException:
            tracker.end("FAILED")
            raise
        if tracker.best_weights is not None:
            model.set_weights(tracker.best_weights)
        test = model.evaluate(test_data, return_dict=True, verbose=0)
        mlflow.log_metrics({f"test_{name}": float(value) for name, value in test.items()})
        log.info("run %s (%s): test_accuracy=%.4f", run.info.run_id, run.info.run_name, test.get("accuracy", float("nan")))
    keras.backend.clear_session()
    return tracker.best_value if tracker.best_value is not None else float("nan")


def load_checked_input(cfg: DictConfig) -> Splits:
    """The data splits, or a one-line error (exit 2) for bad config or data; no MLflow run yet."""
    try:
        check_config(cfg)
        splits = load_splits(cfg.data, seed=cfg.trainer.seed)
        check_class_weight_labels(cfg.trainer.class_weight, splits.num_classes)
        return splits
    except ConfigError as error:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # Hydra records this job as failed and the sweep goes on
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


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
    model = instantiate(cfg.model, input_shape=splits.input_shape, num_classes=splits.num_classes,
                        reg=instantiate(cfg.reg), _convert_="object")
    learning_rate = cfg.optimizer.learning_rate
    if cfg.schedule.get("learning_rate"):
        learning_rate = instantiate(cfg.schedule.learning_rate, steps_per_epoch=steps_per_epoch)
    model.compile(
        optimizer=instantiate(cfg.optimizer, learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def build_callbacks(cfg: DictConfig) -> list:
    """The Keras callbacks conf/callbacks/ lists (null ones are switched off), plus the schedule's."""
    configs = [callback for callback in cfg.callbacks.values() if callback is not None]
    if cfg.schedule.get("callback"):
        configs.append(cfg.schedule.callback)
    return [instantiate(callback) for callback in configs]


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


def start_tracked_run(cfg: DictConfig, splits: Splits) -> mlflow.ActiveRun:
    """Open the MLflow run (or join the one `mlflow run` made) with its tags, Hydra files and data."""
    if cfg.mlflow.tracking_uri:
        mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    if "MLFLOW_RUN_ID" not in os.environ:  # else `mlflow run` chose the run and its experiment
        mlflow.set_experiment(cfg.mlflow.experiment_name)
    reg = regularisation_label(cfg.reg)
    commit, dirty = git_state(PROJECT_ROOT)
    hydra = HydraConfig.get()
    overrides = list(hydra.overrides.task)
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
    }
    run = mlflow.start_run(run_name=cfg.mlflow.run_name or f"{cfg.model.name}-{reg}", tags=tags)
    mlflow.log_text(OmegaConf.to_yaml(redact(OmegaConf.to_container(cfg, resolve=True))), "hydra/config.yaml")
    mlflow.log_text(OmegaConf.to_yaml(overrides), "hydra/overrides.yaml")
    mlflow.log_text(reproduce_note(run.info.run_id, overrides, commit, dirty), "reproduce.txt")
    log_data_inputs(splits)
    return run


def reproduce_note(run_id: str, overrides: list[str], commit: str | None, dirty: bool | None) -> str:
    """The command lines that re-run this configuration, for reproduce.txt."""
    state = f"git commit {commit}" + (" with uncommitted changes" if dirty else "") if commit else "no git commit recorded"
    return "\n".join([
        f"# Re-run this configuration (code: {state}).",
        *([f"git checkout {commit}"] if commit else []),
        shlex.join(["python", "-m", "experiments.train", *overrides]),
        f"mlflow run . --env-manager local -P {shlex.quote('overrides=' + shlex.join(overrides))}",
        "# Re-run it and compare the metric histories:",
        f"python -m experiments.reproduce {run_id} --verify",
        "",
    ])


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
