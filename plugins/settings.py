"""What the callback was asked to do, checked once when it is made and read by every part."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plugins.metric_names import MODES
from plugins.run_binding import RunSettings

SECONDS = ("metrics_interval_s", "checkpoint_interval_s", "flush_timeout_s")
UNSENT_FOLDER = "mlflow-unsent"  # under the working folder: where a callback without output_dir keeps what was not sent


@dataclass(frozen=True)
class TrackingSettings:
    """What an ``MLflowCallback`` was asked to do. Made once by the callback, which checks each
    value here (a ValueError naming the first that cannot work, before any training); every part
    of a fit reads its own settings from it.

    Attributes:
        monitor: metric that picks the best epoch, e.g. ``val_loss``.
        mode: ``min``, ``max`` or ``auto``: as Keras' callbacks, the direction the monitored metric
            declares (up for accuracy, AUC, R2Score, IoU, ...); for a metric that declares none, max
            for accuracy-like names and min otherwise.
        params: extra params to log, flat (``plugins.params.flatten``).
        log_every_n_steps: also log ``batch_<metric>`` every N optimizer steps; None: epochs only.
        log_model: log the best model as an MLflow Model (Keras flavour), stored once: an MLflow 3 logged
            model at the best epoch's step, with that epoch's metrics linked (else the run's ``model/``).
        registered_model_name: also register the logged model under this name.
        registered_model_alias: the alias the new version gets (None: none).
        input_example: a few inputs stored with the MLflow Model; their dtypes are its signature's.
        diagnostics: also log ``penalty_loss`` and ``weight_norm`` each epoch and, with
            ``diagnostics_data``, ``train_eval_*``, ``gap_loss_eval``, ``gap_accuracy_eval`` (plugins/diagnostics.py).
        diagnostics_data: ``(x, y)``, a fixed sample of the training data, about the validation data's size.
        metrics_interval_s: least time between two log_batch calls of metrics. Epochs (and logged
            steps) that end sooner wait and go in the next call, each point with its own step; 0:
            one call per epoch. Everything waiting is sent before the run ends.
        checkpoint_interval_s: least time between two background writes of checkpoints/best.keras
            during training, and from its start to the first; None (the default): none, since each
            takes a core from training and grows with the model. The best is always written when
            training ends, however it ends (a signal, an error); only a killed process (kill -9,
            a lost machine) needs a background write to leave one behind.
        flush_timeout_s: at the end, how long to keep retrying what the tracking server did not take.
        output_dir: where local copies of the artifacts go; None: a temporary folder.
        run: how a run the callback starts is made (experiment and run name, tags, tracking URI, a run
            to reopen, how long to wait for the server, system metrics).
    """

    monitor: str = "val_loss"
    mode: str = "auto"
    params: Mapping[str, Any] = field(default_factory=dict)
    log_every_n_steps: int | None = None
    log_model: bool = True
    registered_model_name: str | None = None
    registered_model_alias: str | None = "candidate"
    input_example: Any = None
    diagnostics: bool = False
    diagnostics_data: tuple[Any, Any] | None = None
    metrics_interval_s: float = 1.0
    checkpoint_interval_s: float | None = None
    flush_timeout_s: float = 120.0
    output_dir: Path | None = None
    run: RunSettings = field(default_factory=RunSettings)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r}: expected one of {', '.join(MODES)}")
        steps = self.log_every_n_steps
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            raise ValueError(f"log_every_n_steps={steps!r}: expected None or a whole number >= 1")
        _check_diagnostics_data(self.diagnostics_data)
        seconds = {name: getattr(self, name) for name in SECONDS}
        if self.checkpoint_interval_s is None:
            del seconds["checkpoint_interval_s"]  # no background writes
        for name, value in {**seconds, "wait_for_server_s": self.run.wait_for_server_s}.items():
            # Compared with clocks inside hooks that never raise: a bad one would end tracking mid-fit.
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name}={value!r}: expected a number of seconds >= 0")

    @property
    def spool_base(self) -> Path:
        """Where what the server never takes is kept."""
        return self.output_dir or Path.cwd() / UNSENT_FOLDER


def check_mapping(name: str, value: Any, expected: str) -> None:
    """A ValueError naming ``name`` unless ``value`` is None or a mapping."""
    if value is not None and not isinstance(value, Mapping):
        raise ValueError(f"{name}={value!r}: expected {expected}")


def made_folder(path: Path | None) -> None:
    """Make ``path`` if need be; a ValueError naming it where no folder can be made."""
    if path is None:
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"output_dir={str(path)!r}: expected a folder that can be made ({error.strerror})") from None


def _check_diagnostics_data(data: Any) -> None:
    if data is None:
        return
    if not (isinstance(data, (tuple, list)) and len(data) == 2 and len(data[0]) == len(data[1]) > 0):
        raise ValueError("diagnostics_data: expected (x, y), a sample of the training data with as many x as y")
