"""medpfgm: Poisson Flow Generative Models for synthetic MedMNIST images.

Data flows one way: ``data`` -> ``physics`` + ``methods`` (+ ``nets``) -> ``train`` -> ``sample``
-> evaluation and reports, with ``cli`` and the Python API (``medpfgm.api``) on top. The API names
below load torch on first use, so that ``import medpfgm`` (and the CLI's argument checks) stay fast.
"""

from medpfgm.errors import MedpfgmError

__version__ = "0.1.0"
_API = ("ImageDataset", "load_run", "read_image_file", "synthesize")
__all__ = ["MedpfgmError", "__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from medpfgm import api

        return getattr(api, name)
    raise AttributeError(f"module 'medpfgm' has no attribute '{name}'")
