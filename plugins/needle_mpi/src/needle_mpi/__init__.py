"""needle-mpi: the ``mpi`` communicator of :mod:`needle.distributed`, over mpi4py.

Install it beside needle-core and a backend, then start jobs with ``mpiexec``::

    pip install ./core ./plugins/needle_cpu ./plugins/needle_mpi
    mpiexec -n 2 python train.py        # train.py calls needle.distributed.init()

Importing this package imports no MPI; :mod:`needle_mpi.communicator` does, when
``needle.distributed.init()`` creates the communicator.
"""

__all__: list[str] = []
