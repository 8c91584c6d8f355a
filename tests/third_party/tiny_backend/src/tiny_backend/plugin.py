"""The entry point: declares the ``tiny`` backend without importing its kernels."""

from needle.plugins import BackendSpec, hookimpl


@hookimpl
def needle_backends():
    # Core imports the kernel module only when the device is first used.
    return [BackendSpec(name="tiny", module="tiny_backend.kernels", contract_version=1)]
