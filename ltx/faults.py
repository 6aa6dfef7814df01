"""What can stop a run before its end, and how the trainer notices: divergence, preemption
signals and a second trainer on the same workdir.

- `Diverged`: a non-finite loss or gradient norm; the trainer raises it at the first log point
  (or before a checkpoint would be written) and saves nothing from the diverged state.
- `Preempted`: SIGTERM or SIGINT arrived (`StopSignals`); the trainer finished the current step,
  saved a checkpoint synchronously and stops. On one process ltx's own handler does this; under
  `jax.distributed` orbax's preemption sync point decides, so that every host saves the same step.
- `WorkdirLock`: an exclusive `flock` on `<workdir>/.lock` held while a run trains; a second
  trainer on the same workdir is refused at once (`WorkdirBusy`). The kernel drops the lock when
  its process dies, so a killed run never leaves a stale lock behind. `ltx-train` asks
  `check_workdir_free` before it reads data or starts JAX, so the refusal takes no setup time.
  An object store (a `gs://` workdir) has no lock: there `.lock` records the holder's host and
  process, a second trainer started on the same host while that process lives is refused, and
  one started on another host takes the workdir over with a warning naming the holder (a pod
  that was preempted leaves a `.lock` of a host that is gone, and its resume must proceed).
  Two trainers launched on different machines against one bucket workdir are not detected.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import socket

from ltx import files


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
        self.workdir = workdir
        self.path = files.join(workdir, LOCK_FILE)
        self._fd = None
        self._owner = None

    def __enter__(self) -> "WorkdirLock":
        if not files.is_local(self.path):
            return self._enter_object_store()
        files.makedirs(self.workdir or ".")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        _flock_or_busy(fd, self.workdir, self.path)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def _enter_object_store(self) -> "WorkdirLock":
        owner = f"{socket.gethostname()} {os.getpid()}"
        holder = _object_store_holder(self.workdir, self.path)
        if holder and holder.partition(" ")[0] != socket.gethostname():
            print(f"Warning: {self.path} names {holder!r} (host, process) as training this "
                  "workdir; an object store has no lock, so ltx takes it over, assuming that "
                  "run has ended", flush=True)
        files.write_text(self.path, owner)
        self._owner = owner
        return self

    def __exit__(self, *exc) -> None:
        if self._owner is not None:
            if files.isfile(self.path) and files.read_text(self.path).strip() == self._owner:
                files.remove(self.path)
            self._owner = None
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def check_workdir_free(workdir: str) -> None:
    """WorkdirBusy naming the holder if a trainer holds the lock of `workdir` or of one of its
    folders (a multi-stage run trains each stage in `<workdir>/<stage>`); else nothing.

    What an entry point calls before it reads any data or starts JAX, so that a busy workdir is
    refused at once rather than after the setup. It creates and writes nothing (a workdir that
    does not exist is free) and keeps no lock: the trainer's `WorkdirLock` still decides, so a
    second trainer that starts between this check and that lock is refused there.
    """
    if not workdir or not files.isdir(workdir):
        return
    folders = [workdir] + [files.join(workdir, name) for name in files.listdir(workdir)
                           if files.isfile(files.join(workdir, name, LOCK_FILE))]
    for folder in folders:
        path = files.join(folder, LOCK_FILE)
        if not files.is_local(path):
            _object_store_holder(folder, path)
            continue
        try:
            fd = os.open(files.expand(path), os.O_RDONLY)
        except FileNotFoundError:
            continue
        _flock_or_busy(fd, folder, path, shared=True)  # Closes fd when it raises.
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _flock_or_busy(fd: int, workdir: str, path: str, *, shared: bool = False) -> None:
    """`flock`s `fd` without waiting (exclusively, or `shared`), or closes it and raises
    WorkdirBusy naming the process written in the lock file."""
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError as err:
        os.lseek(fd, 0, os.SEEK_SET)
        holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
        os.close(fd)
        if err.errno in (errno.EAGAIN, errno.EACCES):
            raise WorkdirBusy(
                f"workdir {workdir!r} is being trained by process {holder} (it holds "
                f"{path}); wait for it or use another --workdir") from None
        raise


def _object_store_holder(workdir: str, path: str) -> str:
    """The '<host> <pid>' that an object-store workdir's lock file names ('' if none), or
    WorkdirBusy when that is a live process of this host."""
    holder = files.read_text(path).strip() if files.isfile(path) else ""
    host, _, pid = holder.partition(" ")
    if holder and host == socket.gethostname() and pid.isdigit() and _alive(int(pid)):
        raise WorkdirBusy(f"workdir {workdir!r} is being trained by process {pid} on this host "
                          f"(it wrote {path}); wait for it or use another --workdir")
    return holder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # Alive, owned by another user.
        return True
    return True


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
