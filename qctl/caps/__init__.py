"""WHAT THIS QEMU CAN DO: probe a binary over QMP, flags as data tables, an on-disk cache.

``await CapsCache().get("qemu-system-x86_64")`` is the usual entry: cached caps while the
binary, qctl, the kernel and ``/dev/kvm`` stay the same, a fresh :func:`probe` otherwise.
"""

from qctl.caps.cache import CapsCache, Fingerprint, default_cache_dir, probe_many
from qctl.caps.flags import DETECTION, PROBED_DEVICES, Capability
from qctl.caps.hostfact import host_facts
from qctl.caps.install import QEMUInstall, locate_install
from qctl.caps.model import HostFacts, MachineType, QEMUCaps
from qctl.caps.probe import PROBE_TIMEOUT, probe, resolve_binary
from qctl.caps.schema import QAPISchema

__all__ = [
    "DETECTION",
    "PROBED_DEVICES",
    "PROBE_TIMEOUT",
    "Capability",
    "CapsCache",
    "Fingerprint",
    "HostFacts",
    "MachineType",
    "QAPISchema",
    "QEMUCaps",
    "QEMUInstall",
    "default_cache_dir",
    "host_facts",
    "locate_install",
    "probe",
    "probe_many",
    "resolve_binary",
]
