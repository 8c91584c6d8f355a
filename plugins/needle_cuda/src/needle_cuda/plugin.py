"""The entry point of needle-cuda: declares the ``cuda`` backend without importing its kernels."""

from needle.plugins import BackendSpec, hookimpl

__all__ = ["needle_backends"]


@hookimpl
def needle_backends() -> list[BackendSpec]:
    return [
        BackendSpec(
            name="cuda",
            module="needle_cuda._ext",
            contract_version=2,
            accelerator=True,
            distribution="needle-cuda",
        )
    ]
