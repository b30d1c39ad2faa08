"""Files a training run leaves behind: history.csv, lr_changes.csv, model_summary.txt.

learning_curves.png is drawn by plugins/curves.py.

pandas is imported where it is used: the plot's helper process imports this module for
write_atomically only, and starts faster without it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class LearningRateChange:
    epoch: int  # first epoch trained at the new rate
    old_learning_rate: float
    new_learning_rate: float
    cause: str  # plateau | scheduler | schedule | new fit | earlier fit


LR_CHANGE_COLUMNS = list(LearningRateChange.__dataclass_fields__)


def write_atomically(path: Path, write) -> Path:
    """Write through a temporary file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp{path.suffix}")
    write(temporary)
    os.replace(temporary, path)
    return path


# Six significant digits: float32 values carry no more, and 1e-4 reads as 0.0001, not 0.00009999999747378752.
FLOAT_FORMAT = "%.6g"


def write_history(rows: list[dict], path: Path) -> Path:
    """One row per epoch, every metric including the learning rate."""
    import pandas as pd

    return write_atomically(path, lambda tmp: pd.DataFrame(rows).to_csv(tmp, index=False, float_format=FLOAT_FORMAT))


def write_lr_changes(changes: list[LearningRateChange], path: Path) -> Path:
    import pandas as pd

    frame = pd.DataFrame([asdict(change) for change in changes], columns=LR_CHANGE_COLUMNS)
    return write_atomically(path, lambda tmp: frame.to_csv(tmp, index=False, float_format=FLOAT_FORMAT))


def write_text(text: str, path: Path) -> Path:
    return write_atomically(path, lambda tmp: tmp.write_text(text))
