"""Datasets and the DataLoader that batches them into Tensors (the course's ``data_basic``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from ..autograd import Tensor
from ..devices import BackendDevice

__all__ = ["Dataset", "DataLoader", "NDArrayDataset", "DatasetFormatError"]


class DatasetFormatError(ValueError):
    """A dataset file exists but is not what it should be (bad magic, wrong size, ...).

    The message names the file and what was wrong with it.
    """


class Dataset:
    """An abstract dataset: ``__getitem__`` returns one sample, ``__len__`` counts them.

    Subclasses that take ``transforms`` call :meth:`apply_transforms` on each image.

    Args:
        transforms: callables applied in order to each sample's image, or None.
    """

    def __init__(self, transforms: Sequence[Any] | None = None) -> None:
        self.transforms = transforms

    def __getitem__(self, index: int) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not implement __getitem__")

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} does not implement __len__")

    def apply_transforms(self, x: np.ndarray) -> np.ndarray:
        """``x`` passed through every transform in order (unchanged when there are none)."""
        if self.transforms is not None:
            for transform in self.transforms:
                x = transform(x)
        return x


class NDArrayDataset(Dataset):
    """A dataset over arrays of equal length: sample ``i`` is ``(a[i] for a in arrays)``.

    Args:
        *arrays: numpy arrays (or anything ``np.asarray`` takes) sharing their first dimension.
    """

    def __init__(self, *arrays: Any) -> None:
        super().__init__()
        if not arrays:
            raise ValueError("NDArrayDataset needs at least one array")
        self.arrays = tuple(np.asarray(a) for a in arrays)
        lengths = {len(a) for a in self.arrays}
        if len(lengths) != 1:
            shapes = ", ".join(str(a.shape) for a in self.arrays)
            raise ValueError(f"NDArrayDataset arrays differ in length: {shapes}")

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, index: Any) -> tuple[np.ndarray, ...]:
        return tuple(a[index] for a in self.arrays)


class DataLoader:
    """Iterate over a dataset in minibatches of Tensors.

    Each batch is a tuple with one Tensor per field of the dataset's samples, stacked along
    a new first axis. Without shuffling the order is ``0..len-1``; with shuffling every
    epoch (every ``iter``) draws a fresh ``np.random.permutation``; with a ``sampler`` the
    order is the sampler's, read anew each epoch. The last batch is short when
    ``batch_size`` does not divide the number of samples.

    Args:
        dataset: the dataset to draw samples from.
        batch_size: samples per batch.
        shuffle: draw a new random order for each epoch.
        device: the device of the yielded Tensors (the default device when None).
        dtype: the dtype of floating-point fields (``"float32"``); integer and bool fields
            (labels, token ids, masks) keep theirs (``uint8`` labels arrive as ``int32``).
        sampler: an iterable of dataset indices with ``len()``, such as
            :class:`~needle.data.DistributedSampler`; excludes ``shuffle``.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int = 1,
        shuffle: bool = False,
        device: BackendDevice | str | None = None,
        dtype: str = "float32",
        sampler: Iterable[int] | None = None,
    ) -> None:
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: pass shuffle=False with a sampler (it sets the order)")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.device = device
        self.dtype = dtype
        self.sampler = sampler
        # No random draw here: numpy's global RNG is consumed only when an epoch starts.
        self.ordering = self._split(self._order(shuffle=False))

    def _order(self, shuffle: bool) -> np.ndarray:
        if self.sampler is not None:
            return np.fromiter(self.sampler, dtype=np.int64)
        if shuffle:
            return np.random.permutation(len(self.dataset))
        return np.arange(len(self.dataset))

    def _split(self, order: np.ndarray) -> list[np.ndarray]:
        return np.array_split(order, range(self.batch_size, len(order), self.batch_size))

    def __len__(self) -> int:
        """The number of batches per epoch."""
        count = len(self.dataset) if self.sampler is None else len(self.sampler)
        return -(-count // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        if self.sampler is not None or self.shuffle:
            self.ordering = self._split(self._order(self.shuffle))
        for indices in self.ordering:
            yield self._collate([self.dataset[int(i)] for i in indices])

    def _collate(self, samples: list[Any]) -> tuple[Tensor, ...]:
        if not isinstance(samples[0], tuple):
            samples = [(s,) for s in samples]
        fields = (np.stack([np.asarray(x) for x in f]) for f in zip(*samples, strict=True))
        return tuple(
            Tensor(
                batch,
                device=self.device,
                dtype=self.dtype if batch.dtype.kind == "f" else None,
                requires_grad=False,
            )
            for batch in fields
        )
