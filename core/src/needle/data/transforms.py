"""Image transforms on ``H x W x C`` numpy arrays, drawing from numpy's global RNG."""

from __future__ import annotations

import numpy as np

__all__ = ["Transform", "RandomFlipHorizontal", "RandomCrop"]


class Transform:
    """A callable that maps one image (``H x W x C`` numpy array) to another."""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not implement __call__")


def _check_image(transform: Transform, img: np.ndarray) -> None:
    if np.ndim(img) != 3:
        raise ValueError(
            f"{type(transform).__name__} takes an H x W x C image, got shape {np.shape(img)}"
        )


class RandomFlipHorizontal(Transform):
    """Flip the image left-right with probability ``p`` (one ``np.random.rand()`` per call).

    Args:
        p: the probability of flipping.
    """

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, img: np.ndarray) -> np.ndarray:
        _check_image(self, img)
        flip = np.random.rand() < self.p
        return img[:, ::-1, :] if flip else img

    def __repr__(self) -> str:
        return f"RandomFlipHorizontal(p={self.p})"


class RandomCrop(Transform):
    """Zero-pad by ``padding`` on each side, then crop back to the original size at a random shift.

    The shifts are drawn as ``np.random.randint(-padding, padding + 1, size=2)``: the first
    moves the window along H, the second along W (course semantics).

    Args:
        padding: the largest shift in pixels.
    """

    def __init__(self, padding: int = 3) -> None:
        if padding < 0:
            raise ValueError(f"RandomCrop padding must be >= 0, got {padding}")
        self.padding = padding

    def __call__(self, img: np.ndarray) -> np.ndarray:
        _check_image(self, img)
        p = self.padding
        shift_x, shift_y = np.random.randint(low=-p, high=p + 1, size=2)
        h, w, _ = img.shape
        padded = np.pad(img, ((p, p), (p, p), (0, 0)))
        return padded[p + shift_x : p + shift_x + h, p + shift_y : p + shift_y + w, :]

    def __repr__(self) -> str:
        return f"RandomCrop(padding={self.padding})"
