"""The Penn Treebank language-modelling corpus (course hw4): Dictionary, Corpus, batchify."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ...autograd import Tensor
from ...devices import BackendDevice
from ..data_basic import DatasetFormatError

__all__ = ["Dictionary", "Corpus", "batchify", "get_batch"]


class Dictionary:
    """A two-way map between words and ids, ids given in order of first appearance.

    Attributes:
        word2idx: ``{word: id}``.
        idx2word: the words, indexed by id.
    """

    def __init__(self) -> None:
        self.word2idx: dict[str, int] = {}
        self.idx2word: list[str] = []

    def add_word(self, word: str) -> int:
        """The id of ``word``, adding it when new."""
        idx = self.word2idx.get(word)
        if idx is None:
            idx = self.word2idx[word] = len(self.idx2word)
            self.idx2word.append(word)
        return idx

    def __len__(self) -> int:
        return len(self.idx2word)


class Corpus:
    """Word ids of a training and a test text, sharing one :class:`Dictionary`.

    Each line is split on whitespace and ends with an ``<eos>`` token. The Penn Treebank
    ships ``train.txt``, ``valid.txt`` and ``test.txt``; where only the latter two exist
    (as in this project's shared test data), pass ``train_file="valid.txt"``.

    Args:
        base_dir: the folder holding the text files.
        max_lines: read at most this many lines of each file (all when None).
        train_file: the training text's file name.
        test_file: the test text's file name.

    Attributes:
        dictionary: the shared :class:`Dictionary`.
        train: the training text as a list of word ids.
        test: the test text as a list of word ids.
    """

    def __init__(
        self,
        base_dir: str | os.PathLike,
        max_lines: int | None = None,
        *,
        train_file: str = "train.txt",
        test_file: str = "test.txt",
    ) -> None:
        self.dictionary = Dictionary()
        self.train = self.tokenize(Path(base_dir) / train_file, max_lines)
        self.test = self.tokenize(Path(base_dir) / test_file, max_lines)

    def tokenize(self, path: str | os.PathLike, max_lines: int | None = None) -> list[int]:
        """The word ids of the text file ``path`` (at most ``max_lines`` lines), ``<eos>``
        after each line, adding new words to the dictionary.

        Raises:
            FileNotFoundError: the file is missing.
            DatasetFormatError: it is not UTF-8 text.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Penn Treebank text file not found: {path}")
        ids: list[int] = []
        add = self.dictionary.add_word
        try:
            with open(path, encoding="utf-8") as f:
                for i, line in enumerate(f):
                    if max_lines is not None and i >= max_lines:
                        break
                    ids.extend(add(word) for word in line.split())
                    ids.append(add("<eos>"))
        except UnicodeDecodeError as exc:
            raise DatasetFormatError(f"{path}: not UTF-8 text ({exc})") from None
        return ids


def batchify(
    data: Any, batch_size: int, device: BackendDevice | str | None = None, dtype: str = "float32"
) -> np.ndarray:
    """Arrange a sequence of ids into ``batch_size`` columns (course hw4).

    The sequence is cut to a multiple of ``batch_size`` and column ``j`` holds its ``j``-th
    contiguous chunk, so the result has shape ``(len(data) // batch_size, batch_size)``.
    ``device`` and ``dtype`` are kept for the course's signature: the result stays a numpy
    array and :func:`get_batch` makes Tensors from it.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    nbatch = len(data) // batch_size
    if nbatch == 0:
        raise ValueError(f"cannot batchify {len(data)} ids into columns of {batch_size}")
    return np.asarray(data[: nbatch * batch_size], dtype=np.float32).reshape(batch_size, nbatch).T


def get_batch(
    batches: np.ndarray,
    i: int,
    bptt: int,
    device: BackendDevice | str | None = None,
    dtype: str | None = None,
) -> tuple[Tensor, Tensor]:
    """The input rows ``i .. i+bptt-1`` of batchified ids and the ids that follow them.

    Returns:
        ``(data, target)``: ``data`` of shape ``(seq_len, batch_size)``, ``target`` the
        flattened next ids, of shape ``(seq_len * batch_size,)``, where
        ``seq_len = min(bptt, len(batches) - 1 - i)``.
    """
    seq_len = min(bptt, len(batches) - 1 - i)
    if seq_len < 1:
        raise IndexError(f"get_batch: row {i} leaves no targets in {len(batches)} rows")
    data = batches[i : i + seq_len]
    target = batches[i + 1 : i + 1 + seq_len].reshape(-1)
    return (
        Tensor(data, device=device, dtype=dtype, requires_grad=False),
        Tensor(target, device=device, dtype=dtype, requires_grad=False),
    )
