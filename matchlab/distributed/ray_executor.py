"""The Ray executor: tasks run on Ray actors, one model each, results come back to the
driver (the process running the stage), which writes them.

- Workers: `workers` actors (default: one per GPU of the cluster when it has GPUs, each
  taking `gpus_per_worker` of one, else one per CPU core), spread over the nodes. Each
  builds its model once (`WorkerSpec`), on "cuda" when it holds a GPU share, else the CPU.
- Split: the tasks (in the stage's deterministic order) are dealt to the workers in
  contiguous blocks, so consecutive chunks of pairs (which share images) meet one worker's
  feature cache. At most `in_flight` tasks per worker are outstanding: memory does not grow
  with the number of items.
- Faults: an actor whose process dies is restarted (`max_restarts`) and its outstanding
  tasks retried (`max_task_retries`), by Ray; a worker that dies more often than that ends
  the stage with a ClusterError (what was written stays; a rerun resumes).
- Ray: `address` None starts a local Ray in this process (and stops it at the end);
  otherwise the driver connects to the running cluster at `address` ("auto": the one this
  machine belongs to). Ray is imported only here: without it, everything else works.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Any, Callable, Iterable, Iterator

from ..errors import ClusterError, UsageError
from .executors import WorkerSpec
from .worker import Worker

INSTALL_HINT = "the ray executor needs Ray: pip install 'matchlab[ray]'"


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return ray


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """ClusterError unless something listens at `address` ("host:port", the head node)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except ValueError:
        raise UsageError(f"--ray-address {address}: expected HOST:PORT (or auto)") from None
    except OSError as e:
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {e.strerror or e} "
                           f"(start it with `ray start --head` there, or give its address "
                           f"as `ray status` prints it)") from None


class RayExecutor:
    """See the module docstring. Use it in a `with` block (or call `close()`), which stops
    the local Ray it started, if any."""

    def __init__(self, address: str | None = None, workers: int | None = None,
                 gpus_per_worker: float | None = None, ship_images: bool = False,
                 in_flight: int = 2, max_restarts: int = 3, start_timeout: float = 300.0,
                 log: Callable[[str], None] | None = None) -> None:
        if workers is not None and workers < 1:
            raise UsageError(f"--workers must be at least 1, got {workers}")
        if gpus_per_worker is not None and (gpus_per_worker < 0 or (
                gpus_per_worker > 1 and gpus_per_worker != int(gpus_per_worker))):
            raise UsageError(f"--gpus-per-worker must be a fraction of one GPU or a whole "
                             f"number of GPUs, got {gpus_per_worker}")
        self.ray = _import_ray()
        self.address, self.workers, self.gpus = address, workers, gpus_per_worker
        self.ship_images, self.in_flight = ship_images, max(int(in_flight), 1)
        self.max_restarts, self.start_timeout, self.log = max_restarts, start_timeout, log
        self.started = False
        self.start_seconds = 0.0  # spent starting workers (building models), all stages
        if not self.ray.is_initialized():
            if address not in (None, "auto"):
                _check_reachable(address)  # ray.init would wait for minutes
            try:
                if address is None:
                    self.ray.init(include_dashboard=False, log_to_driver=False,
                                  configure_logging=False)
                else:
                    self.ray.init(address=address, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = f"the Ray cluster at {address}" if address else "a local Ray"
                raise ClusterError(f"cannot start or reach {where}: {e}") from None
            self.started = True

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
        self.started = False

    def _plan(self) -> tuple[int, float]:
        """(number of workers, GPUs per worker) from the options and the cluster."""
        resources = self.ray.cluster_resources()
        gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 0.0)
        share = self.gpus if self.gpus is not None else (1.0 if gpus else 0.0)
        if share and not gpus:
            raise ClusterError(f"--gpus-per-worker {share:g}, but the Ray cluster has no GPU "
                               f"(give 0 for CPU workers)")
        if self.workers is not None:
            return self.workers, share
        return max(int(gpus / share) if share else int(cpus), 1), share

    def _start(self, spec: WorkerSpec, tasks: int) -> list:
        """The started actors (no more than `tasks`); ClusterError when none could start."""
        begin = time.perf_counter()
        count, share = self._plan()
        count = min(count, tasks)
        actor = self.ray.remote(Worker).options(
            num_cpus=0 if share else 1, num_gpus=share, max_restarts=self.max_restarts,
            max_task_retries=self.max_restarts, scheduling_strategy="SPREAD")
        device = "cuda" if share else "cpu"
        actors = [actor.remote(spec, device) for _ in range(count)]
        probes = {actor.pid.remote(): actor for actor in actors}
        ready, late = self.ray.wait(list(probes), num_returns=1, timeout=self.start_timeout)
        if ready and late:  # the others: as long again (more would not fit the cluster)
            waited = max(30.0, 2 * (time.perf_counter() - begin))
            more, late = self.ray.wait(late, num_returns=len(late), timeout=waited)
            ready += more
        started, errors = [], []
        for ref in ready:
            try:
                self.ray.get(ref)
                started.append(probes[ref])
            except self.ray.exceptions.RayError as e:
                errors.append(str(e).strip().splitlines()[-1])
        for ref in late:
            self.ray.kill(probes[ref])
        if not started:
            resources = self.ray.cluster_resources()
            why = errors[0] if errors else (
                f"none started within {self.start_timeout:.0f} s; the cluster has "
                f"{resources.get('CPU', 0):g} CPUs and {resources.get('GPU', 0):g} GPUs and each "
                f"worker asks for " + (f"{share:g} GPU" if share else "1 CPU"))
            raise ClusterError(f"no {spec.kind} worker could be started: {why}")
        if len(started) < count and self.log is not None:
            self.log(f"ray: {len(started)} of {count} workers started; going on with them")
        self.start_seconds += time.perf_counter() - begin
        return started

    def map(self, spec: WorkerSpec, method: str, keys: Iterable[Any],
            arguments: Callable[[Any], tuple]) -> Iterator[tuple[Any, Any]]:
        """See `executors.Executor.map`."""
        keys = list(keys)
        if not keys:
            return
        actors = self._start(spec, len(keys))
        size = -(-len(keys) // len(actors))
        queues = [deque(keys[i * size:(i + 1) * size]) for i in range(len(actors))]
        pending: dict = {}

        def submit(worker: int) -> None:
            if queues[worker]:
                key = queues[worker].popleft()
                ref = getattr(actors[worker], method).remote(*arguments(key))
                pending[ref] = (key, worker)

        try:
            for worker in range(len(actors)):
                for _ in range(self.in_flight):
                    submit(worker)
            while pending:
                (ref,), _ = self.ray.wait(list(pending), num_returns=1)
                key, worker = pending.pop(ref)
                yield key, self._result(ref, spec)
                submit(worker)
        finally:
            for actor in actors:
                self.ray.kill(actor)

    def _result(self, ref, spec: WorkerSpec) -> Any:
        """The task's result; its own exception when the task raised one (a bug or a bad
        input: as in a local run); ClusterError when its worker kept dying."""
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as e:
            raise e.as_instanceof_cause() from None
        except self.ray.exceptions.RayError as e:
            raise ClusterError(f"a {spec.kind} worker died more than {self.max_restarts} "
                               f"times ({type(e).__name__}); what was written is kept, run the "
                               f"same command again to resume") from None
