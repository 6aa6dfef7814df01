"""The weight gradient of a 3x3 convolution in four formulations, timed in alternating rounds.

A profile of the ResNet-32 CPU step puts most of its time in XLA's weight-gradient convolutions
(docs/benchmarks.md, "The CPU train step against PyTorch"); this measures whether writing that
gradient another way (as a custom VJP of the convolution would) is faster on this CPU. For
x [B, H, W, Ci], the cotangent g [B, H', W', Co] of conv(x, w), stride s, padding 1, the gradient
dw [3, 3, Ci, Co] as:

- `xla`: `jax.vjp` of `lax.conv_general_dilated` (XLA's own weight-gradient convolution);
- `slices`: nine matmuls, one per kernel tap: (the strided shifted slice of padded x)^T @ g;
- `im2col`: the nine slices concatenated to [B H' W', 9 Ci], then one matmul with g;
- `patches`: `lax.conv_general_dilated_patches` for the columns, then one matmul.

Each round times `--repeats` calls of every formulation, the order reversed every other round;
one line per shape (ResNet-32's stage shapes at batch `--batch` by default): median ms per call
and the speedup over `xla` (median of the per-round ratios), with the largest relative
difference from `xla`'s gradient.

    python experiments/benchmark_weight_gradient.py --batch 128 --rounds 7
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

DIMENSIONS = ("NHWC", "HWIO", "NHWC")
# (H = W, Ci, Co, stride) of ResNet-32's 3x3 convolutions: stages 1-3 and the two downsamplings.
SHAPES = ((32, 16, 16, 1), (32, 16, 32, 2), (16, 32, 32, 1), (16, 32, 64, 2), (8, 64, 64, 1))


def _conv(x, w, stride):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), ((1, 1), (1, 1)),
                                        dimension_numbers=DIMENSIONS)


def xla(x, w, g, stride):
    return jax.vjp(lambda w: _conv(x, w, stride), w)[1](g)[0]


def _taps(x, g, stride):
    """The nine strided shifted views of padded x, each [B H' W', Ci], in (kh, kw) order."""
    _, h, w, _ = g.shape
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return [padded[:, i:i + stride * h:stride, j:j + stride * w:stride, :].reshape(-1, x.shape[-1])
            for i in range(3) for j in range(3)]


def slices(x, w, g, stride):
    cotangent = g.reshape(-1, g.shape[-1])
    taps = [tap.T @ cotangent for tap in _taps(x, g, stride)]
    return jnp.stack(taps).reshape(w.shape)


def im2col(x, w, g, stride):
    columns = jnp.concatenate(_taps(x, g, stride), axis=-1)
    return (columns.T @ g.reshape(-1, g.shape[-1])).reshape(w.shape)


def patches(x, w, g, stride):
    # Its feature order is (Ci, kh, kw).
    columns = jax.lax.conv_general_dilated_patches(x, (3, 3), (stride, stride), ((1, 1), (1, 1)),
                                                   dimension_numbers=DIMENSIONS)
    dw = columns.reshape(-1, columns.shape[-1]).T @ g.reshape(-1, g.shape[-1])
    ci, co = w.shape[2:]
    return dw.reshape(ci, 3, 3, co).transpose(1, 2, 0, 3)


FORMULATIONS = {"xla": xla, "slices": slices, "im2col": im2col, "patches": patches}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--repeats", type=int, default=5, help="calls per formulation per round")
    p.add_argument("--shapes", default="",
                   help="'H,Ci,Co,stride;...' instead of ResNet-32's shapes")
    return p.parse_args(argv)


def measure(shape, args) -> dict:
    size, ci, co, stride = shape
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(args.batch, size, size, ci)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, ci, co)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(args.batch, size // stride, size // stride, co)),
                    jnp.float32)
    fns = {name: jax.jit(fn, static_argnums=3) for name, fn in FORMULATIONS.items()}
    reference = fns["xla"](x, w, g, stride)
    scale = float(jnp.max(jnp.abs(reference)))
    difference = {name: float(jnp.max(jnp.abs(fn(x, w, g, stride) - reference))) / scale
                  for name, fn in fns.items()}
    seconds = {name: [] for name in fns}
    for r in range(args.rounds):
        for name in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            start = time.perf_counter()
            for _ in range(args.repeats):
                fns[name](x, w, g, stride).block_until_ready()
            seconds[name].append((time.perf_counter() - start) / args.repeats)
    return {name: dict(ms=1e3 * statistics.median(s),
                       speedup=statistics.median(a / b for a, b in zip(seconds["xla"], s)),
                       difference=difference[name])
            for name, s in seconds.items()}


def main(argv=None):
    args = parse_args(argv)
    shapes = (tuple(int(v) for v in s.split(",")) for s in args.shapes.split(";")) \
        if args.shapes else SHAPES
    print(f"batch {args.batch}, {args.rounds} rounds of {args.repeats} calls; "
          f"{jax.devices()[0].platform}, {jax.device_count()} device(s)")
    for shape in shapes:
        r = measure(shape, args)
        cells = "  ".join(f"{name} {v['ms']:7.2f} ms ({v['speedup']:.2f}x, "
                          f"diff {v['difference']:.0e})" for name, v in r.items())
        print(f"H={shape[0]:<3} Ci={shape[1]:<3} Co={shape[2]:<3} s={shape[3]}  {cells}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
