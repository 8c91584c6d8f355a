"""The entry point of needle-mpi: declares the ``mpi`` communicator without importing MPI."""

from needle.plugins import CommunicatorSpec, hookimpl


@hookimpl
def needle_communicators() -> list[CommunicatorSpec]:
    return [
        CommunicatorSpec(
            name="mpi",
            module="needle_mpi.communicator",
            priority=100,
            distribution="needle-mpi",
            launcher="mpiexec -n N",
        )
    ]
