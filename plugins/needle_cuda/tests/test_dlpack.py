"""DLPack for cuda buffers: the capsules to_dlpack's views hand out (read back through ctypes
structs written here from the DLPack header's layout), round trips without copies, lifetimes
(the deleter holds the buffer; the producer's deleter runs once, when the last user is done),
and the refusals (BufferError). Producers made here with ctypes lend host memory labelled as
CUDA memory, which only the CPU emulation of the kernels can read: those tests need it. A GPU
with PyTorch adds the interop with a real foreign producer and consumer."""

from __future__ import annotations

import ctypes
import gc

import numpy as np
import pytest

_ext = pytest.importorskip("needle_cuda._ext")
REASON = _ext.unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"cuda unavailable: {REASON}")
EMULATED = _ext.__build_archs__ == "emulated"
emulated_only = pytest.mark.skipif(
    not EMULATED, reason="lends host memory as CUDA memory: the CPU emulation only"
)

KDL_CPU, KDL_CUDA = 1, 2
READ_ONLY, IS_COPIED = 1, 2
DL_DTYPES = {  # dtype: (code, bits)
    "float32": (2, 32), "float64": (2, 64), "int32": (0, 32), "int64": (0, 64), "bool": (6, 8),
}  # fmt: skip


# ---------------------------------------------------------------- the structs, from dlpack.h


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class DLManagedTensor(ctypes.Structure):
    pass


class DLPackVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class DLManagedTensorVersioned(ctypes.Structure):
    pass


DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(DLManagedTensor))
DELETER_V = ctypes.CFUNCTYPE(None, ctypes.POINTER(DLManagedTensorVersioned))
DLManagedTensor._fields_ = [
    ("dl_tensor", DLTensor),
    ("manager_ctx", ctypes.c_void_p),
    ("deleter", DELETER),
]
DLManagedTensorVersioned._fields_ = [
    ("version", DLPackVersion),
    ("manager_ctx", ctypes.c_void_p),
    ("deleter", DELETER_V),
    ("flags", ctypes.c_uint64),
    ("dl_tensor", DLTensor),
]

api = ctypes.pythonapi
api.PyCapsule_GetName.restype = ctypes.c_char_p
api.PyCapsule_GetName.argtypes = [ctypes.py_object]
api.PyCapsule_GetPointer.restype = ctypes.c_void_p
api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
api.PyCapsule_IsValid.restype = ctypes.c_int
api.PyCapsule_IsValid.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
api.PyCapsule_New.restype = ctypes.py_object
api.PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
CAPSULE_DESTRUCTOR = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


def read(capsule) -> dict:
    """What a capsule holds, as plain Python values."""
    name = api.PyCapsule_GetName(capsule).decode()
    address = api.PyCapsule_GetPointer(capsule, name.encode())
    info = {"name": name}
    if name == "dltensor_versioned":
        managed = DLManagedTensorVersioned.from_address(address)
        info["version"] = (managed.version.major, managed.version.minor)
        info["flags"] = managed.flags
    else:
        managed = DLManagedTensor.from_address(address)
    t = managed.dl_tensor
    info.update(
        data=t.data or 0,
        device=(t.device.device_type, t.device.device_id),
        dtype=(t.dtype.code, t.dtype.bits, t.dtype.lanes),
        shape=tuple(t.shape[i] for i in range(t.ndim)),
        strides=None if not t.strides else tuple(t.strides[i] for i in range(t.ndim)),
        byte_offset=t.byte_offset,
    )
    return info


def allocated() -> int:
    gc.collect()
    return _ext.memory_stats()["allocated_bytes"]


# ------------------------------------------------------------------------------ export


@pytest.mark.parametrize("dtype", list(DL_DTYPES))
@pytest.mark.parametrize(
    "shape,strides,offset",
    [((6,), (1,), 0), ((2, 3), (3, 1), 0), ((3, 2), (1, 3), 0), ((2, 2), (-3, -1), 5),
     ((2, 3), (0, 1), 1), ((), (), 4), ((0, 3), (3, 1), 0)],
)  # fmt: skip
def test_capsule_describes_the_view(put, dtype, shape, strides, offset):
    h = put(np.zeros(6, dtype))
    view = _ext.to_dlpack(h, shape, strides, offset)
    assert view.__dlpack_device__() == (KDL_CUDA, 0)
    info = read(view.__dlpack__())
    assert info["name"] == "dltensor"
    assert info["data"] == h.ptr()  # the buffer's start; the view begins byte_offset later
    assert info["byte_offset"] == offset * np.dtype(dtype).itemsize
    assert info["device"] == (KDL_CUDA, 0)
    assert info["dtype"] == (*DL_DTYPES[dtype], 1)
    assert info["shape"] == shape
    assert info["strides"] == (strides if shape else None)


def test_versioned_capsules_carry_version_and_flags(put, get):
    h = put(np.arange(6, dtype=np.float32))
    info = read(_ext.to_dlpack(h, (2, 3), (3, 1), 0).__dlpack__(max_version=(1, 2)))
    assert (info["name"], info["version"], info["flags"]) == ("dltensor_versioned", (1, 0), 0)
    broadcast = _ext.to_dlpack(h, (4, 3), (0, 1), 3)
    assert read(broadcast.__dlpack__(max_version=(1, 0)))["flags"] == READ_ONLY
    assert read(broadcast.__dlpack__(max_version=(0, 8)))["name"] == "dltensor"
    copied = broadcast.__dlpack__(max_version=(1, 0), copy=True)
    info = read(copied)
    assert info["flags"] == IS_COPIED and info["strides"] is None and info["byte_offset"] == 0
    assert info["data"] != h.ptr()
    back, _ = _ext.from_dlpack(copied)  # a dense, writable copy of the broadcast view
    np.testing.assert_array_equal(get(back, (4, 3)), np.tile(np.arange(3, 6), (4, 1)))


def test_export_arguments_follow_the_array_api(put):
    view = _ext.to_dlpack(put(np.zeros(4)), (4,), (1,), 0)
    for stream in (None, -1, 1, 2):
        assert read(view.__dlpack__(stream=stream))["name"] == "dltensor"
    with pytest.raises(ValueError, match="stream=0"):
        view.__dlpack__(stream=0)
    assert read(view.__dlpack__(dl_device=(KDL_CUDA, 0)))["device"] == (KDL_CUDA, 0)
    with pytest.raises(BufferError, match="own device"):
        view.__dlpack__(dl_device=(KDL_CPU, 0))
    with pytest.raises(TypeError):
        view.__dlpack__(None)  # keyword-only, as the standard says
    with pytest.raises(ValueError, match="outside"):
        _ext.to_dlpack(put(np.zeros(4)), (5,), (1,), 0)


# -------------------------------------------------------------------- round trips, lifetime


@pytest.mark.parametrize("dtype", list(DL_DTYPES))
def test_round_trip_shares_memory(put, get, dtype):
    values = np.arange(12).astype(dtype)
    h = put(values)
    back, shape = _ext.from_dlpack(_ext.to_dlpack(h, (12,), (1,), 0))
    assert shape == (12,), "the producer's shape comes back with the handle"
    assert (back.size, back.dtype, back.ptr()) == (12, dtype, h.ptr())
    _ext.fill(back, 1)
    np.testing.assert_array_equal(get(h), np.ones(12, dtype))
    tail, _ = _ext.from_dlpack(_ext.to_dlpack(h, (3, 3), (3, 1), 3))  # a contiguous part
    assert tail.ptr() == h.ptr() + 3 * np.dtype(dtype).itemsize and tail.size == 9


def test_unaligned_imports_run_the_element_path(put, get):
    """A handle starting 4 bytes into a buffer cannot take 16-byte loads: the kernels see that."""
    a = np.arange(1, 1031, dtype=np.float32)
    ha, hb = put(a), put(a * 2)
    sa, _ = _ext.from_dlpack(_ext.to_dlpack(ha, (1029,), (1,), 1))
    sb, _ = _ext.from_dlpack(_ext.to_dlpack(hb, (1029,), (1,), 1))
    out = _ext.Array(1029)
    _ext.ewise_add(sa, sb, out)
    np.testing.assert_array_equal(get(out), a[1:] * 3)
    _ext.ewise_mul(sa, sb, sb)  # unaligned in place
    np.testing.assert_array_equal(get(hb)[1:], a[1:] * a[1:] * 2)
    _ext.fill(sa, 7.0)
    np.testing.assert_array_equal(get(ha), np.r_[1, np.full(1029, 7)])
    total = _ext.Array(1)
    _ext.reduce_sum(sa, total, 1029)
    assert get(total)[0] == 7 * 1029
    prod = _ext.Array(1)
    _ext.matmul(sa, sa, prod, 1, 1029, 1)
    assert get(prod)[0] == 49 * 1029


def test_exports_keep_the_buffer_alive(put, get):
    base = allocated()
    h = put(np.arange(256, dtype=np.float64))
    assert allocated() == base + 2048
    capsule = _ext.to_dlpack(h, (256,), (1,), 0).__dlpack__()
    h.free()
    del h
    assert allocated() == base + 2048  # the capsule holds the buffer
    back, _ = _ext.from_dlpack(capsule)  # consumed: back holds it now
    del capsule
    np.testing.assert_array_equal(get(back), np.arange(256))
    assert allocated() == base + 2048
    back.free()
    assert allocated() == base


def test_unused_capsules_free_their_tensor(put):
    base = allocated()
    h = put(np.zeros(1000))
    view = _ext.to_dlpack(h, (1000,), (1,), 0)
    capsules = [view.__dlpack__(), view.__dlpack__(max_version=(1, 0)), view.__dlpack__(copy=True)]
    assert allocated() == base + 2 * 8192  # the copy has its own buffer
    del h, view, capsules
    assert allocated() == base


def test_refusals_are_buffer_errors(put):
    h = put(np.zeros((3, 4), np.float32))
    with pytest.raises(BufferError, match="C-contiguous"):
        _ext.from_dlpack(_ext.to_dlpack(h, (4, 3), (1, 4), 0))
    with pytest.raises(BufferError, match="C-contiguous"):
        _ext.from_dlpack(_ext.to_dlpack(h, (3, 4), (0, 1), 0).__dlpack__())
    with pytest.raises(BufferError, match="read-only"):
        _ext.from_dlpack(_ext.to_dlpack(h, (3, 4), (0, 1), 0))  # a broadcast view
    with pytest.raises(BufferError, match="imports CUDA memory.*from_numpy"):
        _ext.from_dlpack(np.zeros(3))
    with pytest.raises(TypeError, match="__dlpack__"):
        _ext.from_dlpack([1.0, 2.0])
    capsule = _ext.to_dlpack(h, (12,), (1,), 0).__dlpack__()
    _ext.from_dlpack(capsule)
    with pytest.raises(BufferError, match="unused DLPack capsule"):
        _ext.from_dlpack(capsule)  # consumed once already


# ------------------------------------------------------------- producers made with ctypes


LENT: set[Producer] = set()  # producers whose tensor is out: alive until their deleter runs


class Producer:
    """A DLPack producer lending `array`'s memory as CUDA memory (device 0 unless said),
    counting the calls of its deleter."""

    def __init__(self, array: np.ndarray, *, shape=None, strides=None, byte_offset=0,
                 device=(KDL_CUDA, 0), dtype=None, versioned=False, flags=0) -> None:  # fmt: skip
        self.array, self.deleted, self.versioned = array, 0, versioned
        shape = array.shape if shape is None else shape
        self.shape = (ctypes.c_int64 * max(1, len(shape)))(*shape)
        self.strides = None if strides is None else (ctypes.c_int64 * len(strides))(*strides)
        code_bits = dtype or DL_DTYPES[array.dtype.name]
        tensor = DLTensor(
            array.ctypes.data, DLDevice(*device), len(shape), DLDataType(*code_bits, 1),
            self.shape, self.strides, byte_offset,
        )  # fmt: skip
        if versioned:
            self.deleter = DELETER_V(self._deleted)
            self.managed = DLManagedTensorVersioned(DLPackVersion(1, 0), None, self.deleter, flags,
                                                    tensor)  # fmt: skip
        else:
            self.deleter = DELETER(self._deleted)
            self.managed = DLManagedTensor(tensor, None, self.deleter)
        self.name = b"dltensor_versioned" if versioned else b"dltensor"
        self.destructor = CAPSULE_DESTRUCTOR(self._capsule_died)

    def _deleted(self, _managed) -> None:
        self.deleted += 1
        LENT.discard(self)

    def _capsule_died(self, capsule: int) -> None:
        if api.PyCapsule_IsValid(capsule, self.name):  # never consumed: the producer frees
            self._deleted(None)

    def __dlpack_device__(self) -> tuple[int, int]:
        return (self.managed.dl_tensor.device.device_type, self.managed.dl_tensor.device.device_id)

    def __dlpack__(self, *, stream=None, max_version=None):
        assert stream == 1, "needle-cuda consumes on the legacy default stream"
        if self.versioned and max_version is None:
            raise AssertionError("needle-cuda asks for versioned capsules")
        LENT.add(self)
        address = ctypes.cast(ctypes.pointer(self.managed), ctypes.c_void_p).value
        destructor = ctypes.cast(self.destructor, ctypes.c_void_p).value
        return api.PyCapsule_New(address, self.name, destructor)


class OldProducer(Producer):
    """A producer from before DLPack 1.0: its __dlpack__ takes only `stream`."""

    def __dlpack__(self, stream=None):  # noqa: D105
        return super().__dlpack__(stream=stream)


@emulated_only
@pytest.mark.parametrize("versioned", [False, True])
@pytest.mark.parametrize("dtype", list(DL_DTYPES))
def test_import_from_a_foreign_producer_without_copy(get, dtype, versioned):
    array = (np.arange(24) % 5).astype(dtype).reshape(2, 3, 4)
    producer = Producer(array, versioned=versioned)
    h, shape = _ext.from_dlpack(producer)
    assert shape == (2, 3, 4), "the producer's shape comes back with the handle"
    assert (h.size, h.dtype, h.ptr()) == (24, dtype, array.ctypes.data)
    np.testing.assert_array_equal(get(h, (2, 3, 4)), array)
    _ext.fill(h, 1)  # writes land in the producer's memory
    assert array.all()
    assert producer.deleted == 0
    view = _ext.to_dlpack(h, (24,), (1,), 0)  # re-exported: the producer must wait for it too
    del h
    gc.collect()
    assert producer.deleted == 0
    del view
    gc.collect()
    assert producer.deleted == 1


@emulated_only
def test_import_checks_layout_device_and_dtype():
    array = np.zeros((3, 4), np.float32)
    cases = {
        "not one C-contiguous": Producer(array, shape=(4, 3), strides=(1, 4)),
        "device type 1": Producer(array, device=(KDL_CPU, 0)),
        "on CUDA device 1": Producer(array, device=(KDL_CUDA, 1)),
        "not DLPack dtype \\(code 2, bits 16": Producer(array, dtype=(2, 16)),
        "not aligned": Producer(array, shape=(11,), byte_offset=2),
        "read-only": Producer(array, versioned=True, flags=READ_ONLY),
    }
    for message, producer in cases.items():
        with pytest.raises(BufferError, match=message):
            _ext.from_dlpack(producer)
        gc.collect()
        # refused before being consumed (or before the capsule was even asked for)
        assert producer.deleted <= 1, message
    fine = Producer(array, shape=(3, 4), strides=(4, 1))  # explicit C strides are fine
    _ext.from_dlpack(fine)[0].free()
    assert fine.deleted == 1
    unit = Producer(array, shape=(3, 1, 4), strides=(4, 99, 1))  # unit dimensions: any stride
    _ext.from_dlpack(unit)[0].free()
    assert unit.deleted == 1


@emulated_only
def test_import_of_offsets_empties_and_old_producers(get):
    array = np.arange(10, dtype=np.int64)
    h, _ = _ext.from_dlpack(Producer(array, shape=(7,), byte_offset=3 * 8))
    np.testing.assert_array_equal(get(h), np.arange(3, 10))
    empty_producer = Producer(array, shape=(0, 5))
    empty, _ = _ext.from_dlpack(empty_producer)
    assert empty.size == 0 and empty_producer.deleted == 1  # nothing to hold on to
    old = OldProducer(array)
    np.testing.assert_array_equal(get(_ext.from_dlpack(old)[0]), array)
    gc.collect()
    assert old.deleted == 1


# ----------------------------------------------------------------- a real foreign producer


def _torch_cuda():
    torch = pytest.importorskip("torch")
    if EMULATED or not torch.cuda.is_available():
        pytest.skip("needs a GPU and PyTorch with CUDA")
    return torch


def test_torch_tensors_come_in_and_go_out_without_copies(get):
    torch = _torch_cuda()
    t = torch.arange(12, dtype=torch.float64, device="cuda").reshape(3, 4)
    h, _ = _ext.from_dlpack(t)
    assert (h.size, h.dtype, h.ptr()) == (12, "float64", t.data_ptr())
    np.testing.assert_array_equal(get(h, (3, 4)), np.arange(12).reshape(3, 4))
    _ext.scalar_mul(h, 2.0, h)
    assert torch.equal(t, torch.arange(12, dtype=torch.float64, device="cuda").reshape(3, 4) * 2)
    with pytest.raises(BufferError, match="C-contiguous"):
        _ext.from_dlpack(t.t())
    mine = _ext.Array(6, "int32")
    _ext.fill(mine, 5)
    out = torch.from_dlpack(_ext.to_dlpack(mine, (2, 3), (3, 1), 0))
    assert out.data_ptr() == mine.ptr() and out.dtype == torch.int32
    del mine
    gc.collect()
    assert out.sum().item() == 30  # torch keeps the buffer alive
    strided = torch.from_dlpack(_ext.to_dlpack(_ext.from_dlpack(t)[0], (2, 2), (4, 2), 1))
    assert strided.tolist() == [[2.0, 6.0], [10.0, 14.0]]  # strides and byte offset honoured
