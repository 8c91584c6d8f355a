"""tiny-backend: a worked third-party needle backend (device ``tiny``).

Two files make it: :mod:`tiny_backend.plugin`, named by the entry point, and
:mod:`tiny_backend.kernels`, which implements the backend contract.
"""
