"""The network-namespace lab (DESIGN §5): topology, units, real servers, faults."""

from .core import Lab
from .ns import LabError, LabTimeout, machine_lock

__all__ = ["Lab", "LabError", "LabTimeout", "machine_lock"]
