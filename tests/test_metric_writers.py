"""ltx.metric_writers: metrics.jsonl (one record per step across resumes) and TensorBoard event
files written without TensorFlow, read back here from their on-disk format."""

import glob
import json
import struct

import pytest
from tensorboardX.proto import event_pb2

from ltx import metric_writers


def _events(logdir):
    """Every Event of the event files under `logdir` (TFRecord framing: u64 length, u32 CRC,
    payload, u32 CRC)."""
    events = []
    for path in sorted(glob.glob(f"{logdir}/events.out.tfevents.*")):
        with open(path, "rb") as f:
            data = f.read()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            payload = data[offset + 12:offset + 12 + length]
            events.append(event_pb2.Event.FromString(payload))
            offset += 12 + length + 4
    return events


def test_tensorboard_scalars_are_written_without_tensorflow(tmp_path):
    writer = metric_writers.create_writer(str(tmp_path), process_index=0, tensorboard=True)
    writer.write_scalars(10, {"loss": 1.5, "lr": 0.1})
    writer.write_scalars(20, {"loss": 0.75})
    writer.close()
    scalars = [(e.step, v.tag, v.simple_value) for e in _events(tmp_path / "tensorboard")
               for v in e.summary.value]
    assert [(step, tag) for step, tag, _ in scalars] == [(10, "loss"), (10, "lr"), (20, "loss")]
    assert [value for *_, value in scalars] == pytest.approx([1.5, 0.1, 0.75], rel=1e-6)
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [(r["step"], r["loss"]) for r in records] == [(10, 1.5), (20, 0.75)]


def test_a_resume_drops_the_records_after_its_step_and_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    writer = metric_writers.JsonlWriter(str(path))
    for step in (5, 10, 15):
        writer.write_scalars(step, {"loss": float(step)})
    writer.write_scalars(15, {"final/top1_all": 50.0})
    writer.close()
    with open(path, "a") as f:
        f.write('{"step": 20, "lo')  # A line torn by a killed process.
    writer = metric_writers.JsonlWriter(str(path), resume_step=10)
    writer.write_scalars(15, {"loss": 15.5})
    writer.close()
    records = [json.loads(line) for line in open(path)]
    assert [(r["step"], r["loss"]) for r in records] == [(5, 5.0), (10, 10.0), (15, 15.5)]


def test_only_process_0_writes(tmp_path):
    writer = metric_writers.create_writer(str(tmp_path), process_index=1, tensorboard=True)
    writer.write_scalars(1, {"loss": 1.0})
    writer.close()
    assert not list(tmp_path.iterdir())
