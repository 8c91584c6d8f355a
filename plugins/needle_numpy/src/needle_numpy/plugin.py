"""The entry point of needle-numpy: declares the ``numpy`` backend without importing it."""

from needle.plugins import BackendSpec, hookimpl


@hookimpl
def needle_backends() -> list[BackendSpec]:
    return [
        BackendSpec(
            name="numpy",
            module="needle_numpy.backend",
            contract_version=2,
            priority=0,
            distribution="needle-numpy",
        )
    ]
