"""needle-numpy: the reference backend (device ``numpy``); kernels in :mod:`.backend`."""

__version__ = "0.1.0"
