"""The default job's recipe in PyTorch eager, launch to table: the reference for
experiments/benchmark_default_job.py.

configs/digits_lt_balpoe.py trained as BalPoE's official PyTorch code would train it: the
ResNet-32 of experiments/benchmark_vs_pytorch.py (stem + stage 1 shared, 3 full-width experts,
cosine heads x 30) on 8x8x1 digits, the gLA loss (expert k on z_k + (1 - lambda_k) log pi,
lambdas 1, 0, -1, mean over experts), SGD 0.1 with Nesterov momentum 0.9 and weight decay 5e-4,
5 warmup epochs ((epoch + 1) / 5) then x0.1 at epochs 48 and 54, 60 epochs of batch 64 with the
last batch smaller (DataLoader drop_last=False), random crops with 1 pixel of zero padding,
no flip. Like ltx it evaluates the val split every 15 epochs, saves a checkpoint every 15 epochs
and prints the final table (top-1 all / many / medium / few, NLL, ECE with 15 bins on test and
val; shot groups by training counts: many > 100, few < 20).

The images are ltx's digits-LT subset, written by the driver to an .npz (train/val/test images
uint8 [N, 8, 8, 1] and labels, the normalisation), so both libraries train on the same images.
PyTorch is not an ltx dependency: run this with an interpreter that has it.

    python experiments/pytorch_digits_balpoe.py --data=/tmp/digits_lt.npz --workdir=/tmp/pt
"""

import time

LAUNCH = time.perf_counter()

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark_vs_pytorch import _layout, _torch_model  # noqa: E402

LAMBDAS = (1.0, 0.0, -1.0)
EPOCHS, BATCH, LR, WARMUP, DECAYS = 60, 64, 0.1, 5, (48, 54)
EVAL_EVERY = CHECKPOINT_EVERY = 15


def learning_rate(epoch: int) -> float:
    factor = min((epoch + 1) / WARMUP, 1.0) if epoch < WARMUP else 1.0
    return LR * factor * 0.1 ** sum(epoch >= d for d in DECAYS)


def normalise(images: np.ndarray, mean, std) -> torch.Tensor:
    x = (images.astype(np.float32) / 255.0 - mean) / std
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


def random_crops(images: np.ndarray, rng: np.random.Generator, pad: int = 1) -> np.ndarray:
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    dy, dx = rng.integers(0, 2 * pad + 1, n), rng.integers(0, 2 * pad + 1, n)
    return np.stack([padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def report(logits: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> dict:
    """top-1 all/many/medium/few (%), NLL and ECE (%, 15 bins) of ensemble logits [N, C]."""
    z = logits - logits.max(1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
    p = np.exp(log_p)
    pred, correct = p.argmax(1), p.argmax(1) == labels
    group = np.where(counts > 100, 0, np.where(counts < 20, 2, 1))[labels]
    row = {"top1_all": 100 * correct.mean()}
    for g, name in enumerate(("many", "medium", "few")):
        row[f"top1_{name}"] = 100 * correct[group == g].mean() if (group == g).any() else np.nan
    row["nll"] = -log_p[np.arange(len(labels)), labels].mean()
    confidence = p[np.arange(len(labels)), pred]
    bins = np.minimum((confidence * 15).astype(int), 14)
    row["ece"] = 100 * sum(abs(correct[bins == b].mean() - confidence[bins == b].mean())
                           * (bins == b).mean() for b in range(15) if (bins == b).any())
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the driver's digits-LT .npz")
    parser.add_argument("--workdir", required=True, help="where checkpoints are written")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    data = np.load(args.data)
    mean, std = data["mean"], data["std"]
    train_x, train_y = data["train_images"], data["train_labels"]
    counts = np.bincount(train_y, minlength=10)
    log_prior = torch.from_numpy(np.log(counts / counts.sum())).float()
    biases = torch.stack([(1 - lam) * log_prior for lam in LAMBDAS])[:, None, :]  # [E, 1, C]
    model = _torch_model(_layout("balpoe3"), 10, False, in_channels=1, per_expert=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, nesterov=True,
                                weight_decay=5e-4)
    os.makedirs(args.workdir, exist_ok=True)

    def evaluate(split):
        model.eval()
        with torch.no_grad():
            logits = model(normalise(data[f"{split}_images"], mean, std)).mean(0).numpy()
        model.train()
        return report(logits.astype(np.float64), data[f"{split}_labels"], counts)

    loop_start = time.perf_counter()
    for epoch in range(EPOCHS):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(epoch)
        order = rng.permutation(len(train_y))
        for start in range(0, len(order), BATCH):
            index = order[start:start + BATCH]
            x = normalise(random_crops(train_x[index], rng), mean, std)
            y = torch.from_numpy(train_y[index]).long()
            logits = model(x) + biases
            loss = torch.stack([F.cross_entropy(z, y) for z in logits]).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if (epoch + 1) % EVAL_EVERY == 0 and epoch + 1 < EPOCHS:
            print(f"  val @ epoch {epoch + 1}: top1 {evaluate('val')['top1_all']:.2f}", flush=True)
        if (epoch + 1) % CHECKPOINT_EVERY == 0:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "epoch": epoch + 1}, os.path.join(args.workdir, "checkpoint.pth"))
    loop = time.perf_counter() - loop_start
    rows = {split: evaluate(split) for split in ("test", "val")}
    print(f"Finished {EPOCHS} epochs in {loop:.1f}s (train loop)")
    print("split  " + " ".join(f"{k:>11}" for k in rows["test"]))
    for split, row in rows.items():
        print(f"{split:6} " + " ".join(f"{v:11.2f}" for v in row.values()))
    print(f"launch to table {time.perf_counter() - LAUNCH:.1f}s", flush=True)


if __name__ == "__main__":
    main()
