"""needle.data: DataLoader, transforms, MNIST / CIFAR-10 / PTB readers and their errors."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import needle as ndl
import numpy as np
import pytest
from needle import data
from needle.data import DatasetFormatError
from needle.data.datasets.cifar10 import UnsafePickleError, load_cifar_batch, safe_loads

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MNIST_DIR = SHARED_DATA / "mnist"
PTB_DIR = SHARED_DATA / "ptb"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (see shared/data/README.md)")
    return path


# --------------------------------------------------------------------------- DataLoader


def _dataset(n: int = 10) -> data.NDArrayDataset:
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    y = np.arange(n) % 4
    return data.NDArrayDataset(x, y)


def test_dataloader_in_order_with_short_last_batch(device):
    loader = data.DataLoader(_dataset(10), batch_size=4, device=device)
    batches = list(loader)
    assert len(loader) == 3
    assert [b[0].shape for b in batches] == [(4, 3), (4, 3), (2, 3)]
    assert all(isinstance(t, ndl.Tensor) and t.device == device for b in batches for t in b)
    assert all(not t.requires_grad for b in batches for t in b)
    labels = "int64" if device.supports("int64") else "float32"  # v1 backends: float32 only
    assert all(b[0].dtype == "float32" and b[1].dtype == labels for b in batches), (
        "float fields take the loader's dtype, integer labels keep theirs"
    )
    np.testing.assert_array_equal(
        np.concatenate([b[0].numpy() for b in batches]), _dataset(10).arrays[0]
    )
    np.testing.assert_array_equal(
        np.concatenate([b[1].numpy() for b in batches]), np.arange(10) % 4
    )


def test_dataloader_shuffle_draws_a_fresh_permutation_per_epoch(device):
    ds = _dataset(10)
    loader = data.DataLoader(ds, batch_size=3, shuffle=True, device=device)
    np.random.seed(0)
    first = np.concatenate([b[0].numpy()[:, 0] for b in loader]) / 3
    second = np.concatenate([b[0].numpy()[:, 0] for b in loader]) / 3
    np.random.seed(0)
    expected1, expected2 = np.random.permutation(10), np.random.permutation(10)
    np.testing.assert_array_equal(first, expected1)
    np.testing.assert_array_equal(second, expected2)
    assert sorted(first) == list(range(10)) and not np.array_equal(first, second)


def test_dataloader_single_field_and_default_batch(device):
    loader = data.DataLoader(data.NDArrayDataset(np.ones((3, 2))), device=device)
    batches = list(loader)
    assert len(batches) == 3 and len(batches[0]) == 1 and batches[0][0].shape == (1, 2)


def test_dataloader_rejects_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        data.DataLoader(_dataset(), batch_size=0)


def test_ndarray_dataset_lengths_must_agree():
    with pytest.raises(ValueError, match="differ in length"):
        data.NDArrayDataset(np.zeros(3), np.zeros(4))


# --------------------------------------------------------------------------- transforms


def test_random_flip_horizontal_follows_the_draw():
    img = np.arange(2 * 3 * 1, dtype=np.float32).reshape(2, 3, 1)
    np.random.seed(1)
    draws = np.random.rand(20) < 0.5
    np.random.seed(1)
    flip = data.RandomFlipHorizontal(p=0.5)
    for flipped in draws:
        out = flip(img)
        np.testing.assert_array_equal(out, img[:, ::-1, :] if flipped else img)
    assert draws.any() and not draws.all()
    np.testing.assert_array_equal(data.RandomFlipHorizontal(p=1.0)(img), img[:, ::-1, :])
    np.testing.assert_array_equal(data.RandomFlipHorizontal(p=0.0)(img), img)


def test_random_crop_shifts_by_the_drawn_offsets():
    img = np.random.rand(5, 6, 2).astype(np.float32)
    crop = data.RandomCrop(padding=2)
    for seed in range(10):
        np.random.seed(seed)
        dx, dy = np.random.randint(low=-2, high=3, size=2)
        np.random.seed(seed)
        out = crop(img)
        assert out.shape == img.shape
        padded = np.pad(img, ((2, 2), (2, 2), (0, 0)))
        np.testing.assert_array_equal(out, padded[2 + dx : 7 + dx, 2 + dy : 8 + dy])
    np.testing.assert_array_equal(data.RandomCrop(padding=0)(img), img)


def test_transforms_reject_non_images():
    with pytest.raises(ValueError, match="H x W x C"):
        data.RandomCrop()(np.zeros((4, 4)))


def test_builtins_are_registered_through_the_plugin_hooks(fresh_plugins):
    assert fresh_plugins.extensions("datasets")["MNISTDataset"] is data.MNISTDataset
    assert fresh_plugins.extensions("transforms")["RandomCrop"] is data.RandomCrop


def test_plugin_datasets_appear_under_needle_data(fresh_plugins):
    from needle.plugins import hookimpl

    class Tiny(data.Dataset):
        pass

    class Plugin:
        @hookimpl
        def needle_datasets(self):
            return {"TinyDataset": Tiny}

    fresh_plugins.register(Plugin(), name="test-tiny-dataset")
    assert data.TinyDataset is Tiny
    with pytest.raises(AttributeError, match="NoSuchDataset"):
        data.NoSuchDataset  # noqa: B018


# --------------------------------------------------------------------------- MNIST


def _idx(shape: tuple[int, ...], values: np.ndarray, magic: int | None = None) -> bytes:
    magic = magic if magic is not None else 0x0800 | len(shape)
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in shape)
    return header + values.astype(np.uint8).tobytes()


def _write_mnist(tmp_path: Path, n: int = 6, compress: bool = True, **overrides: bytes):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    labels = np.arange(n, dtype=np.uint8) % 10
    blobs = {
        "images": overrides.get("images", _idx((n, 28, 28), images)),
        "labels": overrides.get("labels", _idx((n,), labels)),
    }
    paths = {}
    for key, blob in blobs.items():
        paths[key] = tmp_path / (f"{key}.gz" if compress else key)
        paths[key].write_bytes(gzip.compress(blob) if compress else blob)
    return paths["images"], paths["labels"], images, labels


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "raw"])
def test_mnist_parses_idx_files(tmp_path, compress):
    img_path, lbl_path, images, labels = _write_mnist(tmp_path, compress=compress)
    ds = data.MNISTDataset(img_path, lbl_path)
    assert len(ds) == 6
    x, y = ds[2]
    assert x.shape == (784,) and x.dtype == np.float32 and y == labels[2]
    np.testing.assert_allclose(x, images[2].reshape(-1) / 255.0, rtol=1e-6)
    assert ds.images.min() == 0.0 and ds.images.max() == 1.0


def test_mnist_transforms_see_28x28x1(tmp_path):
    img_path, lbl_path, images, _ = _write_mnist(tmp_path)
    seen = []

    def spy(img):
        seen.append(img.shape)
        return img[:, ::-1, :]

    ds = data.MNISTDataset(img_path, lbl_path, transforms=[spy])
    x, _ = ds[1]
    assert seen == [(28, 28, 1)] and x.shape == (784,)
    np.testing.assert_allclose(x.reshape(28, 28), images[1][:, ::-1] / 255.0, rtol=1e-6)


def test_mnist_missing_file_is_named(tmp_path):
    img_path, _, _, _ = _write_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope-labels"):
        data.MNISTDataset(img_path, tmp_path / "nope-labels.gz")


@pytest.mark.parametrize(
    "case, match",
    [
        ("bad_magic", "bad magic number"),
        ("truncated_data", "truncated or corrupt"),
        ("short_header", "shorter than"),
        ("truncated_gzip", "truncated gzip"),
        ("corrupt_gzip", "corrupt gzip"),
        ("count_mismatch", "holds 6 images but"),
        ("label_range", "not a digit"),
    ],
)
def test_mnist_bad_files_raise_naming_the_file(tmp_path, case, match):
    n = 6
    pixels = np.zeros((n, 28, 28))
    if case == "bad_magic":
        paths = _write_mnist(tmp_path, images=_idx((n, 28, 28), pixels, magic=0x0801))
    elif case == "truncated_data":
        paths = _write_mnist(tmp_path, images=_idx((n, 28, 28), pixels)[:-100])
    elif case == "short_header":
        paths = _write_mnist(tmp_path, images=b"\x00\x00\x08")
    elif case == "count_mismatch":
        paths = _write_mnist(tmp_path, labels=_idx((n - 1,), np.zeros(n - 1)))
    elif case == "label_range":
        paths = _write_mnist(tmp_path, labels=_idx((n,), np.full(n, 12)))
    else:
        paths = _write_mnist(tmp_path)
        blob = paths[0].read_bytes()
        if case == "truncated_gzip":
            paths[0].write_bytes(blob[: len(blob) // 2])
        else:
            paths[0].write_bytes(blob[:20] + bytes(b ^ 0xFF for b in blob[20:60]) + blob[60:])
    with pytest.raises(DatasetFormatError, match=match) as info:
        data.MNISTDataset(paths[0], paths[1])
    bad = paths[1] if case == "label_range" else paths[0]
    assert str(bad) in str(info.value)


@pytest.mark.parametrize(
    "shape", [(2**31, 2**31, 4), (2**32 - 1, 2**32 - 1, 2**32 - 1)], ids=["2^64", "huge"]
)
def test_mnist_header_whose_size_overflows_int64_names_the_file(tmp_path, shape):
    images = tmp_path / "images-idx3-ubyte"
    images.write_bytes(_idx(shape, np.zeros(0)))  # the header alone, no data
    labels = tmp_path / "labels-idx1-ubyte"
    labels.write_bytes(_idx((0,), np.zeros(0)))
    with pytest.raises(DatasetFormatError, match="header says shape") as info:
        data.MNISTDataset(images, labels)
    assert str(images) in str(info.value)


def test_mnist_real_test_set():
    images = _need(MNIST_DIR / "t10k-images-idx3-ubyte.gz")
    ds = data.MNISTDataset(images, MNIST_DIR / "t10k-labels-idx1-ubyte.gz")
    assert len(ds) == 10_000 and ds.images.shape == (10_000, 784)
    assert ds.images.min() == 0.0 and ds.images.max() == 1.0
    assert list(ds.labels[:10]) == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    np.testing.assert_array_equal(np.bincount(ds.labels)[:3], [980, 1135, 1032])


# --------------------------------------------------------------------------- CIFAR-10


def _write_cifar(folder: Path, n: int = 4, protocol: int = 2, py2_keys: bool = True) -> dict:
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(1)
    written = {}
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, size=n)]
        k = (lambda s: s.encode()) if py2_keys else (lambda s: s)
        batch = {k("batch_label"): b"testing", k("labels"): y, k("data"): x,
                 k("filenames"): [b"a.png"] * n}  # fmt: skip
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        written[name] = (x, y)
    return written


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_reads_pickled_batches(tmp_path, protocol):
    written = _write_cifar(tmp_path / "cifar", protocol=protocol)
    train = data.CIFAR10Dataset(tmp_path / "cifar", train=True)
    test = data.CIFAR10Dataset(tmp_path / "cifar", train=False)
    assert len(train) == 20 and len(test) == 4
    x, y = train[5]
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    bx, by = written["data_batch_2"]
    np.testing.assert_allclose(x, bx[1].reshape(3, 32, 32) / 255.0, rtol=1e-6)
    assert y == by[1]
    assert test[0][1] == written["test_batch"][1][0]


def _py2_pickle(x: np.ndarray, labels: list[int]) -> bytes:
    """A batch as Python 2's cPickle wrote the real CIFAR-10 files: every str is a byte string."""

    def s(b: bytes) -> bytes:  # SHORT_BINSTRING
        return b"U" + bytes([len(b)]) + b

    def i(n: int) -> bytes:  # BININT
        return b"J" + struct.pack("<i", n)

    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
        + i(0) + b"\x85" + s(b"b") + b"\x87R"
        + b"(" + i(1) + i(x.shape[0]) + i(x.shape[1]) + b"\x86"
        + b"cnumpy\ndtype\n" + s(b"u1") + i(0) + i(1) + b"\x87R"
        + b"(" + i(3) + s(b"|") + b"NNN" + i(-1) + i(-1) + i(0) + b"tb"
        + b"\x89T" + struct.pack("<I", x.nbytes) + x.tobytes() + b"tb"
    )  # fmt: skip
    items = b"(" + b"".join(i(v) for v in labels) + b"e"
    return (
        b"\x80\x02}(" + s(b"batch_label") + s(b"py2") + s(b"data") + array
        + s(b"labels") + b"]" + items + b"u."
    )  # fmt: skip


def test_cifar10_reads_python2_pickles(tmp_path):
    x = np.random.default_rng(2).integers(0, 256, size=(3, 3072), dtype=np.uint8)
    path = tmp_path / "data_batch_1"
    path.write_bytes(_py2_pickle(x, [3, 1, 4]))
    got_x, got_y = load_cifar_batch(path)
    np.testing.assert_array_equal(got_x, x)
    assert got_y.tolist() == [3, 1, 4]


def test_cifar10_str_keys_and_transforms_in_hwc(tmp_path):
    _write_cifar(tmp_path / "cifar", py2_keys=False)
    ds = data.CIFAR10Dataset(tmp_path / "cifar", train=False, transforms=[lambda im: im[:, ::-1]])
    plain = data.CIFAR10Dataset(tmp_path / "cifar", train=False)
    np.testing.assert_array_equal(ds[0][0], plain[0][0][:, :, ::-1])


def test_cifar10_dataloader_batches_nchw(tmp_path, device):
    _write_cifar(tmp_path / "cifar")
    ds = data.CIFAR10Dataset(tmp_path / "cifar", train=True)
    X, y = next(iter(data.DataLoader(ds, batch_size=8, device=device)))
    assert X.shape == (8, 3, 32, 32) and y.shape == (8,)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize(
    "payload",
    [
        {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": _Evil()},
        {b"data": np.array([object()] * 3072, dtype=object).reshape(1, 3072), b"labels": [0]},
        {b"data": np.ma.zeros((1, 3072), np.uint8), b"labels": [0]},
    ],
    ids=["os.system", "object-array", "array-subclass"],
)
def test_cifar10_refuses_malicious_pickles(tmp_path, monkeypatch, payload):
    folder = tmp_path / "cifar"
    _write_cifar(folder)
    (folder / "test_batch").write_bytes(pickle.dumps(payload, protocol=2))
    calls = []
    monkeypatch.setattr(os, "system", lambda cmd: calls.append(cmd))
    with pytest.raises(DatasetFormatError, match="not a safe CIFAR-10 pickle") as info:
        data.CIFAR10Dataset(folder, train=False)
    assert "test_batch" in str(info.value) and calls == []


class _PickledDtype:
    """Pickles as ``numpy.dtype(spec)`` followed by BUILD with any ``state``, as a file could."""

    def __init__(self, spec, state):
        self.spec, self.state = spec, state

    def __reduce__(self):
        return (np.dtype, (self.spec, False, True), self.state)


class _PickledArray:
    """Pickles as numpy's protocol-2 array rebuild with any dtype, shape and raw bytes."""

    def __init__(self, shape, dtype, raw, call=None):
        self.shape, self.dtype, self.raw, self.call = shape, dtype, raw, call

    def __reduce__(self):
        reconstruct = getattr(np, "_core", getattr(np, "core", None)).multiarray._reconstruct
        return (reconstruct, (np.ndarray, (0,), b"b"), (1, self.shape, self.dtype, False, self.raw))


class _BareCall:
    """Pickles as a direct call of ``callable(*args)``."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


_U1_STATE = (3, "|", None, None, None, -1, -1, 0)
_FIELDS_OUT_OF_ITEM = (3, "|", None, ("a",), {"a": (np.dtype("u8"), 1 << 20)}, 1, 1, 16)
_SUBARRAY = (3, "|", (np.dtype("u1"), (4096,)), None, None, 4096, 1, 0)


@pytest.mark.parametrize(
    "array, match",
    [
        (_PickledArray((1, 3072), _PickledDtype("u1", _FIELDS_OUT_OF_ITEM), bytes(3072)), "fields"),
        (_PickledArray((1, 3072), _PickledDtype("u1", _SUBARRAY), bytes(3072)), "subarray"),
        (_PickledArray((1, 3072), _PickledDtype("V1", _U1_STATE), bytes(3072)), "V1"),
        (_BareCall(np.ndarray, (1, 3072), "u1"), "numpy.ndarray"),
    ],
    ids=["fields-outside-the-item", "subarray", "void-dtype", "bare-ndarray-call"],
)
def test_cifar10_refuses_hostile_arrays(tmp_path, array, match):
    """A pickle may not build an array from a dtype it altered, nor uninitialized memory."""
    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps({b"data": array, b"labels": [0]}, protocol=2))
    with pytest.raises(DatasetFormatError, match="not a safe CIFAR-10 pickle") as info:
        load_cifar_batch(path)
    assert str(path) in str(info.value)
    assert match in str(info.value), str(info.value)
    assert isinstance(info.value.__cause__, UnsafePickleError)


def test_cifar10_unbuilt_array_is_refused(tmp_path):
    """``_reconstruct`` without the BUILD that fills it would hand out uninitialized memory."""

    class Unbuilt:
        def __reduce__(self):
            reconstruct = getattr(np, "_core", getattr(np, "core", None)).multiarray._reconstruct
            return (reconstruct, (np.ndarray, (1, 3072), b"B"))

    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps({b"data": Unbuilt(), b"labels": [0]}, protocol=2))
    with pytest.raises(DatasetFormatError, match="not a safe CIFAR-10 pickle.*never filled"):
        load_cifar_batch(path)


@pytest.mark.parametrize("protocol", [2, 5])
@pytest.mark.parametrize("dtype", ["u1", ">i4", "<f8", "?", "c8"])
def test_safe_loads_rebuilds_plain_arrays_bit_exact(protocol, dtype):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 200, size=(3, 5)).astype(dtype)
    nested = {"a": [array, (array.T, {"b": array[::2]})], "n": 3}
    back = safe_loads(pickle.dumps(nested, protocol=protocol))
    for got, want in [(back["a"][0], array), (back["a"][1][0], array.T),
                      (back["a"][1][1]["b"], array[::2])]:  # fmt: skip
        assert type(got) is np.ndarray and got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        assert got.flags.writeable
    assert back["n"] == 3


def test_cifar10_hostile_dtype_does_not_crash_the_interpreter(tmp_path):
    """The reported attack, in a child process: it must end in a clean error, not SIGSEGV."""
    folder = tmp_path / "cifar"
    evil = _PickledArray((4, 3072), _PickledDtype("u1", _FIELDS_OUT_OF_ITEM), bytes(4 * 3072))
    _write_cifar(folder)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": evil, b"labels": [0] * 4}))
    code = (
        "import sys\nfrom needle import data\n"
        "try:\n    ds = data.CIFAR10Dataset(sys.argv[1], train=False)\n"
        "except data.DatasetFormatError as exc:\n    print('refused:', exc)\n"
        "else:\n    print('loaded', ds.X.dtype, ds.X.sum())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"the loader crashed (status {proc.returncode}): {proc.stderr}"
    assert proc.stdout.startswith("refused:") and "fields" in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    "content, match",
    [
        (lambda: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)})[:-30], "truncated"),
        (lambda: pickle.dumps([1, 2]), "expected a pickled dict"),
        (lambda: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}), "no 'labels'"),
        (lambda: pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}), "3072"),
        (lambda: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "labels"),
        (lambda: b"not a pickle at all", "corrupt"),
        (
            lambda: pickle.dumps(
                {b"data": _PickledArray((1, 3072), _PickledDtype("u1", _U1_STATE), bytes(30))}
            ),
            r"30 bytes.*\(1, 3072\).*3072",
        ),
    ],
    ids=["truncated", "not-dict", "no-labels", "wrong-width", "label-count", "garbage", "short"],
)
def test_cifar10_bad_files_raise_naming_the_file(tmp_path, content, match):
    folder = tmp_path / "cifar"
    _write_cifar(folder)
    (folder / "test_batch").write_bytes(content())
    with pytest.raises(DatasetFormatError, match=match) as info:
        data.CIFAR10Dataset(folder, train=False)
    assert str(folder / "test_batch") in str(info.value)


def test_cifar10_missing_batch_is_named(tmp_path):
    folder = tmp_path / "cifar"
    _write_cifar(folder)
    (folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        data.CIFAR10Dataset(folder, train=True)


# --------------------------------------------------------------------------- PTB


def test_dictionary_and_corpus_on_small_text(tmp_path):
    (tmp_path / "train.txt").write_text(" a b c\n b a\n")
    (tmp_path / "test.txt").write_text(" c d\n")
    corpus = data.Corpus(tmp_path)
    assert corpus.dictionary.idx2word == ["a", "b", "c", "<eos>", "d"]
    assert corpus.train == [0, 1, 2, 3, 1, 0, 3] and corpus.test == [2, 4, 3]
    assert len(data.Corpus(tmp_path, max_lines=1).train) == 4


def test_corpus_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.txt"):
        data.Corpus(tmp_path)


def test_corpus_rejects_binary_text(tmp_path):
    (tmp_path / "train.txt").write_bytes(b"\xff\xfe\x00bad")
    (tmp_path / "test.txt").write_text("ok\n")
    with pytest.raises(DatasetFormatError, match="train.txt"):
        data.Corpus(tmp_path)


def test_batchify_and_get_batch(device):
    ids = list(range(23))
    batches = data.batchify(ids, batch_size=4, device=device, dtype="float32")
    assert batches.shape == (5, 4)
    np.testing.assert_array_equal(batches[:, 1], [5, 6, 7, 8, 9])
    x, target = data.get_batch(batches, 1, bptt=3, device=device, dtype="float32")
    assert x.shape == (3, 4) and target.shape == (12,) and x.device == device
    np.testing.assert_array_equal(x.numpy(), batches[1:4])
    np.testing.assert_array_equal(target.numpy(), batches[2:5].reshape(-1))
    x, target = data.get_batch(batches, 3, bptt=3, device=device)
    assert x.shape == (1, 4) and target.shape == (4,)


def test_ptb_corpus_real_text():
    _need(PTB_DIR / "valid.txt")
    corpus = data.Corpus(PTB_DIR, train_file="valid.txt")
    assert len(corpus.train) == 73_760 and len(corpus.test) == 82_430
    assert len(corpus.dictionary) <= 10_000 and "<unk>" in corpus.dictionary.word2idx
    small = data.Corpus(PTB_DIR, max_lines=100, train_file="valid.txt")
    assert small.train.count(small.dictionary.word2idx["<eos>"]) == 100
