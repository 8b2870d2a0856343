"""Report workers: child processes (running `main` below) that draw report figures and write
samples.csv while the parent builds tables. Outside farm.report so that a worker imports only
what its jobs need (pandas for a CSV; matplotlib and the report for a figure).

Plain subprocesses talking length-prefixed pickles over their stdin/stdout, rather than
multiprocessing: a spawned multiprocessing child re-imports the caller's `__main__`, which
breaks any script that calls farm's API without an `if __name__ == "__main__"` guard. A job
is `(callable, args)`; its callable must be importable (a module-level function or a
functools.partial of one). The child's own stdout is redirected to stderr, so a stray print
cannot corrupt the protocol. Pickles only ever travel between this process and its children.
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import IO, Any

log = logging.getLogger(__name__)

_HEADER = 8
_ENTRY = "import sys; from farm.workers import main; sys.exit(main())"


def _send(stream: IO[bytes], obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(len(data).to_bytes(_HEADER, "big") + data)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    """The next message, or raises EOFError when the other side closed the stream."""
    header = stream.read(_HEADER)
    if len(header) < _HEADER:
        raise EOFError("figure worker stream closed")
    size = int.from_bytes(header, "big")
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("figure worker stream closed mid-message")
    return pickle.loads(data)  # noqa: S301 - only from our own child or parent process


class Workers:
    """A few worker processes and a queue of jobs; `submit` returns a Future.

    Each worker has a feeder thread here that sends it one job at a time and waits for the
    answer (pipe I/O releases the GIL). A job that raises in the child sets that exception
    text on its future as a RuntimeError; a worker that dies fails its job and the jobs after
    it with the reason. `close` stops the workers.
    """

    def __init__(self, n: int, *, warm_up: tuple[str, ...] = ()) -> None:
        self._jobs: queue.Queue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None]
        self._jobs = queue.Queue()
        self._procs: list[subprocess.Popen[bytes]] = []
        self._threads: list[threading.Thread] = []
        for i in range(n):
            proc = subprocess.Popen([sys.executable, "-c", _ENTRY, *warm_up],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            self._procs.append(proc)
            t = threading.Thread(target=self._feed, args=(proc,), daemon=True,
                                 name=f"farm-figures-{i}")
            t.start()
            self._threads.append(t)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self._jobs.put((future, fn, args))
        return future

    def _feed(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                _send(proc.stdin, (fn, args))
                ok, value = _receive(proc.stdout)
            except (OSError, EOFError, pickle.PicklingError, TypeError, AttributeError) as e:
                if isinstance(e, OSError | EOFError):  # the worker is gone: its exit status
                    try:
                        proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        pass
                future.set_exception(RuntimeError(
                    f"figure worker {proc.pid} failed: {type(e).__name__}: {e} "
                    f"(exit status {proc.poll()})"))
                if proc.poll() is not None:
                    self._fail_rest(f"figure worker {proc.pid} exited ({proc.returncode})")
                    return
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(RuntimeError(value))

    def _fail_rest(self, reason: str) -> None:
        """A worker died: fail the queued jobs (the others may be gone too) with the reason."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is None:
                self._jobs.put(None)  # keep the stop signal for the other feeders
                return
            job[0].set_exception(RuntimeError(reason))

    def close(self) -> None:
        """Cancel the jobs not started, let the running ones finish, stop the workers."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[0].cancel()
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join(timeout=60)
        for proc in self._procs:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
        self._procs.clear()
        self._threads.clear()


def write_csv(frame: Any, path: Any) -> None:
    """`frame.to_csv(path, index=False)`: a job that needs only pandas in the worker."""
    frame.to_csv(path, index=False)


def main(argv: list[str] | None = None) -> int:
    """The worker: import the warm-up modules, then answer jobs until stdin closes (a job's
    pickle imports what its function needs)."""
    import importlib

    args = sys.argv[1:] if argv is None else argv
    proto_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, never into the protocol
    proto_in = sys.stdin.buffer
    for name in args:
        importlib.import_module(name)
    while True:
        try:
            fn, fargs = _receive(proto_in)
        except EOFError:
            return 0
        try:
            reply: tuple[bool, Any] = (True, fn(*fargs))
        except Exception as e:  # noqa: BLE001 - the parent raises it for that figure
            reply = (False, f"{type(e).__name__}: {e}")
        _send(proto_out, reply)

