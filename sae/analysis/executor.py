"""Where the shards of the analysis's pass 1 run: one after another in this process (the default), or as Ray tasks.

The work is the same either way: shards of whole batches of sequences -> `analyze_shard` -> `finish` (the reduce, in
the calling process). An executor only maps a function over the shards and returns their results in order.

Ray (`pip install 'monoscope[ray]'`): each task loads the LM, the bases and the tokens from the run folder itself and
writes its spill into a folder under the run's analysis/, which the reduce then reads. Workers on other machines
therefore need the run folder on a shared filesystem, at the same path as on the machine that starts the analysis;
a worker that cannot see it fails with one line saying so (`sae.analysis.run.run_shard`).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

from sae.errors import MonoscopeError

EXECUTORS = ("local", "ray")
RAY_MISSING = "the Ray executor needs Ray: pip install 'monoscope[ray]'"


def shard_ranges(n_seq: int, batch_sequences: int, n_shards: int) -> list[tuple[int, int]]:
    """Return at most n_shards contiguous sequence ranges [start, end) covering n_seq sequences, cut only at multiples
    of batch_sequences (so every shard sees the batches the whole would) and as even as whole batches allow."""
    n_batches = math.ceil(n_seq / batch_sequences)
    n = max(1, min(n_shards, n_batches))
    cuts = [min(n_seq, (i * n_batches // n) * batch_sequences) for i in range(n + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


class LocalExecutor:
    """Runs the shards one after another in this process (with the LM and bases the caller already loaded)."""

    remote = False

    def __init__(self, n_shards: int | None = None) -> None:
        self._n_shards = n_shards or 1

    def n_shards(self) -> int:
        return self._n_shards

    def map(self, fn: Callable, items: Sequence, done: Callable[[int], None] | None = None) -> list:
        """Return [fn(item) for item in items]."""
        results = []
        for i, item in enumerate(items):
            results.append(fn(item))
            if done is not None:
                done(i)
        return results

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc) -> None:
        pass


def _with_threads(fn: Callable, n_threads: int, item):
    """Return fn(item) with torch at n_threads threads: the CPUs Ray gave the task (the encoder runs on CPU)."""
    import torch

    torch.set_num_threads(n_threads)
    return fn(item)


class RayExecutor:
    """Runs each shard as a Ray task: on a local Ray it starts (address None) or on the cluster at `address`.

    Ray starts on the first use, not here, so an analysis that is up to date costs no cluster. Each task gets an equal
    part of the cluster's CPUs (at least one, at most a node's) and as many torch threads, and one GPU where the
    cluster has GPUs and the device is not `cpu` (Ray hides the GPUs from tasks that ask for none).
    """

    remote = True

    def __init__(self, address: str | None = None, n_shards: int | None = None, device: str = "auto") -> None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise MonoscopeError(RAY_MISSING) from None
        self.address, self.device, self._n_shards = address, device, n_shards
        self._started = self._connected = False
        self._gpus = 0

    def _connect(self):
        import ray

        if not self._connected:
            if not ray.is_initialized():
                options = {} if self.address else {"include_dashboard": False}
                try:
                    ray.init(address=self.address, log_to_driver=False, **options)
                except Exception as e:  # Ray raises ConnectionError, ValueError, RuntimeError... for a bad address
                    where = self.address or "a local Ray"
                    raise MonoscopeError(f"could not start or reach {where}: {str(e).splitlines()[0]}") from None
                self._started = True
            resources = ray.cluster_resources()
            self._gpus = 0 if self.device == "cpu" else int(resources.get("GPU", 0))
            if self.device == "cuda" and not self._gpus:
                raise MonoscopeError("--device cuda: the Ray cluster has no GPU")
            self._cpus = max(1, int(resources.get("CPU", 1)))
            self._node_cpus = max([int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n["Alive"]] + [1])
            self._connected = True
        return ray

    def n_shards(self) -> int:
        """Return the shards asked for, else one per GPU of the cluster (when used), else one per CPU."""
        self._connect()
        return self._n_shards or self._gpus or self._cpus

    def map(self, fn: Callable, items: Sequence, done: Callable[[int], None] | None = None) -> list:
        """Return [fn(item) for item in items], each call a Ray task; a task's MonoscopeError comes back as one line."""
        ray = self._connect()
        cpus = max(1, min(self._cpus // max(len(items), 1), self._node_cpus))
        task = ray.remote(_with_threads).options(num_cpus=cpus, num_gpus=1 if self._gpus else 0)
        refs = [task.remote(fn, cpus, item) for item in items]
        index = {ref: i for i, ref in enumerate(refs)}
        pending = list(refs)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                ray.get(ready)  # raises a failed task's error now, not after every other task
                if done is not None:
                    done(index[ready[0]])
            return ray.get(refs)
        except ray.exceptions.RayTaskError as e:
            for ref in pending:
                ray.cancel(ref)
            if isinstance(e.cause, MonoscopeError):
                raise MonoscopeError(str(e.cause)) from None
            raise

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = self._connected = False


def make_executor(name: str, address: str | None = None, n_shards: int | None = None, device: str = "auto"):
    """Return the executor `name` (local or ray), or refuse bad options in one line."""
    if name not in EXECUTORS:
        raise MonoscopeError(f"unknown executor {name!r}: choose one of {', '.join(EXECUTORS)}")
    if n_shards is not None and n_shards <= 0:
        raise MonoscopeError(f"--shards must be positive, got {n_shards}")
    if name == "local":
        if address is not None:
            raise MonoscopeError("--address is for --executor ray")
        return LocalExecutor(n_shards)
    return RayExecutor(address, n_shards, device)
