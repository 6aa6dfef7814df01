"""Metric writers: JSON lines on disk, a console progress line, optional TensorBoard.

Only process 0 writes; on other processes `create_writer` returns a writer that drops everything.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Mapping

import numpy as np

from ltx import files


def _scalar(value):
    value = np.asarray(value)
    return value.item() if value.size == 1 else value.tolist()


class JsonlWriter:
    """Appends one JSON object per `write_scalars` call to `<workdir>/metrics.jsonl`.

    On an object store (a `gs://` workdir) records are kept until `flush`, which rewrites the
    object with them added (`files.append_text`); locally they go to an open file.

    `resume_step`: the step a run starts from (0 for one without a checkpoint); records of later
    steps, written by an interrupted attempt after its last checkpoint, are dropped first (the
    run writes them again), so every step has one record.
    """

    def __init__(self, path: str, resume_step: int | None = None):
        self.path = path
        files.makedirs(files.dirname(path) or ".")
        if resume_step is not None and files.isfile(path):
            _drop_records_after(path, resume_step)
        self._file = files.open(path, "a") if files.is_local(path) else None
        self._pending: list[str] = []

    def _write(self, line: str) -> None:
        if self._file is None:
            self._pending.append(line)
        else:
            self._file.write(line)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        record = {"step": int(step), "time": time.time()}
        record.update({k: _scalar(v) for k, v in scalars.items()})
        self._write(files.dumps_json(record) + "\n")  # Strict: an undefined metric is null.

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        self._write(files.dumps_json({"hparams": hparams}, default=str) + "\n")

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()
        elif self._pending:
            files.append_text(self.path, "".join(self._pending))
            self._pending.clear()

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()


def _drop_records_after(path: str, step: int) -> None:
    """Rewrites the JSON-lines file at `path` without the records of steps after `step`, the
    final evaluation's records (redone by a run resumed at its last step) and a torn last line,
    atomically."""
    kept, dropped = [], 0
    with files.open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:  # A line torn by a killed process.
                dropped += 1
                continue
            if isinstance(record, dict) and (record.get("step", step) > step or any(
                    key.startswith("final/") for key in record)):
                dropped += 1
                continue
            kept.append(line if line.endswith("\n") else line + "\n")
    if dropped:
        files.write_text(path, "".join(kept))


class TensorBoardWriter:
    """TensorBoard event files through tensorboardX (the `tensorboard` extra; no TensorFlow)."""

    def __init__(self, logdir: str):
        try:
            from tensorboardX import SummaryWriter  # Optional dependency.
        except ImportError as err:
            raise ImportError("config.tensorboard=True needs tensorboardX: pip install -e "
                              "'.[tensorboard]'") from err
        self._writer = SummaryWriter(logdir)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        for key, value in scalars.items():
            value = np.asarray(value)
            if value.size == 1:
                self._writer.add_scalar(key, float(value.item()), global_step=int(step))

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        self._writer.add_text("hparams", json.dumps(hparams, default=str, indent=1),
                              global_step=0)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class MultiWriter:
    def __init__(self, writers):
        self._writers = list(writers)

    def write_scalars(self, step, scalars):
        for w in self._writers:
            w.write_scalars(step, scalars)

    def write_hparams(self, hparams):
        for w in self._writers:
            w.write_hparams(hparams)

    def flush(self):
        for w in self._writers:
            w.flush()

    def close(self):
        for w in self._writers:
            w.close()


def create_writer(workdir: str, *, process_index: int, tensorboard: bool = False,
                  resume_step: int | None = None) -> MultiWriter:
    """The run's writers on process 0 (see `JsonlWriter` for `resume_step`); none elsewhere."""
    if process_index != 0:
        return MultiWriter([])
    writers = [JsonlWriter(files.join(workdir, "metrics.jsonl"), resume_step)]
    if tensorboard:
        writers.append(TensorBoardWriter(files.join(workdir, "tensorboard")))
    return MultiWriter(writers)


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class ProgressLine:
    """Prints `step | epoch | loss | lr | img/s | ETA` lines to stdout (process 0 only)."""

    def __init__(self, total_steps: int, global_batch_size: int, *, enabled: bool = True,
                 stream=None):
        self.total_steps = total_steps
        self.batch = global_batch_size
        self.enabled = enabled
        self.stream = stream or sys.stdout
        self._last_time = None
        self._last_step = None

    def start(self, step: int) -> None:
        self._last_time, self._last_step = time.perf_counter(), step

    def update(self, step: int, epoch: float, scalars: Mapping[str, float]) -> float:
        """Prints one line and returns the images/s since the previous call."""
        now = time.perf_counter()
        rate = (step - self._last_step) * self.batch / max(now - self._last_time, 1e-9)
        eta = (self.total_steps - step) * self.batch / max(rate, 1e-9)
        self._last_time, self._last_step = now, step
        if self.enabled:
            parts = [f"step {step}/{self.total_steps}", f"epoch {epoch:.1f}"]
            parts += [f"{k} {v:.4g}" for k, v in scalars.items()]
            parts += [f"{rate:.0f} img/s", f"ETA {_duration(eta)}"]
            print(" | ".join(parts), file=self.stream, flush=True)
        return rate
