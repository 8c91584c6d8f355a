"""needle-cpu: needle's C++ backend (device ``"cpu"``).

The kernels live in the compiled module :mod:`needle_cpu._ext`, imported by needle when
the ``cpu`` device is first used; importing this package or :mod:`needle_cpu.plugin` loads
no native code.
"""

__all__: list[str] = []
