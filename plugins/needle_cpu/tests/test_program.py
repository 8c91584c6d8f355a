"""needle-cpu's run_program: a recorded list of kernel calls run natively gives the bytes of
calling each kernel in turn, raises the exception the failing kernel raises (after the calls
before it ran), calls kernels without a native step through Python, recompiles replaced items,
forgets dropped programs, and runs beside other Python threads."""

from __future__ import annotations

import threading

import needle as ndl
import numpy as np
import pytest

ext = pytest.importorskip("needle_cpu._ext")

N = 40_000  # above the size where kernels use the pool (they run without the GIL anyway)


def put(values: np.ndarray):
    a = ext.Array(values.size, str(values.dtype))
    ext.from_numpy(np.ascontiguousarray(values).reshape(-1), a)
    return a


def get(a) -> np.ndarray:
    return ext.to_numpy(a, (a.size,), (1,), 0)


def workload():
    """Fresh buffers (the same values at every call) and the calls of a program over them:
    every kernel with a native step, at least once."""
    rng = np.random.default_rng(0)
    f = rng.uniform(0.5, 2.0, N).astype(np.float32)
    d = rng.uniform(0.5, 2.0, N).astype(np.float64)
    i = rng.integers(-50, 50, N).astype(np.int64)
    idx = rng.integers(0, 200, 300).astype(np.int64)
    labels = rng.integers(0, 40, 1000).astype(np.int64)
    b = dict(
        x=put(f), y=put(f[::-1].copy()), z=ext.Array(N), w=ext.Array(N), m=ext.Array(N, "bool"),
        dx=put(d), dz=ext.Array(N, "float64"), ix=put(i), iz=ext.Array(N, "int64"),
        row=put(f[:200]), bx=put(f[:10_000]), mat=ext.Array(200 * 200), bat=ext.Array(10_000),
        img=put(f[: 2 * 10 * 10 * 3]), wt=put(f[: 3 * 3 * 3 * 4]), conv=ext.Array(2 * 10 * 10 * 4),
        red=ext.Array(N // 200), idx=put(idx), rows=ext.Array(300 * 50), acc=ext.Array(N),
        logits=put(f[:40_000]), labels=put(labels), losses=ext.Array(1000), probs=ext.Array(N),
        ones=put(np.ones(1000, np.float32)), grad=ext.Array(N), mom=ext.Array(N),
        m1=ext.Array(N), m2=ext.Array(N), const=np.arange(N, dtype=np.float32),
    )  # fmt: skip
    for name in ("mom", "m1", "m2", "acc"):
        ext.fill(b[name], 0.0)
    calls = [("fill", (b["w"], 0.25)), ("from_numpy", (b["const"], b["z"]))]
    for op in ("add", "mul", "div", "maximum", "power"):
        calls += [
            (f"ewise_{op}", (b["x"], b["y"], b["w"])),
            (f"scalar_{op}", (b["w"], 1.5, b["z"])),
        ]
    for op in ("eq", "ne", "ge", "gt"):
        calls += [
            (f"ewise_{op}", (b["x"], b["z"], b["m"])),
            (f"scalar_{op}", (b["z"], 1.1, b["m"])),
        ]
    calls += [(f"scalar_{op}", (b["z"], 1.2, b["m"])) for op in ("le", "lt")]
    calls += [(f"ewise_{op}", (b["z"], b["w"])) for op in ("log", "exp", "tanh")]
    calls += [
        ("scalar_mul", (b["ix"], 3, b["iz"])),
        ("scalar_power", (b["iz"], 2, b["iz"])),
        ("scalar_add", (b["dx"], 0.1, b["dz"])),
        ("cast", (b["m"], b["z"])),
        ("cast", (b["dz"], b["y"])),
        ("compact", (b["x"], b["w"], (200, 200), (1, 200), 0)),
        ("ewise_setitem", (b["row"], b["w"], (200,), (200,), 5)),
        ("scalar_setitem", (100, -3.0, b["w"], (10, 10), (200, 1), 7)),
        ("scalar_setitem", (1, True, b["m"], (), (), 11)),
        ("matmul", (b["w"], b["y"], b["mat"], 200, 200, 200)),
        ("matmul_tiled", (b["w"], b["y"], b["mat"], 200, 200, 200)),
        ("bmm", (b["bx"], b["bx"], b["bat"], 4, 50, 50, 50)),
        ("conv2d", (b["img"], b["wt"], b["conv"], 2, 10, 10, 3, 4, 3, 1, 1)),
        ("reduce_sum", (b["w"], b["red"], 200)),
        ("reduce_max", (b["w"], b["red"], 200)),
        ("broadcast_rows", ("add", b["x"], b["row"], b["w"], 200)),
        ("softmax_cross_entropy", (b["logits"], b["labels"], b["losses"], b["probs"], 1000, 40)),
        ("softmax_cross_entropy_grad", (b["probs"], b["labels"], b["ones"], b["grad"], 1000, 40)),
        ("gather_rows", (b["w"], b["idx"], b["rows"], 300, 50)),
        ("scatter_add_rows", (b["rows"], b["idx"], b["acc"], 300, 50)),
        ("sgd_update", ((b["x"],), (b["grad"],), (b["mom"],), 0.9, 0.1, -0.01, 0.001)),
        ("adam_update", ((b["y"],), (b["grad"],), (b["m1"],), (b["m2"],), 0.9, 0.1, 0.999,
                         0.001, 0.0, -0.01, 1e-8)),
    ]  # fmt: skip
    return b, calls


def snapshot(b: dict) -> dict[str, bytes]:
    return {k: get(v).tobytes() for k, v in b.items() if isinstance(v, ext.Array)}


def test_the_cpu_backend_declares_run_program() -> None:
    assert ndl.device("cpu").has("run_program")


@pytest.mark.parametrize("threads", [1, 2])
def test_every_kernel_gives_the_bytes_of_calling_it(threads: int) -> None:
    before = ext.get_num_threads()
    ext.set_num_threads(threads)
    try:
        ref, calls = workload()
        for _ in range(2):
            for name, args in calls:
                getattr(ext, name)(*args)
        state, program = workload()
        for _ in range(2):  # compiled, then from the cache
            ext.run_program(program)
    finally:
        ext.set_num_threads(before)
    assert len({name for name, _ in program}) >= 40
    got, want = snapshot(state), snapshot(ref)
    for key in want:
        assert got[key] == want[key], key


def test_a_failing_kernel_raises_its_own_exception_after_the_calls_before_it() -> None:
    x, out = put(np.ones(N, np.float32)), ext.Array(N)
    short, ints, pair = ext.Array(5), put(np.arange(N, dtype=np.int64)), ext.Array(2 * N)
    idx = put(np.array([0, 7], np.int64))
    cases = [
        (("ewise_add", (x, short, out)), ValueError),  # sizes differ
        (("scalar_add", (ints, 0.5, ints)), TypeError),  # a float for int64
        (("scalar_add", (x, "a", out)), TypeError),
        (("ewise_log", (ints, ints)), ValueError),  # no log of integers
        (("gather_rows", (x, idx, pair, 2, N)), IndexError),  # index 7 of one row
        (("matmul", (x, x, out, 1.0, 2, 3)), TypeError),  # a float for a size
        (("compact", (x, out, (N + 1,), (1,), 0)), ValueError),  # outside the buffer
        (("ewise_add", (None, x, out)), TypeError),
    ]
    for item, error in cases:
        with pytest.raises(error) as direct:
            getattr(ext, item[0])(*item[1])
        ext.fill(out, 0.0)
        with pytest.raises(error) as native:
            ext.run_program([("fill", (out, 2.0)), item, ("fill", (out, 3.0))])
        assert str(native.value) == str(direct.value)
        assert (get(out) == 2.0).all(), item[0]  # the call before ran, the one after did not


def test_a_freed_buffer_is_a_value_error() -> None:
    x, out = put(np.ones(N, np.float32)), ext.Array(N)
    calls = [("ewise_add", (x, x, out))]
    ext.run_program(calls)
    x.free()
    with pytest.raises(ValueError, match="freed"):
        ext.run_program(calls)


def test_unknown_names_and_bad_items_raise_before_anything_runs() -> None:
    out = ext.Array(4)
    ext.fill(out, 1.0)
    for bad in ("no_such_kernel", "run_program", "Array", "_private", "__device_name__"):
        with pytest.raises(ValueError, match="not a kernel"):
            ext.run_program([("fill", (out, 2.0)), (bad, ())])
    for item in (("fill",), ["fill", (out, 2.0)], ("fill", [out, 2.0]), (3, ())):
        with pytest.raises(ValueError, match="pairs"):
            ext.run_program([("fill", (out, 2.0)), item])
    with pytest.raises(TypeError):
        ext.run_program(iter([("fill", (out, 2.0))]))
    assert (get(out) == 1.0).all()


def test_kernels_without_a_native_step_are_called_through_python() -> None:
    x, out = put(np.arange(4, dtype=np.float32)), ext.Array(4)
    before = ext.get_num_threads()
    calls = [
        ("set_num_threads", (1,)),
        ("to_numpy", (x, (4,), (1,), 0)),
        ("from_numpy", (np.arange(8, dtype=np.float32)[::2], out)),  # not contiguous
        ("scalar_add", (out, 1.0, out)),
        ("synchronize", ()),
    ]
    try:
        ext.run_program(calls)
        assert ext.get_num_threads() == 1
    finally:
        ext.set_num_threads(before)
    np.testing.assert_array_equal(get(out), [1, 3, 5, 7])


def test_replaced_items_are_compiled_again() -> None:
    x, out = put(np.ones(N, np.float32)), ext.Array(N)
    calls = [("scalar_mul", (x, 2.0, out)), ("scalar_add", (out, 1.0, out))]
    ext.run_program(calls)
    assert (get(out) == 3.0).all()
    calls[0] = ("scalar_mul", (x, 5.0, out))  # as the replay refills host scalars
    ext.run_program(calls)
    assert (get(out) == 6.0).all()
    calls.append(("scalar_mul", (out, 0.5, out)))
    ext.run_program(calls)
    assert (get(out) == 3.0).all()
    del calls[1:]
    ext.run_program(calls)
    assert (get(out) == 5.0).all()


def test_a_dropped_program_is_forgotten() -> None:
    ext.empty_cache()
    start = ext.memory_stats()["allocated_bytes"]
    big = ext.Array(1 << 22)
    calls = [("fill", (big, 1.0))]
    ext.run_program(calls)
    del big
    assert ext.memory_stats()["allocated_bytes"] >= start + (1 << 24)  # the program holds it
    del calls
    ext.empty_cache()
    assert ext.memory_stats()["allocated_bytes"] < start + (1 << 24)


def test_programs_run_beside_other_threads() -> None:
    # Each thread runs its own program (or plain kernels) on its own buffers, many times over;
    # every result is the one a single thread gets.
    def job(k: int, results: dict, errors: list) -> None:
        try:
            x = put(np.full(N, k + 1, np.float32))
            out, total = ext.Array(N), ext.Array(1)
            calls = [
                ("scalar_mul", (x, 2.0, out)),
                ("ewise_add", (out, x, out)),
                ("reduce_sum", (out, total, N)),
            ]
            for _ in range(50):
                if k % 2:
                    ext.run_program(calls)
                else:
                    for name, args in calls:
                        getattr(ext, name)(*args)
            results[k] = get(total)[0]
        except Exception as e:  # noqa: BLE001  (reported below)
            errors.append(e)

    results: dict = {}
    errors: list = []
    threads = [threading.Thread(target=job, args=(k, results, errors)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == {k: 3.0 * (k + 1) * N for k in range(6)}


def test_free_in_another_thread_waits_for_a_running_program() -> None:
    # free() (GIL held) waits until no kernel runs without the GIL: a program in flight
    # finishes its stretch on live memory; the next run finds the buffer freed (ValueError).
    x, out = put(np.ones(1 << 20, np.float32)), ext.Array(1 << 20)
    calls = [("ewise_add", (x, x, out))] * 50
    errors: list = []
    started = threading.Event()

    def run() -> None:
        try:
            for _ in range(100):
                ext.run_program(calls)
                started.set()
        except ValueError as e:
            errors.append(e)
        finally:
            started.set()

    worker = threading.Thread(target=run)
    worker.start()
    started.wait()
    x.free()
    worker.join()
    assert all("freed" in str(e) for e in errors)
    assert (get(out) == 2.0).all()
