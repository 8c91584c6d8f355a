"""DLPack: zero-copy exchange with numpy (and PyTorch where installed), per dtype and backend."""

from __future__ import annotations

import needle as ndl
import numpy as np
import pytest

DTYPES = ["float32", "float64", "int32", "int64", "bool"]


def _shares(device) -> bool:
    return device.has("to_dlpack") and device.has("from_dlpack")


def _values(dtype: str) -> np.ndarray:
    return (np.arange(12).reshape(3, 4) % 5).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_with_numpy(device, dtype: str) -> None:
    if not device.supports(dtype):
        pytest.skip(f"{device.name} holds no {dtype}")
    source = _values(dtype)
    t = ndl.from_dlpack(source, device=device)
    assert (t.shape, t.dtype, t.device) == ((3, 4), dtype, device)
    assert not t.requires_grad
    np.testing.assert_array_equal(t.numpy(), source)
    back = np.from_dlpack(t)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, source)
    if _shares(device):  # the same memory in all three
        source[0, 1] = source[0, 0]
        assert t.numpy()[0, 1] == source[0, 0]
        back[2, 3] = back[0, 0]
        assert source[2, 3] == back[0, 0]


def test_views_are_exported_with_their_strides(device) -> None:
    t = ndl.Tensor(np.arange(12, dtype=np.float32).reshape(3, 4), device=device)
    view = t.transpose()[1:, ::2]
    got = np.from_dlpack(view)
    np.testing.assert_array_equal(got, np.arange(12, dtype=np.float32).reshape(3, 4).T[1:, ::2])
    if _shares(device):
        assert got.strides == (4, 32), "exported as it lies: strided, not copied"
        assert not got.flags.owndata


def test_copy_flags(device) -> None:
    source = np.arange(6, dtype=np.float32)
    copied = ndl.from_dlpack(source, device=device, copy=True)
    source[0] = 42
    assert copied.numpy()[0] == 0, "copy=True never shares"
    strided = np.arange(10, dtype=np.float32)[::2]
    np.testing.assert_array_equal(ndl.from_dlpack(strided, device=device).numpy(), strided)
    with pytest.raises(BufferError):
        ndl.from_dlpack(strided, device=device, copy=False)  # sharing is impossible
    if not _shares(device):
        with pytest.raises(BufferError):
            ndl.from_dlpack(source, device=device, copy=False)
    with pytest.raises(TypeError, match="__dlpack__"):
        ndl.from_dlpack([1, 2, 3])


def test_the_capsule_keeps_the_buffer_alive(device) -> None:
    import gc

    t = ndl.Tensor(np.arange(1000, dtype=np.float32), device=device)
    shared = np.from_dlpack(t)
    del t
    gc.collect()
    np.testing.assert_array_equal(shared, np.arange(1000, dtype=np.float32))


def test_dlpack_device(device) -> None:
    t = ndl.Tensor([1.0, 2.0], device=device)
    kind, index = t.__dlpack_device__()
    assert (kind, index) == ((2, 0) if device.name == "cuda" else (1, 0))


def test_with_pytorch(device) -> None:
    torch = pytest.importorskip("torch")
    t = ndl.Tensor(np.arange(12, dtype=np.float64).reshape(3, 4), device=device)
    if not device.supports("float64"):
        pytest.skip(f"{device.name} holds no float64")
    tt = torch.from_dlpack(t)
    assert tt.dtype == torch.float64 and tuple(tt.shape) == (3, 4)
    np.testing.assert_array_equal(tt.numpy(), t.numpy())
    back = ndl.from_dlpack(torch.arange(6, dtype=torch.int64).reshape(2, 3), device=device)
    assert back.dtype == "int64" and back.numpy().tolist() == [[0, 1, 2], [3, 4, 5]]
    if _shares(device):
        tt[0, 0] = -1.0
        assert t.numpy()[0, 0] == -1.0
