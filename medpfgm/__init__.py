"""medpfgm: Poisson Flow Generative Models for synthetic MedMNIST images.

Data flows one way: ``data`` -> ``physics`` + ``methods`` (+ ``nets``) -> ``train`` -> ``sample``
-> evaluation and reports, with ``cli`` on top.
"""

from medpfgm.errors import MedpfgmError

__version__ = "0.1.0"
__all__ = ["MedpfgmError", "__version__"]
