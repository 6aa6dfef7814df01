"""Seconds from launch to the error message, for every bad input of the CLI catalogue.

    python experiments/bad_input_latency.py [--workdir=/tmp/ltx/latency] [--repeats=1]

Runs each command of `CATALOGUE` in tests/test_cli.py (the same cases the test asserts) against
a finished tiny digits-LT workdir and prints a Markdown table: the case, the exit status, the
message (its first line, shortened) and the wall-clock seconds of the whole process (Python
start-up and imports included), the median over `--repeats`.
"""

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)


def _catalogue():
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    spec = importlib.util.spec_from_file_location("test_cli",
                                                  os.path.join(ROOT, "tests", "test_cli.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CATALOGUE, module.TINY


def main():
    # The catalogue's device-count case expects the tests' four fake CPU devices.
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "ltx",
                                                          "latency"))
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    catalogue, tiny = _catalogue()
    finished = os.path.join(args.workdir, "finished")
    if not os.path.isfile(os.path.join(finished, "final_metrics.json")):
        subprocess.run([sys.executable, "-m", "ltx.train", f"--config={tiny}",
                        f"--workdir={finished}"], check=True, capture_output=True)
    rows = []
    for case in sorted(catalogue):
        command, _ = catalogue[case]
        seconds, result = [], None
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                open(os.path.join(tmp, "notes.pth"), "w").write("not a checkpoint")
                argv = [a.format(finished=finished, tmp=tmp) for a in command]
                start = time.perf_counter()
                result = subprocess.run([sys.executable, *argv], capture_output=True,
                                        text=True)
                seconds.append(time.perf_counter() - start)
        lines = result.stderr.splitlines()
        at = next((i for i, line in enumerate(lines) if ": error: " in line), None)
        message = lines[at].split(": error: ", 1)[1] if at is not None else result.stderr[-120:]
        if at is not None and "problem(s) in the config:" in message and at + 1 < len(lines):
            message += " " + lines[at + 1].strip()  # The first problem.
        message = message.replace("|", "/")
        if len(message) > 110:
            message = message[:107] + "..."
        rows.append((case, result.returncode, message, statistics.median(seconds)))
    print("| input | exit | message | seconds |\n|---|---|---|---|")
    for case, status, message, secs in rows:
        print(f"| {case} | {status} | {message} | {secs:.1f} |")
    worst = max(rows, key=lambda r: r[3])
    print(f"\n{len(rows)} inputs; median {statistics.median(r[3] for r in rows):.1f} s, "
          f"slowest {worst[3]:.1f} s ({worst[0]})")


if __name__ == "__main__":
    main()
