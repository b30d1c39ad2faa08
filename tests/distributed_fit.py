"""One of two processes that fit a model together, each with MLflowCallback, on JAX
(``jax.distributed``) or PyTorch (``torch.distributed``, gloo) over 127.0.0.1:

    KERAS_BACKEND=jax python tests/distributed_fit.py RANK PORT

Prints ``run <id>`` (``run None`` where this process logged nothing)."""

from __future__ import annotations

import sys

import keras
import numpy as np

from plugins import MLflowCallback


def join(rank: int, port: int) -> None:
    """This process joins the group of two; the coordinator (or rendezvous) is rank 0's, on 127.0.0.1."""
    if keras.backend.backend() == "jax":
        import jax

        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=rank)
    else:
        import torch.distributed as distributed

        distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)


if __name__ == "__main__":
    rank, port = int(sys.argv[1]), int(sys.argv[2])
    join(rank, port)
    x = np.random.default_rng(rank).normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    tracker = MLflowCallback(log_model=False)
    model.fit(x, y, validation_split=0.25, epochs=2, verbose=0, callbacks=[tracker])
    print(f"run {tracker.run_id}")
