"""needle-cuda: the CUDA backend (device ``cuda``), kernels in the compiled :mod:`needle_cuda._ext`.

Importing this package does not load the extension; core imports ``needle_cuda._ext``
when the ``cuda`` device is first used and asks its ``unavailable_reason()``.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
