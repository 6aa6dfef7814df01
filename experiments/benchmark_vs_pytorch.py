"""ltx's CPU train step against a PyTorch eager step of the same ResNet-32, in alternating pairs.

Two persistent worker processes, one per library, each builds its model, compiles (ltx) and
warms up, then waits. In each of `--rounds` rounds the driver asks every worker in turn for
`--steps` train steps (the order reversed every other round, so neither always runs first on a
machine whose speed drifts) and takes the ratio of the two medians in that round:
ltx images/s / PyTorch images/s. It prints the median ratio over the rounds and its range.

One step on both sides: forward in train mode (BatchNorm statistics updated), cross-entropy of
the mean of the expert logits, backward, SGD (lr 0.1, momentum 0.9, weight decay 5e-4) on data
already in memory (random images, batch `--batch`, 32x32x3, 100 classes). Layouts:

- `single`: ResNet-32 (16/32/64), one linear head (LDAM-DRW's model).
- `balpoe3`: stem + stage 1 shared, 3 experts with full-width stages 2-3 (32/64), cosine heads
  x 30 (BalPoE's CIFAR layout).
- `ride3`: the same with reduced expert widths 24/48 (RIDE's and SADE's CIFAR layout).

The PyTorch model is this file's own (`_torch_model`): the same convolutions, option-A
shortcuts, BatchNorms and heads; the driver checks that both sides have the same number of
parameters. PyTorch runs in a separate interpreter when given (`--torch-python`, e.g. a venv
with the CPU wheel); it is never a dependency of ltx, and without it the driver times ltx only.

`--flags-vs-default FLAGS` measures an XLA CPU flag instead: the second worker is ltx again with
FLAGS appended to XLA_FLAGS, the ratio is flagged / default images/s, and the driver compares
the two workers' losses step by step (both start from the same state and data), so a flag that
changes results shows a nonzero difference.

    python experiments/benchmark_vs_pytorch.py --torch-python /path/to/venv/bin/python \
        --layouts single balpoe3 ride3 --rounds 7 --steps 3
    python experiments/benchmark_vs_pytorch.py --layouts single \
        --flags-vs-default=--xla_cpu_experimental_onednn_custom_call=true
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

LAYOUTS = ("single", "balpoe3", "ride3")
IMAGE_SIZE, NUM_CLASSES = 32, 100
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 5e-4


def _layout(name: str) -> dict:
    """num_experts, shared stages, stage widths and head of a layout."""
    if name == "single":
        return dict(num_experts=1, num_shared_stages=3, widths=(16, 32, 64), head="linear")
    if name == "balpoe3":
        return dict(num_experts=3, num_shared_stages=1, widths=(16, 32, 64), head="cosine")
    if name == "ride3":
        return dict(num_experts=3, num_shared_stages=1, widths=(16, 24, 48), head="cosine")
    raise ValueError(f"unknown layout {name!r}; expected one of {LAYOUTS}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=LAYOUTS)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=3, help="train steps per worker per round")
    p.add_argument("--torch-python", default="",
                   help="interpreter with PyTorch for its worker ('' : this one, if it has torch)")
    p.add_argument("--torch-channels-last", action="store_true",
                   help="PyTorch in channels-last memory format (the references use NCHW)")
    p.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    p.add_argument("--classes", type=int, default=NUM_CLASSES)
    p.add_argument("--xla-cpu-flags", default="",
                   help="extra XLA_FLAGS for the ltx worker, e.g. a CPU lowering flag to measure")
    p.add_argument("--flags-vs-default", default="",
                   help="time ltx with these extra XLA_FLAGS against ltx without them")
    p.add_argument("--worker", choices=["ltx", "flagged", "torch"], help=argparse.SUPPRESS)
    p.add_argument("--layout", choices=LAYOUTS, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# -- workers ------------------------------------------------------------------------------

def _ltx_worker(args):
    import functools

    from ltx import host_memory
    host_memory.keep_freed_buffers()  # As the training entry point does (ltx.train).

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    # The step of benchmark_train_step.py (this directory is on sys.path: a worker runs as a script).
    from benchmark_train_step import make_train_step

    from ltx.models.multi_expert import MultiExpertResNet

    layout = _layout(args.layout)
    model = MultiExpertResNet(num_classes=args.classes, num_experts=layout["num_experts"],
                              num_shared_stages=layout["num_shared_stages"],
                              widths=layout["widths"], head=layout["head"],
                              expert_strategy="scan")
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(args.batch, args.image_size, args.image_size, 3)),
                         jnp.float32)
    labels = jnp.asarray(rng.integers(0, args.classes, size=args.batch), jnp.int32)
    variables = jax.jit(functools.partial(model.init, train=False))(
        jax.random.key(0, impl="rbg"), images)
    # PyTorch's SGD adds weight_decay * w to the gradient before the momentum buffer.
    tx = optax.chain(optax.add_decayed_weights(WEIGHT_DECAY), optax.sgd(LR, momentum=MOMENTUM))
    state = dict(params=variables["params"], batch_stats=variables["batch_stats"],
                 opt_state=tx.init(variables["params"]))

    step = make_train_step(model, tx)  # Jitted, the state donated.
    num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))
    holder = {"state": state}

    def run_one():
        holder["state"], loss = step(holder["state"], images, labels)
        return float(loss)  # Blocks until the step is done.

    _serve(run_one, num_params, threads=f"XLA:CPU, {os.cpu_count()} cores")


def _torch_model(layout: dict, num_classes: int, channels_last: bool, *, in_channels: int = 3,
                 per_expert: bool = False):
    """The PyTorch ResNet-32 of `layout`; its forward gives the mean of the expert logits
    [B, C], or with `per_expert` each expert's [E, B, C] (experiments/pytorch_digits_balpoe.py)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin, planes, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.stride, self.pad = stride, (planes - cin) // 2

        def forward(self, x):
            y = F.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            s = x[:, :, ::self.stride, ::self.stride] if self.stride != 1 else x
            if self.pad:  # Option A: zero channels on both sides.
                s = F.pad(s, (0, 0, 0, 0, self.pad, self.pad))
            return F.relu(y + s)

    def stage(cin, planes, stride):
        blocks = [Block(cin, planes, stride)] + [Block(planes, planes, 1) for _ in range(4)]
        return nn.Sequential(*blocks)

    class CosineHead(nn.Module):
        def __init__(self, features, classes):
            super().__init__()
            self.weight = nn.Parameter(torch.empty(features, classes).uniform_(-1, 1))

        def forward(self, x):
            return 30.0 * F.normalize(x, dim=1).mm(F.normalize(self.weight, dim=0))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            widths, shared = layout["widths"], layout["num_shared_stages"]
            strides = (1, 2, 2)
            self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                      nn.BatchNorm2d(widths[0]), nn.ReLU())
            trunk, cin = [], widths[0]
            for i in range(shared):
                trunk.append(stage(cin, widths[i], strides[i]))
                cin = widths[i]
            self.trunk = nn.Sequential(*trunk)
            experts = []
            for _ in range(layout["num_experts"]):
                layers, c = [], cin
                for i in range(shared, 3):
                    layers.append(stage(c, widths[i], strides[i]))
                    c = widths[i]
                experts.append(nn.Sequential(*layers))
            self.experts = nn.ModuleList(experts)
            head = (nn.Linear if layout["head"] == "linear" else CosineHead)
            self.heads = nn.ModuleList(head(widths[-1], num_classes)
                                       for _ in range(layout["num_experts"]))

        def forward(self, x):
            shared = self.trunk(self.stem(x))
            logits = [h(e(shared).mean(dim=(2, 3))) for e, h in zip(self.experts, self.heads)]
            return torch.stack(logits) if per_expert else torch.stack(logits).mean(dim=0)

    model = Net()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _torch_worker(args):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = _torch_model(_layout(args.layout), args.classes, args.torch_channels_last)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM,
                                weight_decay=WEIGHT_DECAY)
    images = torch.randn(args.batch, 3, args.image_size, args.image_size)
    if args.torch_channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, args.classes, (args.batch,))

    def run_one():
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        return loss.item()

    run_one()  # The first step allocates.
    num_params = sum(p.numel() for p in model.parameters())
    _serve(run_one, num_params, threads=f"torch {torch.__version__}, "
           f"{torch.get_num_threads()} threads")


def _serve(run_one, num_params: int, threads: str):
    """Compiles/warms with two steps, then answers 'run K' lines with K step times (JSON)."""
    start = time.perf_counter()
    run_one()
    first = time.perf_counter() - start
    run_one()
    print(json.dumps({"ready": True, "num_params": num_params, "first_step_s": first,
                      "threads": threads}), flush=True)
    for line in sys.stdin:
        if not line.startswith("run "):
            break
        times, losses = [], []
        for _ in range(int(line.split()[1])):
            t = time.perf_counter()
            losses.append(run_one())
            times.append(time.perf_counter() - t)
        print(json.dumps({"step_s": times, "losses": losses,
                          "finite": all(map(_finite, losses))}), flush=True)


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


# -- driver -------------------------------------------------------------------------------

class Worker:
    def __init__(self, python: str, kind: str, args, layout: str):
        cmd = [python, os.path.abspath(__file__), "--worker", kind, "--layout", layout,
               "--batch", str(args.batch), "--image-size", str(args.image_size),
               "--classes", str(args.classes)]
        if args.torch_channels_last:
            cmd.append("--torch-channels-last")
        env = dict(os.environ)
        extra = {"ltx": args.xla_cpu_flags,
                 "flagged": f"{args.xla_cpu_flags} {args.flags_vs_default}"}.get(kind, "")
        if extra.strip():
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + extra).strip()
        self.kind = kind
        self.losses = []
        self.process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, env=env)
        self.info = self._read()

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.kind} worker exited with status "
                               f"{self.process.wait()} before answering")
        return json.loads(line)

    def steps(self, count: int) -> float:
        """Median seconds per step over `count` steps."""
        self.process.stdin.write(f"run {count}\n")
        self.process.stdin.flush()
        answer = self._read()
        if not answer["finite"]:
            raise FloatingPointError(f"the {self.kind} worker's loss is not finite")
        self.losses += answer["losses"]
        return statistics.median(answer["step_s"])

    def close(self):
        self.process.stdin.close()
        self.process.wait()


def _torch_python(requested: str) -> str | None:
    python = requested or sys.executable
    probe = subprocess.run([python, "-c", "import torch"], capture_output=True)
    if probe.returncode == 0:
        return python
    if requested:
        raise SystemExit(f"--torch-python {requested!r} cannot import torch: "
                         f"{probe.stderr.decode().strip().splitlines()[-1:]}")
    return None


def compare(args, layout: str, torch_python: str | None) -> dict:
    workers = [Worker(sys.executable, "ltx", args, layout)]
    if args.flags_vs_default:
        workers.append(Worker(sys.executable, "flagged", args, layout))
    elif torch_python:
        workers.append(Worker(torch_python, "torch", args, layout))
    try:
        counts = {w.kind: w.info["num_params"] for w in workers}
        if len(set(counts.values())) > 1:
            raise RuntimeError(f"{layout}: the two models differ, parameters {counts}")
        seconds = {w.kind: [] for w in workers}
        for r in range(args.rounds):
            for w in (workers if r % 2 == 0 else workers[::-1]):
                seconds[w.kind].append(w.steps(args.steps))
    finally:
        for w in workers:
            w.close()
    result = {"layout": layout, "num_params": counts["ltx"],
              "ltx_images_per_s": args.batch / statistics.median(seconds["ltx"]),
              "ltx_first_step_s": workers[0].info["first_step_s"]}
    if args.flags_vs_default:
        ratios = [s / f for s, f in zip(seconds["ltx"], seconds["flagged"])]
        result.update(flagged_images_per_s=args.batch / statistics.median(seconds["flagged"]),
                      ratio=statistics.median(ratios), ratio_min=min(ratios),
                      ratio_max=max(ratios),
                      max_loss_difference=max(abs(a - b) for a, b in
                                              zip(workers[0].losses, workers[1].losses)))
    elif torch_python:
        ratios = [t / s for s, t in zip(seconds["ltx"], seconds["torch"])]
        result.update(torch_images_per_s=args.batch / statistics.median(seconds["torch"]),
                      ratio=statistics.median(ratios), ratio_min=min(ratios),
                      ratio_max=max(ratios), torch_threads=workers[1].info["threads"])
    return result


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return (_torch_worker if args.worker == "torch" else _ltx_worker)(args)
    if args.rounds < 1 or args.steps < 1:
        raise SystemExit(f"--rounds and --steps must be >= 1, got {args.rounds}, {args.steps}")
    torch_python = None if args.flags_vs_default else _torch_python(args.torch_python)
    print(f"batch {args.batch}, {args.image_size}x{args.image_size}, {args.classes} classes; "
          f"{args.rounds} rounds of {args.steps} steps per worker"
          + (f"; ltx with {args.flags_vs_default} against ltx" if args.flags_vs_default else
             "" if torch_python else "; PyTorch not importable here, ltx only"), flush=True)
    for layout in args.layouts:
        r = compare(args, layout, torch_python)
        line = (f"{layout:<8} params={r['num_params']:>9,} ltx={r['ltx_images_per_s']:7.1f} img/s"
                f" (first step {r['ltx_first_step_s']:.1f} s)")
        if args.flags_vs_default:
            line += (f"  flagged={r['flagged_images_per_s']:7.1f} img/s"
                     f"  flagged/ltx={r['ratio']:.2f} [{r['ratio_min']:.2f}-{r['ratio_max']:.2f}]"
                     f"  max |loss difference|={r['max_loss_difference']:.3g}")
        elif torch_python:
            line += (f"  torch={r['torch_images_per_s']:7.1f} img/s ({r['torch_threads']})"
                     f"  ltx/torch={r['ratio']:.2f} [{r['ratio_min']:.2f}-{r['ratio_max']:.2f}]")
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
