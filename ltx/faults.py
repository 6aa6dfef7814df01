"""What can stop a run before its end, and how the trainer notices: divergence, preemption
signals and a second trainer on the same workdir.

- `Diverged`: a non-finite loss or gradient norm; the trainer raises it at the first log point
  (or before a checkpoint would be written) and saves nothing from the diverged state.
- `Preempted`: SIGTERM or SIGINT arrived (`StopSignals`); the trainer finished the current step,
  saved a checkpoint synchronously and stops. On one process ltx's own handler does this; under
  `jax.distributed` orbax's preemption sync point decides, so that every host saves the same step.
- `WorkdirLock`: an exclusive `flock` on `<workdir>/.lock` held while a run trains; a second
  trainer on the same workdir is refused at once (`WorkdirBusy`). The kernel drops the lock when
  its process dies, so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal


class Diverged(RuntimeError):
    """Training stopped at a non-finite loss or gradient."""


class Preempted(RuntimeError):
    """Training stopped by SIGTERM or SIGINT after saving a checkpoint."""


class WorkdirBusy(ValueError):
    """Another process is training in this workdir."""


LOCK_FILE = ".lock"


class WorkdirLock:
    """`with WorkdirLock(workdir):` holds `<workdir>/.lock` exclusively, or raises WorkdirBusy
    naming the process that holds it."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, LOCK_FILE)
        self._fd = None

    def __enter__(self) -> "WorkdirLock":
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise WorkdirBusy(
                    f"workdir {os.path.dirname(self.path)!r} is being trained by process "
                    f"{holder} (it holds {self.path}); wait for it or use another --workdir"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class StopSignals:
    """`with StopSignals() as stop:` turns SIGTERM and SIGINT into `stop.requested` (the signal's
    name) instead of killing the process; a second signal of the same kind kills as usual.
    Outside the main thread (where handlers cannot be installed) it does nothing."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested: str | None = None
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        del frame
        if self.requested is not None:  # The second one: the default behaviour.
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            os.kill(os.getpid(), signum)
            return
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> "StopSignals":
        try:
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        except ValueError:  # Not the main thread.
            self._previous.clear()
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
