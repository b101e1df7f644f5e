"""The Ray executor: each cell a Ray task that runs the cell's processes on a cluster node.

The task calls `lab.running.executors.measure` on the node, exactly what the local executor
calls here, and returns the outcome with where it ran: the node's fingerprint and machine id.
Outcomes come back as tasks finish and go into the one run folder on the driver.

- Exclusive resources: a cell asks Ray for `spec.threads` CPUs, and a CUDA cell also for one
  whole GPU, so Ray never places two timed cells on the same logical cores or GPU. Ray's CPU
  count is logical: cells are not pinned to cores (docs/cluster.md).
- Lost nodes: a task whose worker or node dies is submitted once more (Ray's own retries are
  off, so the lab knows and records it: `attempts`, `lost_attempts`); if the retry is lost
  too, or no live node can take it, the cell ends `lost`.
- Ctrl-C: running tasks are interrupted (the runner kills its cell process), then whatever has
  not stopped after a grace period is force-cancelled; a guard on the node
  (lab.running.executors.guard) kills cell processes whose worker was killed.
- Tracing (`lab profile`) stays local: traces are written into the run folder on this machine.
- An address that does not answer is refused in PROBE_TIMEOUT_S (a TCP connect to the
  cluster's GCS port, the HTTP/2 handshake, then one GCS request with a deadline, before
  `ray.init`, which would otherwise retry or wait for minutes), and the
  lab's signal handlers are put back after `ray.init` replaces them, so SIGTERM and SIGHUP
  stop a Ray run as Ctrl-C does.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from lab.cell.spec import CellOutcome, CellResult, CellSpec
from lab.core.errors import UsageError
from lab.core.status import Status
from lab.running.executors import CellJob, measure
from lab.store import provenance

MAX_ATTEMPTS = 2  # a lost cell is tried once more
CANCEL_GRACE_S = 10.0  # interrupted tasks get this long to kill their cells before force
WAIT_SLICE_S = 1.0  # ray.wait in slices, so Ctrl-C reaches the driver promptly
STRANDED_CHECK_S = 5.0  # how often waiting cells are checked for a node that can still run them
# a Ray cluster's GCS is a gRPC (HTTP/2) server: to a client's connection preface and empty
# SETTINGS frame it answers with a frame whose type byte (the 4th) is SETTINGS
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
HTTP2_SETTINGS = 4
PROBE_TIMEOUT_S = 5.0  # a cluster's GCS answers a TCP connect at once; this allows a slow network
# handlers that ray.init replaces in the driver (Ray's SIGTERM handler exits the process at once,
# skipping the run loop's cancel and clean-up)
LAB_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                    if hasattr(signal, name))
NO_TRACING = ("the ray executor does not trace cells: `lab profile` runs them locally "
              "(traces belong in this machine's run folder)")


@dataclass
class NodeAnswer:
    """What a task sends back: the cell's outcome and the node it ran on."""

    outcome: CellOutcome
    node: dict = field(default_factory=dict)  # node_id, hostname, gpu_ids, fingerprint
    machine_id: str | None = None


def resources(spec: CellSpec) -> dict:
    """What one cell holds while it runs. A CUDA cell holds a whole GPU and its threads' CPUs:
    the host thread that launches kernels must not wait behind another cell's threads."""
    return {"num_cpus": spec.threads, "num_gpus": 1 if spec.device == "cuda" else 0}


def run_on_node(job: CellJob) -> NodeAnswer:
    """The task body, on a node inside a Ray worker: the cell's processes as the local executor
    runs them, with the node's fingerprint taken just before (its load at the cell's start)."""
    import ray

    from lab.cell import fork
    from lab.running.executors import guard

    # a fork server would outlive the task in the worker, with its temp folder in the task's
    # scratch folder, which the guard removes: each cell process starts fresh on a node
    os.environ[fork.FORK_VAR] = "0"
    fp = provenance.fingerprint(threads=job.spec.threads)
    with guard.cells_die_with_this_process():
        outcome = measure(job)  # the node's load is sampled on the node
    node = {"node_id": ray.get_runtime_context().get_node_id(),
            "hostname": socket.gethostname(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "fingerprint": fp}
    return NodeAnswer(outcome, node, provenance.machine_id(fp["hardware"]))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def probe(address: str | None) -> None:
    """UsageError unless the cluster at `address` (or RAY_ADDRESS) accepts a TCP connection
    and answers it as a gRPC server does (a Ray GCS is one), each within PROBE_TIMEOUT_S: to
    an address that refuses, or accepts and stays silent, ray.init retried for minutes in C++
    code that no signal handler interrupts. Addresses that name no host and port (none,
    `auto`, `local`) are left to ray.init, which finds or starts a cluster on this machine."""
    from_env = not address or (address == "auto" and "RAY_ADDRESS" in os.environ)  # Ray's rule
    source = "RAY_ADDRESS" if from_env else "--ray-address"
    given = os.environ.get("RAY_ADDRESS", "") if from_env else address
    where = given.removeprefix("ray://")
    host, sep, port = where.rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)),
                                      timeout=PROBE_TIMEOUT_S) as conn:
            if os.environ.get("RAY_USE_TLS", "0") in ("0", ""):  # TLS speaks first otherwise
                conn.sendall(HTTP2_PREFACE)
                answer = conn.recv(9)
            else:
                answer = None
    except OSError as exc:
        why = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise UsageError(f"cannot reach the Ray cluster at {given} ({source}): {why} within "
                         f"{PROBE_TIMEOUT_S:g} s") from None
    if answer is not None and (len(answer) < 4 or answer[3] != HTTP2_SETTINGS):
        raise UsageError(f"{given} ({source}) is not a Ray cluster: it does not answer as a "
                         f"gRPC server does")
    if answer is not None and not given.startswith("ray://"):  # ray:// is Ray Client's server
        _ask_gcs(where, given, source)


def _ask_gcs(where: str, given: str, source: str) -> None:
    """One request a GCS answers at once (its cluster id), with a deadline: a server that
    completes the HTTP/2 handshake and then never answers held ray.init for minutes."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    with grpc.insecure_channel(where) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=PROBE_TIMEOUT_S)
        except grpc.RpcError as exc:
            # any other answer (a cluster that wants a token the driver holds: UNAUTHENTICATED)
            # is a GCS answering: ray.init goes on and says what it finds
            code = exc.code()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                why = f"it did not answer a cluster request within {PROBE_TIMEOUT_S:g} s"
            elif code == grpc.StatusCode.UNIMPLEMENTED:
                why = "it does not serve Ray's cluster requests"
            else:
                return
            raise UsageError(f"{given} ({source}) is not a Ray cluster that answers: "
                             f"{why}") from None


@contextmanager
def _stderr_kept_unless_failed():
    """Ray's C++ client logs every retry to the process's stderr (a line a second while an
    address that is not a Ray cluster answers); when ray.init fails, the lab's one line says
    why instead. What Ray wrote is passed on when it succeeds."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to protect
        yield
        return
    with tempfile.TemporaryFile() as caught:
        sys.stderr.flush()
        os.dup2(caught.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if not failed:
                caught.seek(0)
                sys.stderr.write(caught.read().decode(errors="replace"))
                sys.stderr.flush()


def _node_resources(node: dict) -> tuple[float, float]:
    res = node.get("Resources") or {}
    return res.get("CPU", 0.0), res.get("GPU", 0.0)


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None, task=run_on_node):
        self.address = address  # None: RAY_ADDRESS, a cluster started here, or a new local one
        self._task = task  # the function each task runs (tests put a stand-in here)
        self._remote = None
        self._owns_connection = False
        self._pending: dict = {}  # ObjectRef -> (job, attempt, lost reasons, submitted at)

    # ------------------------------------------------------------ connection

    def _connect(self):
        try:
            import ray
        except ImportError:
            raise UsageError("--executor ray needs Ray: pip install 'perflab[ray]'") from None
        if not ray.is_initialized():
            if self.address is None:
                # may start a local instance, whose raylet waits for its dashboard agent (a
                # Python process) to start: Ray's 15 s is too short on a loaded small machine
                os.environ.setdefault("RAY_agent_register_timeout_ms", "60000")
            probe(self.address)
            main = threading.current_thread() is threading.main_thread()
            handlers = {sig: signal.getsignal(sig) for sig in LAB_SIGNALS} if main else {}
            try:
                with _stderr_kept_unless_failed():
                    ray.init(address=self.address, log_to_driver=False,
                             logging_level=logging.WARNING)
            except Exception as exc:  # Ray raises a bare Exception when a local node is slow
                ray.shutdown()  # to start (30 s, fixed in Ray), and ConnectionError and others
                where = self.address or "RAY_ADDRESS or a local cluster"
                raise UsageError(f"--ray-address {where}: cannot start or reach a Ray "
                                 f"cluster: {_first_line(exc)}") from None
            except BaseException as exc:  # a signal while ray.init runs: stop what started
                ray.shutdown()
                if isinstance(exc, SystemExit) and exc.code == signal.SIGTERM:
                    # Ray's own driver handler (sys.exit(15)) is in place during ray.init;
                    # the run ends as the lab's handler ends it
                    raise KeyboardInterrupt("SIGTERM") from None
                raise
            finally:
                for sig, handler in handlers.items():
                    if handler is not None:  # None: set outside Python, nothing to put back
                        signal.signal(sig, handler)
            self._owns_connection = True
        if self._remote is None:
            self._remote = ray.remote(self._task)
        return ray

    def _alive_nodes(self) -> list[dict]:
        import ray

        return [n for n in ray.nodes() if n.get("Alive")]

    def _fits_somewhere(self, spec: CellSpec, nodes: list[dict]) -> bool:
        need = resources(spec)
        return any(cpus >= need["num_cpus"] and gpus >= need["num_gpus"]
                   for cpus, gpus in map(_node_resources, nodes))

    def prepare(self, specs: list[CellSpec], trace: bool = False) -> dict:
        if trace:
            raise UsageError(NO_TRACING)
        ray = self._connect()
        try:
            nodes = self._alive_nodes()
            for spec in specs:
                if not self._fits_somewhere(spec, nodes):
                    need = resources(spec)
                    largest = max((_node_resources(n) for n in nodes), default=(0, 0))
                    raise UsageError(
                        f"no node of the Ray cluster has {need['num_cpus']} CPUs"
                        + (" and a GPU" if need["num_gpus"] else "")
                        + f" for {spec.workload} {spec.backend} (largest node: "
                        f"{largest[0]:g} CPUs, {largest[1]:g} GPUs); pass --threads to fit")
        except BaseException:
            self.close()
            raise
        return {
            "name": self.name, "ray_version": ray.__version__,
            "address": provenance.redact(self.address) if self.address else None,
            "nodes": [{"node_id": n["NodeID"], "hostname": n.get("NodeManagerHostname"),
                       "ip": n.get("NodeManagerAddress"), "cpus": _node_resources(n)[0],
                       "gpus": _node_resources(n)[1]} for n in nodes],
        }

    # ------------------------------------------------------------ running

    def _submit(self, job: CellJob, attempt: int, lost: list[str]) -> None:
        ref = self._remote.options(max_retries=0, retry_exceptions=False,
                                   **resources(job.spec)).remote(job)
        self._pending[ref] = (job, attempt, lost, time.perf_counter())

    def run(self, jobs: list[CellJob],
            on_phase=None) -> Iterator[tuple[CellJob, CellOutcome]]:
        # on_phase is not called: a cell's phases end on its node; its outcome says them
        if any(job.trace_dir is not None for job in jobs):
            raise UsageError(NO_TRACING)  # before anything is submitted
        self._connect()
        for job in jobs:
            self._submit(job, 1, [])
        return self._results()

    def _results(self) -> Iterator[tuple[CellJob, CellOutcome]]:
        import ray

        checked = time.perf_counter()
        while self._pending:
            ready, _ = ray.wait(list(self._pending), num_returns=1, timeout=WAIT_SLICE_S)
            for ref in ready:
                job, attempt, lost, submitted = self._pending.pop(ref)
                outcome = self._outcome(ref, job, attempt, lost, submitted)
                if outcome is not None:
                    yield job, outcome
            if time.perf_counter() - checked > STRANDED_CHECK_S:
                checked = time.perf_counter()
                yield from self._stranded()

    def _stranded(self) -> Iterator[tuple[CellJob, CellOutcome]]:
        """Cells that wait for a node no longer there: Ray would keep an infeasible task
        waiting for the cluster to grow; the lab ends it `lost` instead of hanging."""
        import ray

        nodes = self._alive_nodes()
        for ref, (job, attempt, lost, submitted) in list(self._pending.items()):
            if not self._fits_somewhere(job.spec, nodes):
                del self._pending[ref]
                ray.cancel(ref, force=True)
                yield job, self._failed(job, Status.LOST, "no live node left can run it",
                                        time.perf_counter() - submitted, attempt, lost)

    def _outcome(self, ref, job: CellJob, attempt: int, lost: list[str],
                 submitted: float) -> CellOutcome | None:
        """The cell's outcome, or None when it was resubmitted."""
        import ray
        from ray import exceptions as rex

        lost_errors = (rex.WorkerCrashedError, rex.NodeDiedError, rex.LocalRayletDiedError,
                       rex.ObjectLostError, rex.TaskUnschedulableError)
        wall = time.perf_counter() - submitted
        try:
            answer: NodeAnswer = ray.get(ref)
        except lost_errors as exc:
            lost = [*lost, _first_line(exc)]
            if attempt < MAX_ATTEMPTS and self._fits_somewhere(job.spec, self._alive_nodes()):
                self._submit(job, attempt + 1, lost)
                return None
            why = ("no live node left can run it" if attempt < MAX_ATTEMPTS
                   else f"lost {attempt} times")
            return self._failed(job, Status.LOST, f"{why}; last: {lost[-1]}", wall, attempt,
                                lost)
        except rex.OutOfMemoryError as exc:  # Ray's memory monitor killed the worker
            return self._failed(job, Status.OOM, _first_line(exc), wall, attempt, lost)
        except rex.TaskCancelledError as exc:
            return self._failed(job, Status.RUN_ERROR, _first_line(exc), wall, attempt, lost)
        except rex.RayError as exc:  # the task raised (lab missing on the node, a bug)
            cause = getattr(exc, "cause", None) or exc
            return self._failed(job, Status.RUN_ERROR, f"on the node: {_first_line(cause)}",
                                wall, attempt, lost)
        outcome = answer.outcome
        outcome.extra.update(machine_id=answer.machine_id, node=answer.node, attempts=attempt)
        if lost:
            outcome.extra["lost_attempts"] = lost
        return outcome

    @staticmethod
    def _failed(job: CellJob, status: Status, reason: str, wall: float, attempt: int,
                lost: list[str]) -> CellOutcome:
        outcome = CellOutcome(job.spec, job.label, CellResult.failed(status, reason), wall)
        # no node to name: the machine it ran on is unknown (or gone)
        outcome.extra.update(machine_id=None, attempts=attempt)
        if lost:
            outcome.extra["lost_attempts"] = lost
        return outcome

    # ------------------------------------------------------------ stopping

    def cancel(self) -> None:
        """Interrupt running tasks (KeyboardInterrupt in the task: the runner kills its cell),
        drop queued ones, and force-cancel (kill the worker) whatever is left after
        CANCEL_GRACE_S; the node's guard then kills that worker's cell."""
        if not self._pending:
            return
        import ray

        refs = list(self._pending)
        self._pending.clear()
        for ref in refs:
            ray.cancel(ref, force=False)
        _, stuck = ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE_S)
        for ref in stuck:
            ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._owns_connection:
            import ray

            ray.shutdown()
            self._owns_connection = False
        self._remote = None
