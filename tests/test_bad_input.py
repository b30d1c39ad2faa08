"""Bad input: one line naming the key or file, non-zero exit, no traceback, no run.

Each case is checked in-process, through the runner's own load_checked_input (the step main takes
first), in milliseconds; a few representatives go through the real CLI, to show the line and the
exit code a user sees.
"""

from __future__ import annotations

import io
import zipfile

import mlflow
import numpy as np
import pytest

from experiments.checks import ConfigError
from experiments.train import load_checked_input
from tests.conftest import all_runs, not_a_database


def corrupt_npz(tmp_path):
    path = tmp_path / "corrupt.npz"
    path.write_bytes(b"PK\x03\x04 this is not a zip archive")
    return path


def npz(tmp_path, name, **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


CASES = {
    "dropout above 1": (lambda t: ["reg.dropout=1.5"], "reg.dropout=1.5: expected a number in [0, 1)"),
    "dropout of 1": (lambda t: ["reg=dropout", "reg.dropout=1.0"], "reg.dropout=1.0"),
    "negative l1": (lambda t: ["reg.l1=-0.1"], "reg.l1=-0.1: expected a number >= 0"),
    "negative l2": (lambda t: ["reg=l2", "reg.l2=-1e-4"], "reg.l2=-0.0001: expected a number >= 0"),
    "zero epochs": (lambda t: ["trainer.epochs=0"], "trainer.epochs=0: expected a whole number > 0"),
    "fractional epochs": (lambda t: ["trainer.epochs=2.5"], "trainer.epochs=2.5"),
    "negative batch size": (lambda t: ["trainer.batch_size=-8"], "trainer.batch_size=-8"),
    "zero learning rate": (lambda t: ["optimizer.learning_rate=0"], "optimizer.learning_rate=0: expected a number > 0"),
    "text learning rate": (lambda t: ["optimizer.learning_rate=fast"], "optimizer.learning_rate='fast'"),
    "infinite learning rate": (
        lambda t: ["optimizer.learning_rate=inf"],
        "optimizer.learning_rate=inf: expected a number > 0",
    ),
    "nan dropout": (lambda t: ["reg.dropout=nan"], "reg.dropout=nan: expected a number in [0, 1)"),
    "negative step factor": (
        lambda t: ["schedule=step", "schedule.callback.schedule.factor=-0.1"],
        "schedule.callback.schedule.factor=-0.1: expected a number > 0",
    ),
    "cosine alpha above 1": (
        lambda t: ["schedule=cosine", "schedule.learning_rate.alpha=2"],
        "schedule.learning_rate.alpha=2: expected a number in [0, 1]",
    ),
    "missing data.path": (lambda t: ["data=npz"], "data.path is required for data=npz"),
    "no such npz": (lambda t: ["data=npz", f"data.path={t}/nowhere.npz"], "nowhere.npz: no such file"),
    "corrupt npz": (lambda t: ["data=npz", f"data.path={corrupt_npz(t)}"], "corrupt.npz: not a readable .npz file"),
    "npz lacks arrays": (
        lambda t: ["data=npz", f"data.path={npz(t, 'empty.npz', z=np.zeros(3))}"],
        "lacks x_train, y_train",
    ),
    "x/y length mismatch": (
        lambda t: ["data=npz", f"data.path={npz(t, 'n.npz', x_train=np.zeros((50, 4, 4)), y_train=np.zeros(40, int))}"],
        "x_train has 50 images but y_train has 40 labels",
    ),
    "labels beyond class count": (
        lambda t: [
            "data=npz",
            "data.num_classes=3",
            f"data.path={npz(t, 'l.npz', x_train=np.zeros((60, 4, 4)), y_train=np.arange(60) % 5)}",
        ],
        "label 4 does not fit data.num_classes=3",
    ),
    "one stray huge label": (
        lambda t: [
            "data=npz",
            f"data.path={npz(t, 'stray.npz', x_train=np.zeros((60, 4, 4)), y_train=np.r_[np.arange(59) % 2, 10**8])}",
        ],
        "the labels hold 3 classes but run up to 100000000; labels must be 0..K-1 with every class present",
    ),
    "class_weight word": (lambda t: ["trainer.class_weight=heavy"], "trainer.class_weight='heavy'"),
    "class_weight negative": (lambda t: ["trainer.class_weight={0:1.0,1:-2.0}"], "trainer.class_weight: 1: -2.0"),
    "class_weight unknown class": (lambda t: ["trainer.class_weight={0:1.0,12:2.0}"], "names classes [12]"),
    "monitor typo": (lambda t: ["mlflow.monitor=val_los"], "mlflow.monitor='val_los'"),
    "plateau factor above 1": (
        lambda t: ["callbacks.reduce_lr_on_plateau.factor=2"],
        "callbacks.reduce_lr_on_plateau.factor=2: expected a number between 0 and 1",
    ),
    "interpolation of no key": (
        lambda t: ["mlflow.run_name=${model.name}-${reg.nope}"],
        "mlflow.run_name: Interpolation key 'reg.nope' not found",
    ),
    "registry name MLflow refuses": (
        lambda t: ["mlflow.registered_model_name=bad/name%"],
        "mlflow.registered_model_name='bad/name%': expected null or a name without / or :",
    ),
    "alias MLflow refuses": (lambda t: ["mlflow.registered_model_alias='bad alias!'"], "mlflow.registered_model_alias"),
    "alias MLflow keeps for itself": (
        lambda t: ["mlflow.registered_model_alias=latest"],
        "mlflow.registered_model_alias='latest': expected null or an alias of letters, digits, _ and - (not latest",
    ),
    "alias of a version": (lambda t: ["mlflow.registered_model_alias=v3"], "mlflow.registered_model_alias='v3'"),
    "more threads than CPUs": (
        lambda t: ["trainer.threads=1000000"],
        "trainer.threads=1000000: expected null or a whole number in 1..",
    ),
    "system metrics maybe": (
        lambda t: ["mlflow.log_system_metrics=maybe"],
        "mlflow.log_system_metrics='maybe': expected true or false",
    ),
    "plateau with cosine": (
        lambda t: ["schedule=cosine", "callbacks.reduce_lr_on_plateau={_target_: keras.callbacks.ReduceLROnPlateau}"],
        "callbacks.reduce_lr_on_plateau and schedule=cosine",
    ),
}


def refusal(compose_cfg, overrides: list[str]) -> str:
    """The one line the runner refuses this input with, before TensorFlow loads or a run exists."""
    with pytest.raises(ConfigError) as refused:
        load_checked_input(compose_cfg(*overrides))
    assert "\n" not in str(refused.value)
    return str(refused.value)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_in_one_line(compose_cfg, tracking_uri, tmp_path, case):
    overrides, message = CASES[case]
    line = refusal(compose_cfg, overrides(tmp_path))
    assert line == message or message in line
    assert all_runs(tracking_uri) == []


@pytest.mark.slow
@pytest.mark.parametrize("case", ["dropout above 1", "corrupt npz", "tracking store no database"])
def test_bad_input_is_one_line_on_stderr_and_exit_2_through_the_cli(run_cli, tracking_uri, tmp_path, case):
    overrides, message = {**CASES, **MORE_DATA_CASES}[case]
    done = run_cli("experiments.train", *overrides(tmp_path), timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().startswith("error: ") and message in done.stderr.strip()
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr  # TensorFlow did not load: not even its log lines
    assert "Traceback" not in done.stderr
    assert all_runs(tracking_uri) == []


def npz_claiming_a_huge_array(tmp_path):
    """An .npz whose x_train header claims 10^9 x 1000 float64 (7,450 GiB) over a few bytes of data."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**9, 1000)})
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x_train.npy", header.getvalue() + b"\0" * 64)
        archive.writestr("y_train.npy", npy_bytes(np.arange(10) % 2))
    return path


def zip_bomb_npz(tmp_path):
    """An .npz of 50 MB of zeros, stored deflated in well under 1 MB."""
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x_train.npy", npy_bytes(np.zeros((50 * 2**20 // 8,))))
        archive.writestr("y_train.npy", npy_bytes(np.arange(10) % 2))
    assert path.stat().st_size < 2**20
    return path


def npy_bytes(array) -> bytes:
    stream = io.BytesIO()
    np.save(stream, array)
    return stream.getvalue()


def shaped_npz(tmp_path, name, x_train, y_train, **more):
    return npz(tmp_path, name, x_train=x_train, y_train=y_train, **more)


MORE_DATA_CASES = {
    "an array header claiming 7,450 GiB": (
        lambda t: ["data=npz", f"data.path={npz_claiming_a_huge_array(t)}"],
        "x_train.npy holds 7450.6 GiB, more than data.max_gib=4; nothing was read",
    ),
    "a zip bomb": (
        lambda t: ["data=npz", f"data.path={zip_bomb_npz(t)}", "data.max_gib=0.01"],
        "x_train.npy holds 50 MiB, more than data.max_gib=0.01; nothing was read",
    ),
    "infinite pixels": (
        lambda t: ["data=npz", f"data.path={shaped_npz(t, 'inf.npz', np.full((20, 4, 4), np.inf), np.arange(20) % 2)}"],
        "contains NaN or infinite values",
    ),
    "empty data set": (
        lambda t: ["data=npz", f"data.path={shaped_npz(t, 'e.npz', np.zeros((0, 4, 4)), np.zeros(0, int))}"],
        "with N > 0",
    ),
    "test images of another shape": (
        lambda t: [
            "data=npz",
            "data.path="
            + str(
                shaped_npz(
                    t,
                    "s.npz",
                    np.zeros((40, 4, 4)),
                    np.arange(40) % 2,
                    x_test=np.zeros((10, 5, 5)),
                    y_test=np.arange(10) % 2,
                )
            ),
        ],
        "x_test images are (5, 5, 1) but x_train images are (4, 4, 1)",
    ),
    "text labels": (
        lambda t: ["data=npz", f"data.path={shaped_npz(t, 't.npz', np.zeros((20, 4, 4)), np.array(['a', 'b'] * 10))}"],
        "expected integer class labels, got dtype <U1",
    ),
    "negative wait": (lambda t: ["mlflow.wait_for_server_s=-1"], "mlflow.wait_for_server_s=-1"),
    "experiment name too long": (
        lambda t: ["mlflow.experiment_name=" + "x" * 501],
        "expected a non-empty name of at most 500 characters",
    ),
    "tracking store no database": (
        lambda t: [f"mlflow.tracking_uri=sqlite:///{not_a_database(t)}"],
        "mlflow.tracking_uri: cannot open the tracking store sqlite:///",
    ),
}


@pytest.mark.parametrize("case", list(MORE_DATA_CASES))
def test_more_bad_data_is_refused_in_one_line(compose_cfg, tracking_uri, tmp_path, case):
    overrides, message = MORE_DATA_CASES[case]
    assert message in refusal(compose_cfg, overrides(tmp_path))
    assert all_runs(tracking_uri) == []


@pytest.mark.slow
def test_resume_ids_that_cannot_be_resumed(run_cli, tracking_uri):
    client = mlflow.MlflowClient(tracking_uri)
    running = client.create_run(client.create_experiment("keras-experiments"))
    elsewhere = client.create_run(client.create_experiment("another"))
    client.set_terminated(elsewhere.info.run_id, "KILLED")
    client.log_text(elsewhere.info.run_id, "- trainer.epochs=2\n", "hydra/overrides.yaml")
    before = {run.info.run_id: (run.info.status, run.data.metrics, run.data.tags) for run in all_runs(tracking_uri)}
    cases = {
        "0123456789abcdef": "resume=0123456789abcdef: no such run",
        running.info.run_id: f"resume={running.info.run_id}: the run is RUNNING; "
        "only KILLED or FAILED runs can be resumed",
        elsewhere.info.run_id: f"resume={elsewhere.info.run_id}: the run belongs to experiment 'another', "
        "not 'keras-experiments'",
    }
    for run_id, message in cases.items():
        done = run_cli("experiments.train", f"resume={run_id}", timeout=120)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith(f"error: {message}"), done.stderr
    after = {run.info.run_id: (run.info.status, run.data.metrics, run.data.tags) for run in all_runs(tracking_uri)}
    assert after == before  # nothing modified, nothing new


@pytest.mark.slow
def test_an_argument_the_callback_refuses_is_one_line_and_no_run(run_cli, tracking_uri):
    # Caught once TensorFlow is loaded, when the callbacks are built: still before any run exists.
    done = run_cli("experiments.train", "+callbacks.early_stopping.wait=3", timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "error: callbacks.early_stopping: EarlyStopping.__init__() got an unexpected keyword argument 'wait'"
    )
    assert all_runs(tracking_uri) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "named"),
    [("reg=elastic", "reg/elastic"), ("model=resnet", "model/resnet"), ("trainer.epoch=3", "trainer.epoch")],
)
def test_unknown_option_or_key_names_it(run_cli, tracking_uri, override, named):
    done = run_cli("experiments.train", override, timeout=120)
    assert done.returncode != 0
    assert named in done.stderr and "Traceback" not in done.stderr
    assert all_runs(tracking_uri) == []


def test_a_deleted_experiment_or_run_is_named_before_training(compose_cfg, tracking_uri):
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.create_experiment("keras-experiments")
    run_id = client.create_run(experiment).info.run_id
    client.set_terminated(run_id, "KILLED")
    client.delete_run(run_id)
    assert refusal(compose_cfg, [f"resume={run_id}"]).startswith(f"resume={run_id}: the run is deleted; restore it")
    client.delete_experiment(experiment)
    assert refusal(compose_cfg, []).startswith(
        "mlflow.experiment_name=keras-experiments: the experiment is deleted; restore it"
    )


@pytest.mark.parametrize("name", ["k" * 251, "a*b", "../escape"])
def test_a_tag_name_mlflow_would_refuse_is_named_before_training(compose_cfg, name):
    from omegaconf import open_dict

    from experiments.checks import check_config

    cfg = compose_cfg()
    with open_dict(cfg):
        cfg.mlflow.tags = {name: "v"}  # as a YAML file of tags, or +mlflow.tags={...}, would give it
    with pytest.raises(ConfigError, match=r"expected a tag name of at most 250 letters, digits, spaces and _ - \. / :"):
        check_config(cfg)
