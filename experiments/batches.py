"""NumPy batches for every Keras backend: the runner's input pipeline on JAX and PyTorch (TensorFlow
keeps tf.data, see experiments.data.make_pipeline and docs/benchmarks.md)."""

from __future__ import annotations

import keras
import numpy as np

from experiments.data import Split, steps_per_epoch


class Batches(keras.utils.PyDataset):
    """A split in batches, in one seeded order per epoch when shuffled (training).

    Epoch k's order depends on the seed and k alone, so a run resumed at epoch k (``start_epoch``)
    sees the orders it would have seen had it not stopped. Without a seed: the split's own order.
    """

    def __init__(self, split: Split, batch_size: int, shuffle_seed: int | None = None, start_epoch: int = 0):
        super().__init__()  # one worker, no processes: batches are slices of arrays in memory
        self.split, self.batch_size, self.shuffle_seed = split, batch_size, shuffle_seed
        self.epoch = start_epoch
        self.order = self._order()

    def __len__(self) -> int:
        return steps_per_epoch(self.split, self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        picked = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        return self.split.x[picked], self.split.y[picked]

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._order()

    def _order(self) -> np.ndarray:
        if self.shuffle_seed is None:
            return np.arange(len(self.split))
        return np.random.default_rng([self.shuffle_seed, self.epoch]).permutation(len(self.split))
