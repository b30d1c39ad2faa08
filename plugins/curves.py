"""learning_curves.png, drawn in a helper process while the training process saves the model.

Drawing the panels takes about 0.1 s of CPU. In the training process it would hold the GIL at
the end of training, one after the other with the model save. A helper Python process (matplotlib
only) is started when training starts, kept for the life of the process and shared by its fits; it
draws on another core. Where there is one core, or the helper cannot start, is drawing another fit's
plot, fails or gives no answer in time, the plot is drawn in this process: the same function writes
the same file.

    python -m plugins.curves    the helper: one JSON request a line on stdin, one JSON answer a line on stdout
"""

from __future__ import annotations

import atexit
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as AnswerTimeout
from contextlib import suppress
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from plugins.artifacts import write_atomically

log = logging.getLogger(__name__)

USUAL_COLUMNS = ("loss", "val_loss", "accuracy", "val_accuracy", "learning_rate")  # a classifier's
_NOT_A_METRIC = re.compile(r"^(epoch|.*learning_rate|epoch_time_s|gap_.*|val_.*|train_eval_.*|weight_norm|.*loss)$")
ANSWER_TIMEOUT_S = 30.0  # a plot takes 0.1 s; far past that the helper is stuck, not slow
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def draw_learning_curves(
    rows: list[dict], path: Path, figures: dict | None = None, title: str = "", best_epoch: int | None = None
) -> Path:
    """Train vs validation loss and accuracy, and the learning rate, per epoch, under ``title``, the
    best epoch marked; written atomically.

    ``figures`` keeps the figure of each set of columns for the next call (the helper's, single
    threaded): redrawn with new data, it skips building axes and ticks, a third of the cost.
    """
    figure = learning_curves_figure(rows, figures, title, best_epoch)
    return write_atomically(path, lambda temporary: figure.savefig(temporary, dpi=80, format="png"))


def learning_curves_figure(
    rows: list[dict], figures: dict | None = None, title: str = "", best_epoch: int | None = None
) -> Figure:
    """The plot's figure, given ``rows``' data (``figures``: see draw_learning_curves)."""
    panels = _panels(rows)
    figure, lines, marks = figures[panels] if figures and panels in figures else _empty_figure(panels)
    if figures is not None:
        figures[panels] = figure, lines, marks
    for column, line in lines.items():
        # Only the epochs that logged the column: validated every few epochs (validation_freq), the
        # validation curve joins the epochs it has. A logged NaN still breaks the line.
        logged = [row for row in rows if column in row]
        line.set_data([row["epoch"] for row in logged], [row[column] for row in logged])
    marks["title"].set_text(title + (f"   (best epoch {best_epoch}: dashed)" if best_epoch is not None else ""))
    for best in marks["best"]:
        best.set_xdata([best_epoch, best_epoch] if best_epoch is not None else [float("nan")] * 2)
        best.set_visible(best_epoch is not None)
    for axes in figure.axes:
        axes.relim(visible_only=True)
        axes.autoscale_view()
    return figure


def _panels(rows: list[dict]) -> tuple[tuple[str, ...], ...]:
    """The columns of each panel that ``rows`` have: the loss, the accuracy (or, where the model has
    none, its first metric, such as a regression's mae), each beside its validation twin, and the
    learning rate. A panel with no column is left out."""
    keys = dict.fromkeys(key for row in rows for key in row)  # in the order Keras logs them
    metrics = [key for key in keys if not _NOT_A_METRIC.match(key)]
    metric = accuracy_key(metrics) or (metrics[0] if metrics else None)
    # train_eval_*: the training sample measured as validation is (MLflowCallback's diagnostics).
    wanted = [
        ("loss", "val_loss", "train_eval_loss"),
        (metric, f"val_{metric}", f"train_eval_{metric}") if metric else (),
        ("learning_rate",),
    ]
    panels = tuple(tuple(column for column in columns if column in keys) for columns in wanted)
    return tuple(panel for panel in panels if panel) or (("loss",),)  # no epoch ended: one empty panel


def accuracy_key(keys) -> str | None:
    """The model's accuracy among its log ``keys``: ``accuracy``, else the first that names one in
    another way (``acc``, ``sparse_categorical_accuracy``); None for a model without."""
    keys = [key for key in keys if not key.startswith(("val_", "gap_", "train_eval_"))]
    return "accuracy" if "accuracy" in keys else next((key for key in keys if key.endswith(("accuracy", "acc"))), None)


def _empty_figure(panels: tuple[tuple[str, ...], ...]) -> tuple[Figure, dict[str, Line2D], dict]:
    """A panel per tuple of columns, with an empty line per column, to be given data, and the marks
    each plot sets: its title and the best epoch's line in every panel."""
    # A Figure without pyplot keeps no global state, so this is safe off the main thread.
    figure = Figure(figsize=(13, 3.9))
    FigureCanvasAgg(figure)
    lines, marks = {}, {"title": figure.suptitle("", fontsize=11), "best": []}
    for axes, panel in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels):
        rate = panel == ("learning_rate",)
        for column in panel:
            # The rate in force during an epoch holds until the next one begins: a step, not a slope.
            style = {"drawstyle": "steps-post"} if rate else {"marker": "o", "markersize": 3}
            (lines[column],) = axes.plot([], [], label=column, **style)
        (best,) = axes.plot([], [], color="0.4", linestyle="--", linewidth=1, label="_best epoch")
        best.set_transform(axes.get_xaxis_transform())  # x in epochs, y across the whole panel
        best.set_ydata([0, 1])
        marks["best"].append(best)
        axes.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
        axes.set_ylabel(panel[0].replace("_", " "), fontsize=9)
        if rate:
            # A log scale (1e-5 is not 0), labelled 1e-03, 5e-04, ... without mathtext (it costs).
            axes.set_yscale("log")
            axes.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.0e}"))
            axes.yaxis.set_minor_formatter(NullFormatter())
        else:
            axes.yaxis.set_major_locator(MaxNLocator(nbins=5))
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    # Fixed margins: constrained layout doubles the cost.
    figure.supxlabel("epoch", fontsize=10)
    figure.subplots_adjust(left=0.06, right=0.99, bottom=0.14, top=0.86, wspace=0.25)
    return figure, lines, marks


def plot_learning_curves(rows: list[dict], path: Path, title: str = "", best_epoch: int | None = None) -> Path:
    """Draw the plot in the helper process, or here where the helper cannot; waits for the file.

    The wait holds no GIL, so the training process's other threads (the model save) go on meanwhile.
    """
    answer = HELPER.draw(rows, path, title, best_epoch)
    if "path" in answer:
        return path
    log.info("learning_curves.png: drawn in this process (the helper process: %s)", answer["error"])
    return draw_learning_curves(rows, path, title=title, best_epoch=best_epoch)


class HelperProcess:
    """The helper process of this Python process, started once and shared by its fits."""

    def __init__(self):
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()  # one request in flight
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="learning-curves")

    def start(self) -> None:
        """Start it if it is not running, so it is ready (matplotlib loaded) by the end of training."""
        if _cores() > 1 and self._lock.acquire(blocking=False):  # else it is drawing, so running
            try:
                self._start()
            except OSError as error:
                log.info("learning_curves.png: no helper process (%s); plots are drawn in this process", error)
            finally:
                self._lock.release()

    def draw(self, rows: list[dict], path: Path, title: str = "", best_epoch: int | None = None) -> dict:
        """The helper's answer: {"path", "cpu_s"} once it wrote the file, or {"error"}."""
        if _cores() < 2:  # it would take its start-up and its drawing from training's one core
            return {"error": "one CPU core, none to draw on beside training"}
        if not self._lock.acquire(blocking=False):
            return {"error": "drawing another fit's plot"}
        try:
            return self._ask({"rows": rows, "path": str(path), "title": title, "best_epoch": best_epoch}, path)
        except Exception as error:  # it could not start, died, hung or answered nonsense
            self._end_broken()
            return {
                "error": f"no answer in {ANSWER_TIMEOUT_S:.0f} s"
                if isinstance(error, AnswerTimeout)
                else f"{type(error).__name__}: {error}"
            }
        finally:
            self._lock.release()

    def _ask(self, request: dict, path: Path) -> dict:
        self._start()
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        line = self._reader.submit(self._process.stdout.readline).result(timeout=ANSWER_TIMEOUT_S)
        if not line:
            raise EOFError("it ended")
        answer = json.loads(line)
        if not _answers(answer, path):
            raise ValueError(f"an answer out of step: {line.strip()[:80]}")
        return answer

    def stop(self) -> None:
        """End it (at exit): it reads the end of its input and returns."""
        with self._lock:
            if self._process is None:
                return
            self._process.stdin.close()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
            self._process = None

    def forget_in_forked_child(self) -> None:
        """A forked child holds copies of the parent's pipes and lock (held, if a thread was drawing):
        it closes the pipes, takes a new lock and starts a helper of its own when it needs one."""
        if self._process is not None:
            self._process.stdin.close()
            self._process.stdout.close()
        self.__init__()

    def _end_broken(self) -> None:
        """Kill a helper that failed once (its readline returns), so the next request starts a new one."""
        if self._process is not None:
            self._process.kill()
            with suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=5)  # gone before this process draws the same file
            self._process = None

    def _start(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        environment = dict(
            os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))
        )
        self._process = subprocess.Popen(
            [sys.executable, "-m", "plugins.curves"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=environment,
        )


def _answers(answer, path: Path) -> bool:
    """Whether ``answer`` is the helper's answer to a request for ``path`` (the file, or an error)."""
    return isinstance(answer, dict) and (answer.get("path") == str(path) or "path" not in answer and "error" in answer)


def _cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


HELPER = HelperProcess()
atexit.register(HELPER.stop)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: HELPER.forget_in_forked_child())


def _serve() -> None:
    """The helper's loop: draw each requested plot, answer with its path or the error."""
    answers, sys.stdout = sys.stdout, sys.stderr  # stdout carries answers only, whatever else prints
    # Ctrl-C in a terminal reaches the whole process group: the training process stops after its epoch
    # and still wants its plot. The helper ends when that process closes its input.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    figures: dict = {}
    # The usual plot drawn once first, so fonts, caches and its figure are ready before training ends.
    sample = [{"epoch": epoch, **dict.fromkeys(USUAL_COLUMNS, 1.0)} for epoch in range(2)]
    learning_curves_figure(sample, figures).savefig(io.BytesIO(), dpi=80, format="png")
    for line in sys.stdin:
        started = time.process_time()
        try:
            request = json.loads(line)
            drawn = draw_learning_curves(
                request["rows"], Path(request["path"]), figures, request.get("title", ""), request.get("best_epoch")
            )
            answer = {"path": str(drawn)}
        except Exception as error:
            answer = {"error": f"{type(error).__name__}: {error}"}
        answer["cpu_s"] = time.process_time() - started
        print(json.dumps(answer), file=answers, flush=True)


if __name__ == "__main__":
    _serve()
