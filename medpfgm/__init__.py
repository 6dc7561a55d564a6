"""medpfgm: Poisson Flow Generative Models for synthetic MedMNIST images.

Data flows one way: ``data`` -> ``physics`` + ``methods`` (+ ``nets``) -> ``train`` -> ``sample``
-> evaluation and reports, with ``cli`` and the Python API (``medpfgm.api``) on top. The API names
below load torch on first use, so that ``import medpfgm`` (and the CLI's argument checks) stay fast.
"""

import os

# OpenMP threads that spin while they wait steal the cores from the threads doing the work when
# anything else runs on the machine: measured on 2 cores (benchmarks/threads.py, README), PASSIVE is
# at most 17 % slower on a quiet machine and 35 % faster beside one other job. It must be set before
# torch loads, hence here; a user's own OMP_WAIT_POLICY wins, and MEDPFGM_OMP_DEFAULTS=0 leaves it unset.
if os.environ.get("MEDPFGM_OMP_DEFAULTS", "1") != "0":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from medpfgm.errors import MedpfgmError  # noqa: E402

__version__ = "0.1.0"
_API = ("ImageDataset", "load_run", "read_image_file", "synthesize")
__all__ = ["MedpfgmError", "__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from medpfgm import api

        return getattr(api, name)
    raise AttributeError(f"module 'medpfgm' has no attribute '{name}'")
