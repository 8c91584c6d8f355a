"""The entry point of needle-cpu: declares the ``cpu`` backend without importing it."""

from needle.plugins import BackendSpec, hookimpl


@hookimpl
def needle_backends() -> list[BackendSpec]:
    return [
        BackendSpec(
            name="cpu",
            module="needle_cpu._ext",
            contract_version=2,
            priority=100,
            distribution="needle-cpu",
        )
    ]
