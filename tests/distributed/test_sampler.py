"""DistributedSampler and DataLoader(sampler=...)."""

from __future__ import annotations

import needle as ndl
import numpy as np
import pytest
from needle.data import DataLoader, DistributedSampler, NDArrayDataset


def _shares(n: int, replicas: int, **kwargs) -> list[np.ndarray]:
    data = range(n)
    return [DistributedSampler(data, replicas, r, **kwargs).indices() for r in range(replicas)]


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("n,replicas", [(12, 2), (12, 3), (11, 2), (10, 3), (13, 4), (2, 3)])
def test_split_is_complete_and_disjoint_but_for_the_padding(n, replicas, shuffle) -> None:
    shares = _shares(n, replicas, shuffle=shuffle, seed=5)
    sizes = {len(s) for s in shares}
    assert sizes == {-(-n // replicas)}, "every rank gets the same number"
    everything = np.concatenate(shares)
    assert set(everything.tolist()) == set(range(n)), "complete"
    counts = np.bincount(everything, minlength=n)
    pad = len(shares[0]) * replicas - n
    assert (counts - 1).sum() == pad, "only the padding repeats"
    assert counts.max() <= 1 + -(-pad // n), "the padding repeats each index at most once more"


@pytest.mark.parametrize("n,replicas", [(12, 2), (11, 2), (10, 3), (2, 3)])
def test_drop_last_split_is_disjoint(n, replicas) -> None:
    shares = _shares(n, replicas, drop_last=True)
    everything = np.concatenate(shares)
    assert len(everything) == (n // replicas) * replicas
    assert len(set(everything.tolist())) == len(everything), "disjoint"
    assert {len(s) for s in shares} == {n // replicas}


def test_epochs_shuffle_the_same_way_on_every_rank() -> None:
    a, b = (
        DistributedSampler(range(100), 2, 0, seed=7),
        DistributedSampler(range(100), 2, 0, seed=7),
    )
    first = a.indices()
    a.set_epoch(1)
    assert not np.array_equal(first, a.indices()), "a new order per epoch"
    b.set_epoch(1)
    np.testing.assert_array_equal(a.indices(), b.indices())
    unshuffled = DistributedSampler(range(10), 2, 1, shuffle=False)
    assert list(unshuffled) == [1, 3, 5, 7, 9] and len(unshuffled) == 5


def test_sampler_leaves_numpy_global_rng_alone() -> None:
    np.random.seed(3)
    expected = np.random.rand()
    np.random.seed(3)
    list(DistributedSampler(range(50), 2, 0))
    assert np.random.rand() == expected


def test_defaults_come_from_the_job() -> None:
    sampler = DistributedSampler(range(7))  # no job: a world of one
    assert (sampler.num_replicas, sampler.rank, len(sampler)) == (1, 0, 7)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_replicas": 0, "rank": 0}, "num_replicas must be a positive integer"),
        ({"num_replicas": 2, "rank": 2}, r"rank must be an integer in \[0, 2\)"),
        ({"num_replicas": 2, "rank": -1}, "rank must be"),
    ],
)
def test_bad_arguments(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        DistributedSampler(range(4), **kwargs)


def test_dataloader_follows_the_sampler(device) -> None:
    X = np.arange(20, dtype=np.float32).reshape(10, 2)
    y = np.arange(10, dtype=np.float32)
    sampler = DistributedSampler(range(10), 3, 2, seed=1)
    loader = DataLoader(NDArrayDataset(X, y), batch_size=3, sampler=sampler, device=device)
    assert len(loader) == 2
    for epoch in range(2):
        sampler.set_epoch(epoch)
        seen = np.concatenate([yb.numpy() for _, yb in loader])
        np.testing.assert_array_equal(seen, sampler.indices().astype(np.float32))


def test_dataloader_refuses_shuffle_with_a_sampler() -> None:
    with pytest.raises(ValueError, match="shuffle=False with a sampler"):
        DataLoader(NDArrayDataset(np.zeros(4)), 2, shuffle=True, sampler=range(4))


def test_dataloader_init_draws_no_random_numbers() -> None:
    np.random.seed(1)
    expected = np.random.rand()
    np.random.seed(1)
    DataLoader(NDArrayDataset(np.zeros(4)), 2, shuffle=True)
    assert np.random.rand() == expected
    assert ndl.data.DistributedSampler is DistributedSampler
