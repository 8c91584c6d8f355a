"""needle-numpy: the reference backend (device ``numpy``), kernels in :mod:`needle_numpy.backend`."""

__version__ = "0.1.0"
