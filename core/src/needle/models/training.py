"""Training and evaluation loops for classification and language modelling (course hw2/hw4).

Each loop shows a tqdm progress bar when stderr is a terminal and tqdm is installed, and
stays quiet otherwise; ``progress=True/False`` overrides the choice. In a job of
:mod:`needle.distributed` the accuracy and loss they return are over every rank's samples
(the same numbers on every rank), and only rank 0 shows a progress bar.

The loops run each batch's step through :func:`needle.jit` (``jit=True``, the default): the
first batch of each shape is recorded, later ones replay it, with the values eager gives. A
model or loss the recorder cannot replay (a host read inside it, as a distributed gradient
all-reduce does) runs eagerly, and so do steps with gradient clipping (the global norm is read
on the host) and language-model steps on a backend without the ``gather_rows`` capability
(a replay would look words up by one-hot products); ``jit=False`` turns recording off.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from .. import nn, optim
from ..autograd import Tensor, TensorTuple, no_grad
from ..data import get_batch
from ..replay import JitFunction

__all__ = [
    "epoch",
    "train",
    "evaluate",
    "epoch_general_ptb",
    "train_ptb",
    "evaluate_ptb",
    "progress_bar",
    "epoch_general_cifar10",
    "train_cifar10",
    "evaluate_cifar10",
]


def progress_bar(
    iterable: Iterable[Any], total: int | None = None, desc: str = "", enabled: bool | None = None
) -> Iterator[Any]:
    """``iterable`` wrapped in a tqdm bar on a terminal (``enabled=None``), else unchanged."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if enabled:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            enabled = False
    if not enabled:
        yield from iterable
        return
    with tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True) as bar:
        yield from bar


def _loss_module(loss_fn: Any) -> Any:
    if loss_fn is None:
        return nn.SoftmaxLoss()
    return loss_fn() if isinstance(loss_fn, type) else loss_fn


def _check_opt(loss_fn: Any, opt: Any) -> None:
    if isinstance(loss_fn, optim.Optimizer):
        raise TypeError(
            "the third argument is the loss function; pass the optimizer as opt=... "
            "(course hw2 wrote epoch(dataloader, model, opt))"
        )
    if opt is not None and not isinstance(opt, optim.Optimizer):
        raise TypeError(f"opt must be a needle.optim.Optimizer, got {type(opt).__name__}")


def _over_ranks(correct: float, loss_sum: float, count: float) -> tuple[float, float, float]:
    """Per-rank totals summed over the ranks of a needle.distributed job (unchanged outside)."""
    from .. import distributed

    correct, loss_sum, count = distributed.all_reduce_scalars([correct, loss_sum, count])
    return correct, loss_sum, count


def _show_progress(progress: bool | None) -> bool | None:
    from .. import distributed

    return False if distributed.rank() != 0 else progress


def _step(opt: Any, loss: Tensor, clip: float | None = None) -> None:
    opt.reset_grad()
    loss.backward(create_graph=False)  # the lean backward: no graph for the gradients
    if clip is not None:
        opt.clip_grad_norm(clip)
    opt.step()


def _flatten_state(h: Any) -> tuple[tuple[Tensor, ...], Any]:
    """A recurrent state as ``(tensors, structure)``: jit takes tensors and constants."""
    if h is None:
        return (), None
    if isinstance(h, Tensor):
        return (h,), "tensor"
    parts = [_flatten_state(x) for x in h]
    return tuple(t for ts, _ in parts for t in ts), tuple(s for _, s in parts)


def _unflatten_state(tensors: Sequence[Tensor], structure: Any) -> Any:
    if structure is None:
        return None
    if structure == "tensor":
        return tensors[0]
    out, i = [], 0
    for s in structure:
        count = _count(s)
        out.append(_unflatten_state(tensors[i : i + count], s))
        i += count
    return tuple(out)


def _count(structure: Any) -> int:
    if structure is None:
        return 0
    if structure == "tensor":
        return 1
    return sum(_count(s) for s in structure)


def _batch_step(model: nn.Module, loss_fn: Any, opt: Any, clip: float | None, use_jit: bool) -> Any:
    """``step(X, y, structure, *state) -> (loss, logits, new state)``: one training step
    (``opt`` given) or evaluation, replayed by :func:`needle.jit` when ``use_jit``. A
    recurrent state comes in flattened (its tensors, and its structure as a constant)."""

    def step(X: Tensor, y: Tensor, structure: Any = None, *state: Tensor) -> tuple:
        with contextlib.nullcontext() if opt is not None else no_grad():
            if structure is None:
                out = model(X)
            else:
                out = model(X, _unflatten_state(state, structure))
            logits, h = out if isinstance(out, tuple) else (out, None)
            loss = loss_fn(logits, y)
            if opt is not None:
                _step(opt, loss, clip)
        return loss.detach(), logits.detach(), _detach(h)

    return JitFunction(step, strict=False, enabled=use_jit and clip is None)


def epoch(
    dataloader: Iterable[tuple[Tensor, Tensor]],
    model: nn.Module,
    loss_fn: Any = None,
    opt: optim.Optimizer | None = None,
    *,
    progress: bool | None = None,
    desc: str = "",
    jit: bool = True,
) -> tuple[float, float]:
    """One pass over ``dataloader``: trains when ``opt`` is given, else evaluates.

    Args:
        dataloader: yields ``(X, y)`` batches, ``y`` integer class labels.
        model: maps ``X`` to logits ``(batch, classes)``; put in train or eval mode here.
        loss_fn: a loss Module (or its class); ``nn.SoftmaxLoss`` when None.
        opt: the optimizer; None evaluates without building a graph.
        progress: show a progress bar (None: only on a terminal).
        desc: the bar's label.
        jit: replay each step through :func:`needle.jit` (False: eager).

    Returns:
        ``(accuracy, mean loss)`` over all samples (of every rank, in a distributed job).
    """
    _check_opt(loss_fn, opt)
    loss_fn = _loss_module(loss_fn)
    training = opt is not None
    model.train() if training else model.eval()
    step = _batch_step(model, loss_fn, opt, None, jit)
    correct, total_loss, count = 0, 0.0, 0
    total = len(dataloader) if hasattr(dataloader, "__len__") else None
    for X, y in progress_bar(dataloader, total, desc, _show_progress(progress)):
        loss, logits, _ = step(X, y)
        n = y.shape[0]
        correct += int((logits.numpy().argmax(axis=1) == y.numpy()).sum())
        total_loss += float(loss.numpy()) * n
        count += n
    correct, total_loss, count = _over_ranks(correct, total_loss, count)
    if count == 0:
        raise ValueError("epoch: the dataloader yielded no batches")
    return correct / count, total_loss / count


def train(
    model: nn.Module,
    dataloader: Iterable[tuple[Tensor, Tensor]],
    n_epochs: int = 1,
    optimizer: type = optim.Adam,
    lr: float = 0.001,
    weight_decay: float = 0.001,
    loss_fn: Any = nn.SoftmaxLoss,
    *,
    progress: bool | None = None,
    jit: bool = True,
) -> tuple[float, float]:
    """Train a classifier for ``n_epochs`` (course ``train_cifar10``).

    Returns:
        ``(accuracy, mean loss)`` of the last training epoch.
    """
    opt = optimizer(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = _loss_module(loss_fn)
    result = (0.0, 0.0)
    for i in range(n_epochs):
        result = epoch(
            dataloader, model, loss_fn, opt, progress=progress, desc=f"epoch {i + 1}", jit=jit
        )
    return result


def evaluate(
    model: nn.Module,
    dataloader: Iterable[tuple[Tensor, Tensor]],
    loss_fn: Any = nn.SoftmaxLoss,
    *,
    progress: bool | None = None,
    jit: bool = True,
) -> tuple[float, float]:
    """``(accuracy, mean loss)`` of a classifier on ``dataloader`` (course ``evaluate_cifar10``)."""
    return epoch(dataloader, model, loss_fn, None, progress=progress, desc="eval", jit=jit)


def _detach(h: Any) -> Any:
    if h is None:
        return None
    if isinstance(h, (Tensor, TensorTuple)):
        return h.detach()
    return type(h)(_detach(x) for x in h)


def epoch_general_ptb(
    data: np.ndarray,
    model: nn.Module,
    seq_len: int = 40,
    loss_fn: Any = None,
    opt: optim.Optimizer | None = None,
    clip: float | None = None,
    device: Any = None,
    dtype: str = "float32",
    *,
    progress: bool | None = None,
    desc: str = "",
    jit: bool = True,
) -> tuple[float, float]:
    """One pass of truncated back-propagation through time over batchified word ids.

    The hidden state is carried from one window of ``seq_len`` rows to the next and
    detached between them.

    Args:
        data: ids from :func:`needle.data.batchify`, shape ``(nbatch, batch_size)``.
        model: a :class:`~needle.models.LanguageModel` (``model(x, h) -> (logits, h)``).
        seq_len: the window length (bptt).
        loss_fn: a loss Module (or its class); ``nn.SoftmaxLoss`` when None.
        opt: the optimizer; None evaluates.
        clip: clip the global gradient norm to this value before each step.
        device: where batches go.
        dtype: their dtype.
        progress: show a progress bar (None: only on a terminal).
        desc: the bar's label.
        jit: replay each step through :func:`needle.jit` (False: eager; with ``clip`` the
            steps run eagerly anyway).

    Returns:
        ``(accuracy, mean loss)`` per predicted word (of every rank, in a distributed job).
    """
    _check_opt(loss_fn, opt)
    loss_fn = _loss_module(loss_fn)
    training = opt is not None
    model.train() if training else model.eval()
    nbatch = data.shape[0]
    starts = range(0, nbatch - 1, seq_len)
    # Without an on-device gather a replay would look words up by one-hot products over the
    # vocabulary, slower than eager's host-indexed rows: such a device runs eagerly.
    params = model.parameters()
    gathers = not params or params[0].device.has("gather_rows")
    step = _batch_step(model, loss_fn, opt, clip, jit and gathers)
    correct, total_loss, count, h = 0, 0.0, 0, None
    for i in progress_bar(starts, len(starts), desc, _show_progress(progress)):
        X, y = get_batch(data, i, seq_len, device=device, dtype=dtype)
        tensors, structure = _flatten_state(h)
        loss, logits, h = step(X, y, structure, *tensors)
        n = y.shape[0]
        correct += int((logits.numpy().argmax(axis=1) == y.numpy()).sum())
        total_loss += float(loss.numpy()) * n
        count += n
    correct, total_loss, count = _over_ranks(correct, total_loss, count)
    if count == 0:
        raise ValueError(f"epoch_general_ptb: {nbatch} rows leave no (input, target) window")
    return correct / count, total_loss / count


def train_ptb(
    model: nn.Module,
    data: np.ndarray,
    seq_len: int = 40,
    n_epochs: int = 1,
    optimizer: type = optim.SGD,
    lr: float = 4.0,
    weight_decay: float = 0.0,
    loss_fn: Any = nn.SoftmaxLoss,
    clip: float | None = None,
    device: Any = None,
    dtype: str = "float32",
    *,
    progress: bool | None = None,
    jit: bool = True,
) -> tuple[float, float]:
    """Train a language model for ``n_epochs``; ``(accuracy, mean loss)`` of the last epoch."""
    opt = optimizer(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = _loss_module(loss_fn)
    result = (0.0, 0.0)
    for i in range(n_epochs):
        result = epoch_general_ptb(
            data, model, seq_len, loss_fn, opt, clip, device, dtype,
            progress=progress, desc=f"epoch {i + 1}", jit=jit,
        )  # fmt: skip
    return result


def evaluate_ptb(
    model: nn.Module,
    data: np.ndarray,
    seq_len: int = 40,
    loss_fn: Any = nn.SoftmaxLoss,
    device: Any = None,
    dtype: str = "float32",
    *,
    progress: bool | None = None,
    jit: bool = True,
) -> tuple[float, float]:
    """``(accuracy, mean loss)`` of a language model on batchified ids."""
    return epoch_general_ptb(
        data, model, seq_len, loss_fn, None, None, device, dtype,
        progress=progress, desc="eval", jit=jit,
    )  # fmt: skip


# The course's hw4 names for the classification loops.
epoch_general_cifar10 = epoch
train_cifar10 = train
evaluate_cifar10 = evaluate
