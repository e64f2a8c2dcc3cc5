"""Run independent per-item work (one stem, one song) here or as Ray tasks on a cluster: ``Executor.imap``.

The local executor with one worker is a plain in-process loop; with ``workers`` > 1 it is a pool of that many
spawned processes on this machine (one BLAS / OpenMP / torch thread each), started once and kept until
``shutdown()``, at most ``max_in_flight`` items sent ahead; results are identical to the loop's (every ``fn``
is pure and seeded by its item), in input order. The Ray executor submits one
task per item, at most ``max_in_flight`` at a time (items are produced lazily, so a stage never holds every
stem's audio at once), each with ``cpus_per_task`` CPUs, ``gpus_per_task`` GPUs when the cluster has GPUs, and
one torch / BLAS thread; results come back in input order. ``fn`` and the items travel by pickle (cloudpickle
for ``fn``): a module-level function or a ``functools.partial`` of one, never an open file or a model on a GPU.
Every node must have stemsift and its dependencies installed (the same venv or image), as for any Ray program.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

EXECUTORS = ("local", "ray")
# Threads of the numeric libraries inside a Ray task: one per task, so N tasks on N cores do not thrash.
THREAD_ENV = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
_POOLS: dict[int, ProcessPoolExecutor] = {}  # local worker pools by size, kept across calls until shutdown()


class ComputeError(RuntimeError):
    """A cluster that cannot be reached or used; the message is one line naming the address and the fault."""


def _one_thread_call(fn: Callable, item: Any) -> Any:
    """Body of every Ray task: torch limited to one thread (its default is every core of the node), then fn(item)."""
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    return fn(item)


def _one_thread_worker() -> None:
    """Initializer of a local pool's process: one thread for every numeric library it will import."""
    os.environ.update(THREAD_ENV)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # libraries already loaded (numpy's BLAS)


def _pool_call_many(fn: Callable, items: list) -> list:
    """Body of a local pool task: torch (when ``fn`` brought it in) limited to one thread, then fn on each item."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    return [fn(item) for item in items]


def _chunks(items: Iterable[Any], size: int) -> Iterator[list]:
    part: list = []
    for item in items:
        part.append(item)
        if len(part) == size:
            yield part
            part = []
    if part:
        yield part


@dataclass(frozen=True)
class Executor:
    """Where per-item work runs. ``kind``: local | ray; ``workers``: processes of the local executor (1: in this
    process); ``address``: a Ray address ('auto', 'host:port', 'ray://host:10001') or None to start a private Ray
    instance on this machine."""

    kind: str = "local"
    address: str | None = None
    cpus_per_task: float = 1.0
    gpus_per_task: float = 1.0      # used only when the cluster reports GPUs
    max_in_flight: int = 64
    workers: int = 1

    def __post_init__(self):
        if self.kind not in EXECUTORS:
            raise ComputeError(f"compute.executor: unknown executor {self.kind!r} (use {', '.join(EXECUTORS)})")
        if not isinstance(self.workers, int) or isinstance(self.workers, bool) or self.workers < 1:
            raise ComputeError(f"compute.workers: expected a number of processes >= 1, got {self.workers!r}")

    @property
    def in_process(self) -> bool:
        """True when items run in this process, one after the other (local, one worker)."""
        return self.kind == "local" and self.workers == 1

    def imap(self, fn: Callable[[Any], Any], items: Iterable[Any], gpus: bool = True) -> Iterator[Any]:
        """fn(item) for every item, yielded in input order; gpus=False: CPU tasks even on a GPU cluster."""
        if self.in_process:
            return (fn(item) for item in items)
        if self.kind == "local":
            return self._pool_imap(fn, items)
        return self._ray_imap(fn, items, gpus)

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], gpus: bool = True) -> list:
        return list(self.imap(fn, items, gpus))

    def gpus(self) -> float:
        """GPUs each task asks for: gpus_per_task when the cluster has any, else 0 (CPU tasks)."""
        if self.kind == "local":
            return 0.0
        ray = self._connect()
        return float(self.gpus_per_task) if ray.cluster_resources().get("GPU", 0) > 0 else 0.0

    def _connect(self):
        if "ray" not in sys.modules or not sys.modules["ray"].is_initialized():
            self._check_reachable()
        if self.address is None and "ray" not in sys.modules:
            # A private instance serves this machine only: keep Ray's node IP on loopback (Linux would otherwise
            # use the public IP and listen on every interface).
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        try:
            import ray
        except ImportError:
            raise ComputeError("compute.executor: ray is not installed (pip install -e '.[scale]')") from None
        if not ray.is_initialized():
            try:
                # runtime_env: every task's worker gets one BLAS/OMP thread before numpy/torch import.
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                         logging_level="WARNING", configure_logging=True,
                         runtime_env={"env_vars": THREAD_ENV})
            except (ConnectionError, RuntimeError, ValueError) as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ComputeError(f"compute.address={self.address!r}: cannot connect to Ray ({first})") from None
        return ray

    def _check_reachable(self, timeout: float = 5.0) -> None:
        """A host:port address nobody listens on fails here in one line (ray.init would retry for minutes)."""
        import socket

        addr = self.address or ""
        if addr in ("", "auto", "local") or "://" in addr or ":" not in addr:
            return
        host, _, port = addr.rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
        except (OSError, ValueError) as e:
            raise ComputeError(f"compute.address={addr!r}: no Ray head answers there ({e}); "
                               "start one with `ray start --head` or fix the address") from None

    def _pool_imap(self, fn: Callable, items: Iterable[Any]) -> Iterator[Any]:
        pool = _POOLS.get(self.workers)
        if pool is None:  # spawned, not forked: a parent holding torch / OpenMP threads cannot be forked safely
            pool = _POOLS[self.workers] = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_one_thread_worker)
        # items go in chunks, so ``fn`` (a partial may carry reference data) is pickled once per chunk, not per item;
        # about two chunks per worker in flight, at most max_in_flight items
        chunk = max(1, self.max_in_flight // (2 * self.workers))
        pending: deque = deque()
        for part in _chunks(items, chunk):
            pending.append(pool.submit(_pool_call_many, fn, part))
            if len(pending) * chunk >= self.max_in_flight:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()

    def _ray_imap(self, fn: Callable, items: Iterable[Any], gpus: bool) -> Iterator[Any]:
        ray = self._connect()
        # Ray's default retries re-run a task whose worker or node died (fn is pure); fn's own errors are raised.
        task = ray.remote(_one_thread_call).options(num_cpus=self.cpus_per_task,
                                                    num_gpus=self.gpus() if gpus else 0)
        fn_ref = ray.put(fn)  # shipped once, not once per task
        pending: deque = deque()
        for item in items:
            pending.append(task.remote(fn_ref, item))
            if len(pending) >= self.max_in_flight:
                yield ray.get(pending.popleft())
        while pending:
            yield ray.get(pending.popleft())


def executor_from_params(block) -> Executor:
    """Executor from the typed ``compute`` params block (stemsift.params.ComputeParams)."""
    return Executor(kind=block.executor, address=block.address or None, cpus_per_task=float(block.cpus_per_task),
                    gpus_per_task=float(block.gpus_per_task), max_in_flight=int(block.max_in_flight),
                    workers=block.workers)


def shutdown() -> None:
    """Stop the local worker pools and disconnect this driver from Ray (the cluster keeps running); a no-op when
    neither was used."""
    while _POOLS:
        _POOLS.popitem()[1].shutdown(cancel_futures=True)
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
