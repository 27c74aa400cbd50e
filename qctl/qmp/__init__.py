"""WIRE: the only code that touches qemu.qmp — connect, execute, events, fd passing, recording.

The layer is generic: it knows the QMP protocol, not what the commands mean (the driver's
monitor module spells those). See :mod:`qctl.qmp.client` for how qemu.qmp's errors map onto
qctl's.
"""

from qctl.qmp.client import CONNECT_TIMEOUT, DEFAULT_TIMEOUT, AddedFd, QMPClient, connect_qmp
from qctl.qmp.event import DEFAULT_EVENT_QUEUE, EventSubscription, QMPEvent
from qctl.qmp.first import connect_first
from qctl.qmp.record import JSONLinesRecorder, Recorder

__all__ = [
    "CONNECT_TIMEOUT",
    "DEFAULT_EVENT_QUEUE",
    "DEFAULT_TIMEOUT",
    "AddedFd",
    "EventSubscription",
    "JSONLinesRecorder",
    "QMPClient",
    "QMPEvent",
    "Recorder",
    "connect_first",
    "connect_qmp",
]
