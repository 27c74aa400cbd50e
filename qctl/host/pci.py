"""Host PCI devices for VFIO assignment: checks, and binding to ``vfio-pci`` and back.

:class:`PCIDevice` is a live view of ``/sys/bus/pci/devices/DDDD:BB:SS.F``: every method
reads sysfs when called (nothing is cached, the kernel may change things under us). The
sysfs tree and its writer come from an injectable :class:`~qctl.host.sysfs.Sysfs`, so all of
this runs against a fake tree in tests.

Before a device is given to a guest (:func:`check_assignable`), in the order libvirt checks:

1. it exists;
2. it is a PCI *endpoint*. The header type (byte ``0x0e`` of ``config``, low 7 bits) decides:
   0 is an endpoint, 1 a PCI bridge, 2 a CardBus bridge, as the kernel's VFIO code sees it.
   When ``config`` cannot be read, a ``secondary_bus_number`` attribute or a ``pci_bus/``
   folder (both only exist on bridges) or a bridge class code (``0x0604``, ``0x0607``,
   ``0x0609``) mark a non-endpoint;
3. it has an IOMMU group (no ``iommu_group`` link means the IOMMU is off);
4. the group is *viable*, by the rule VFIO applies when the group is opened: every other
   member is bound to ``vfio-pci`` (or another VFIO driver), to ``pci-stub``, to no driver at
   all, or is itself not an endpoint (bridges and their ``pcieport`` driver are harmless);
5. neither it nor another member of its group is held by another user. Only qctl's ledger
   knows that, so the caller passes the devices in use (``in_use``: address → who holds it);
6. with ``managed='no'`` it is already bound to ``vfio-pci`` (binding is then the admin's job).

:func:`bind_vfio` (``managed='yes'``) makes ``vfio-pci`` the device's driver the way
``driverctl`` and libvirt do, with the ``driver_override`` attribute, which beats every ID
table so no other driver can grab the device in between::

    echo vfio-pci > DEV/driver_override
    echo DDDD:BB:SS.F > /sys/bus/pci/drivers/ORIGINAL/unbind
    echo DDDD:BB:SS.F > /sys/bus/pci/drivers_probe

then checks the ``driver`` link, and returns the original driver for :func:`rebind`, which
clears the override, unbinds ``vfio-pci`` and probes again (binding explicitly with
``drivers/ORIGINAL/bind`` when the probe leaves the device without a driver). A failure
half-way through :func:`bind_vfio` puts the device back as it was before raising.

Both run their sysfs writes in a worker thread: unbinding a NIC driver can take seconds, and
the event loop must not stop meanwhile. They are not abandoned when cancelled: the writes run
to the end, :func:`bind_vfio` then undoes what it did, and the cancellation is re-raised.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Generic, TypeVar

from qctl.record import record

from ..errors import HostError, ResourceBusyError, SysfsError, UnsupportedError, add_rollback_note
from ..types import PCIAddress
from .sysfs import Sysfs

__all__ = [
    "PCI_STUB",
    "VFIO_PCI",
    "PCIDevice",
    "bind_vfio",
    "check_assignable",
    "check_endpoint",
    "check_iommu_group",
    "check_not_in_use",
    "rebind",
]

log = logging.getLogger(__name__)

VFIO_PCI = "vfio-pci"
"""The driver that hands a PCI device to user space (QEMU) through VFIO."""

PCI_STUB = "pci-stub"
"""The placeholder driver that only keeps host drivers off a device."""

# Header types (config byte 0x0e, bit 7 is "multi-function").
_HEADER_NORMAL = 0
_HEADER_NAMES = {0: "endpoint", 1: "PCI bridge", 2: "CardBus bridge"}
# Class codes (base class << 8 | subclass) of bridges that forward to another bus.
_BRIDGE_CLASSES = {0x0604: "PCI bridge", 0x0607: "CardBus bridge", 0x0609: "PCI bridge"}

_T = TypeVar("_T")


class PCIDevice:
    """The host PCI device at ``address``, as sysfs shows it now.

    Reads raise :class:`~qctl.errors.SysfsError` (with the path) when an attribute that every
    PCI device has cannot be read, and return ``None`` for attributes whose absence means
    something (no driver, no IOMMU group, not a VF).
    """

    def __init__(self, address: PCIAddress, *, sysfs: Sysfs | None = None) -> None:
        self.address = address
        self.sysfs = sysfs or Sysfs()

    def __repr__(self) -> str:
        return f"PCIDevice({str(self.address)!r}, root={str(self.sysfs.root)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PCIDevice):
            return NotImplemented
        return (self.address, self.sysfs.root) == (other.address, other.sysfs.root)

    def __hash__(self) -> int:
        return hash((self.address, self.sysfs.root))

    @property
    def path(self) -> Path:
        """``/sys/bus/pci/devices/DDDD:BB:SS.F``."""
        return self.sysfs.path("bus", "pci", "devices", str(self.address))

    def _device_at(self, address: PCIAddress) -> PCIDevice:
        return PCIDevice(address, sysfs=self.sysfs)

    # -- identity --------------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether the host has this device."""
        return self.path.is_dir()

    def require(self) -> None:
        """Raise :class:`SysfsError` unless the device exists."""
        if not self.exists():
            raise SysfsError(f"no PCI device {self.address} on this host", path=str(self.path))

    def _hex(self, name: str) -> int:
        path = self.path / name
        text = self.sysfs.read(path)
        try:
            return int(text, 16)
        except ValueError:
            raise SysfsError(f"unexpected content {text!r} in {path}", path=str(path)) from None

    def vendor_id(self) -> int:
        """The PCI vendor ID (``0x8086``)."""
        return self._hex("vendor")

    def device_id(self) -> int:
        """The PCI device ID (``0x10ed``)."""
        return self._hex("device")

    def class_code(self) -> int:
        """The 24-bit class code: base class, subclass, programming interface (``0x020000``)."""
        return self._hex("class")

    def header_type(self) -> int | None:
        """The configuration header type (0 endpoint, 1 PCI bridge, 2 CardBus), if readable."""
        config = self.sysfs.read_bytes(self.path / "config", 0x10)
        if config is None or len(config) <= 0x0E:
            return None
        return config[0x0E] & 0x7F

    def kind(self) -> str:
        """``endpoint``, ``PCI bridge`` or ``CardBus bridge`` (see the module docstring)."""
        header = self.header_type()
        if header is not None:
            return _HEADER_NAMES.get(header, f"header type {header}")
        if (self.path / "secondary_bus_number").exists() or (self.path / "pci_bus").is_dir():
            return "PCI bridge"
        return _BRIDGE_CLASSES.get(self.class_code() >> 8, "endpoint")

    def is_endpoint(self) -> bool:
        """Whether this is a PCI endpoint, the only kind of device VFIO can assign."""
        return self.kind() == "endpoint"

    # -- drivers ---------------------------------------------------------------------------

    def driver(self) -> str | None:
        """The bound driver's name (the ``driver`` link), or ``None`` when unbound."""
        return self.sysfs.link_name(self.path / "driver")

    def driver_override(self) -> str | None:
        """The ``driver_override`` attribute, ``None`` when unset (the kernel shows ``(null)``)."""
        text = self.sysfs.read_optional(self.path / "driver_override")
        if text is None or text.strip() in {"", "(null)"}:
            return None
        return text.strip()

    def net_names(self) -> list[str]:
        """Network interfaces of this device (``net/*``): none unless a NIC driver is bound."""
        return self.sysfs.list_dir(self.path / "net")

    # -- IOMMU -----------------------------------------------------------------------------

    def iommu_group(self) -> int | None:
        """The IOMMU group number, or ``None`` when the device has none (IOMMU off)."""
        name = self.sysfs.link_name(self.path / "iommu_group")
        if name is None:
            return None
        try:
            return int(name)
        except ValueError:
            raise SysfsError(
                f"unexpected IOMMU group {name!r} of {self.address}",
                path=str(self.path / "iommu_group"),
            ) from None

    def iommu_group_members(self) -> list[str]:
        """The names of every device in this one's IOMMU group, itself included.

        PCI devices are named by address; other buses (rare in a group) by their own names.
        Empty when the device has no IOMMU group.
        """
        return self.sysfs.list_dir(self.path / "iommu_group" / "devices")

    # -- SR-IOV ----------------------------------------------------------------------------

    def physfn(self) -> PCIAddress | None:
        """The address of this VF's physical function, ``None`` when it is not a VF."""
        name = self.sysfs.link_name(self.path / "physfn")
        return None if name is None else _parse_address(name, self.path / "physfn")

    def is_vf(self) -> bool:
        """Whether this device is an SR-IOV virtual function (it has a ``physfn`` link)."""
        return self.physfn() is not None

    def virtfns(self) -> list[tuple[int, PCIAddress]]:
        """For a PF: ``(VF index, VF address)`` from its ``virtfnN`` links, by index."""
        found = []
        for entry in self.sysfs.list_dir(self.path):
            suffix = entry.removeprefix("virtfn")
            if suffix == entry or not suffix.isdigit():
                continue
            target = self.sysfs.link_name(self.path / entry)
            if target is not None:
                found.append((int(suffix), _parse_address(target, self.path / entry)))
        return sorted(found)

    def vf_index(self) -> int | None:
        """This VF's index on its PF (the ``N`` of the PF's ``virtfnN``), ``None`` if not a VF.

        Raises :class:`SysfsError` when the PF does not list this VF (a tree being changed by
        ``sriov_numvfs`` under us).
        """
        pf = self.physfn()
        if pf is None:
            return None
        for index, address in self._device_at(pf).virtfns():
            if address == self.address:
                return index
        raise SysfsError(
            f"PF {pf} does not list VF {self.address} among its virtfn links",
            path=str(self._device_at(pf).path),
        )


def _parse_address(text: str, where: Path) -> PCIAddress:
    try:
        return PCIAddress.parse(text)
    except ValueError:
        raise SysfsError(f"{where} names {text!r}, not a PCI address", path=str(where)) from None


def _is_vfio_driver(name: str) -> bool:
    """``vfio-pci`` and its vendor variants (``mlx5_vfio_pci``, ``hisi_acc_vfio_pci``, …)."""
    return name == VFIO_PCI or "vfio" in name


# -- checks ----------------------------------------------------------------------------------


def check_endpoint(device: PCIDevice) -> None:
    """Refuse a device that is not a PCI endpoint (a bridge cannot be assigned)."""
    kind = device.kind()
    if kind != "endpoint":
        raise HostError(
            f"cannot assign {device.address} to a guest: it is a {kind} "
            f"(class {device.class_code():#08x}), not an endpoint device"
        )


def check_iommu_group(device: PCIDevice) -> int:
    """The device's IOMMU group number, after checking the group is viable for VFIO.

    Raises :class:`UnsupportedError` when there is no IOMMU group, and
    :class:`ResourceBusyError` naming each member of the group held by a host driver.
    """
    group = device.iommu_group()
    if group is None:
        raise UnsupportedError(
            f"cannot assign {device.address}: no IOMMU group: is the IOMMU enabled "
            "(intel_iommu=on / amd_iommu=on on the kernel command line)?",
            capability="iommu",
        )
    group_dir = device.sysfs.path("kernel", "iommu_groups", str(group), "devices")
    offenders = []
    for name in device.iommu_group_members():
        if name == str(device.address):
            continue
        driver = device.sysfs.link_name(group_dir / name / "driver")
        if driver is None or driver == PCI_STUB or _is_vfio_driver(driver):
            continue
        try:
            member = device._device_at(PCIAddress.parse(name))
        except ValueError:
            member = None
        if member is not None and not member.is_endpoint():
            continue  # bridges (pcieport) do not make a group unusable
        offenders.append(f"{name} (bound to {driver})")
    if offenders:
        raise ResourceBusyError(
            f"cannot assign {device.address}: IOMMU group {group} is not viable, other "
            f"devices of the group are used by host drivers: {', '.join(offenders)}; bind "
            f"them to {VFIO_PCI} or unbind them first"
        )
    return group


def check_not_in_use(device: PCIDevice, in_use: Mapping[PCIAddress, str]) -> None:
    """Refuse a device that, or whose IOMMU group mate, is held by someone else.

    ``in_use`` maps each PCI device held by another user (another domain) to a description
    of that user (``domain web1``). Devices of the *same* domain must not be in it: two
    functions of one group may well go to one guest.
    """
    held_by = in_use.get(device.address)
    if held_by is not None:
        raise ResourceBusyError(f"PCI device {device.address} is in use by {held_by}")
    for name in device.iommu_group_members():
        try:
            mate = PCIAddress.parse(name)
        except ValueError:
            continue
        if mate != device.address and mate in in_use:
            raise ResourceBusyError(
                f"PCI device {device.address} shares IOMMU group {device.iommu_group()} with "
                f"{mate}, which is in use by {in_use[mate]}"
            )


def check_assignable(
    device: PCIDevice, *, managed: bool, in_use: Mapping[PCIAddress, str] | None = None
) -> int:
    """Every check of the module docstring, in order; returns the IOMMU group number."""
    device.require()
    check_endpoint(device)
    group = check_iommu_group(device)
    check_not_in_use(device, in_use or {})
    if not managed:
        driver = device.driver()
        if driver is None or not _is_vfio_driver(driver):
            bound = f"bound to driver {driver}" if driver else "not bound to any driver"
            raise HostError(
                f"device {device.address} is {bound}, not {VFIO_PCI}; use managed='yes' "
                "or bind it yourself"
            )
    return group


# -- binding ---------------------------------------------------------------------------------


def _drivers_dir(sysfs: Sysfs, *parts: str) -> Path:
    return sysfs.path("bus", "pci", "drivers", *parts)


def _unbind(device: PCIDevice, driver: str) -> None:
    device.sysfs.write(_drivers_dir(device.sysfs, driver, "unbind"), str(device.address))


def _probe(device: PCIDevice) -> None:
    device.sysfs.write(device.sysfs.path("bus", "pci", "drivers_probe"), str(device.address))


def _set_override(device: PCIDevice, driver: str | None) -> None:
    # A lone newline clears the override (the kernel strips it and treats "" as "none").
    device.sysfs.write(device.path / "driver_override", driver or "\n")


def _attach(device: PCIDevice, driver: str) -> None:
    """Probe, then bind ``driver`` explicitly if the probe left the device without one."""
    _probe(device)
    if device.driver() is None:
        device.sysfs.write(_drivers_dir(device.sysfs, driver, "bind"), str(device.address))
    now = device.driver()
    if now != driver:
        raise SysfsError(
            f"cannot bind {device.address} to {driver}: it is now bound to "
            f"{now or 'no driver'}; see the kernel log (dmesg)",
            path=str(device.path / "driver"),
        )


def _bind_vfio(device: PCIDevice) -> str | None:
    """The blocking body of :func:`bind_vfio`."""
    device.require()
    original = device.driver()
    if original is not None and _is_vfio_driver(original):
        log.debug("%s is already bound to %s", device.address, original)
        return original
    if not _drivers_dir(device.sysfs, VFIO_PCI).is_dir():
        raise UnsupportedError(
            f"cannot bind {device.address} to {VFIO_PCI}: the {VFIO_PCI} driver is not loaded "
            "(modprobe vfio-pci)",
            capability=VFIO_PCI,
        )
    old_override = device.driver_override()
    log.info("binding %s to %s (was %s)", device.address, VFIO_PCI, original or "unbound")
    try:
        _set_override(device, VFIO_PCI)
        if original is not None:
            _unbind(device, original)
        _probe(device)
        now = device.driver()
        if now != VFIO_PCI:
            raise SysfsError(
                f"cannot bind {device.address} to {VFIO_PCI}: after probing it is bound to "
                f"{now or 'no driver'}; see the kernel log (dmesg)",
                path=str(device.path / "driver"),
            )
    except Exception as exc:
        _undo_bind(device, original, old_override, exc)
        raise
    return original


def _undo_bind(
    device: PCIDevice, original: str | None, old_override: str | None, exc: BaseException
) -> None:
    """Put ``device`` back on ``original`` with ``old_override``; failures become notes."""
    try:
        if device.driver_override() != old_override:
            _set_override(device, old_override)
    except Exception as failure:
        add_rollback_note(exc, failure, f"restoring driver_override of {device.address}")
    try:
        current = device.driver()
        if current == original:
            return
        if current is not None:
            _unbind(device, current)
        if original is not None:
            _attach(device, original)
    except Exception as failure:
        add_rollback_note(exc, failure, f"rebinding {device.address} to {original or 'no driver'}")


def _rebind(device: PCIDevice, driver: str | None) -> None:
    """The blocking body of :func:`rebind`."""
    if driver is not None and _is_vfio_driver(driver):
        return  # it was on VFIO before we came: leave it there
    device.require()
    current = device.driver()
    if device.driver_override() == VFIO_PCI:
        _set_override(device, None)
    if current == driver:
        return
    if current is not None:
        if not _is_vfio_driver(current):
            raise HostError(
                f"cannot rebind {device.address} to {driver or 'no driver'}: it is bound to "
                f"{current}, not {VFIO_PCI}; leaving it alone"
            )
        _unbind(device, current)
    log.info("rebinding %s to %s", device.address, driver or "no driver")
    if driver is not None:
        _attach(device, driver)


# -- asyncio front ---------------------------------------------------------------------------


@record(frozen=False)
class _Outcome(Generic[_T]):
    """How a blocking call ended, and whether our task was cancelled meanwhile."""

    value: _T | None = None
    error: BaseException | None = None
    cancelled: asyncio.CancelledError | None = None

    def result(self) -> _T | None:
        if self.error is not None:
            raise self.error
        return self.value


async def _to_completion(call: Callable[[], _T]) -> _Outcome[_T]:
    """Run ``call`` in a worker thread and wait for its end, even through cancellation.

    A thread cannot be stopped half-way, and leaving it to finish unobserved would leave the
    device in a state nobody knows. So a cancellation is remembered, the wait goes on, and
    the caller decides what to undo before re-raising :attr:`_Outcome.cancelled`.
    """
    future = asyncio.ensure_future(asyncio.to_thread(call))
    outcome: _Outcome[_T] = _Outcome()
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError as cancel:
            if future.cancelled():  # the worker itself: cannot happen once it runs
                raise
            outcome.cancelled = cancel
        except Exception:
            pass  # read from the future below
    outcome.error = future.exception()
    if outcome.error is None:
        outcome.value = future.result()
    return outcome


async def bind_vfio(device: PCIDevice) -> str | None:
    """Bind ``device`` to ``vfio-pci`` (``managed='yes'``); return its original driver.

    The original driver is ``None`` for a device that had none, and ``vfio-pci`` itself when
    it was bound to VFIO already (nothing is changed then, and :func:`rebind` with that value
    leaves it bound). Store it (the ledger) and pass it to :func:`rebind` on release.

    Raises :class:`UnsupportedError` when ``vfio-pci`` is not loaded and
    :class:`SysfsError` when a write fails or VFIO does not take the device; the device is
    then put back as it was (a failure doing so is attached to the error as a note).
    """
    outcome = await _to_completion(lambda: _bind_vfio(device))
    if outcome.cancelled is not None:
        if outcome.error is not None:
            log.warning("binding %s to vfio-pci failed: %s", device.address, outcome.error)
        elif outcome.value is None or not _is_vfio_driver(outcome.value):
            undo = await _to_completion(lambda: _rebind(device, outcome.value))
            if undo.error is not None:
                log.error("undoing %s's bind to vfio-pci failed: %s", device.address, undo.error)
        raise outcome.cancelled
    return outcome.result()


async def rebind(device: PCIDevice, driver: str | None) -> None:
    """Give ``device`` back to ``driver``, the value :func:`bind_vfio` returned.

    Clears a ``vfio-pci`` override, unbinds ``vfio-pci`` and probes (or binds ``driver``
    explicitly), then checks the result. With ``driver`` ``None`` the device is left
    unbound; with ``vfio-pci`` it is left alone. A device bound to anything but VFIO is not
    touched (:class:`HostError`): it is no longer ours to move. Idempotent.
    """
    outcome = await _to_completion(lambda: _rebind(device, driver))
    if outcome.cancelled is not None:
        raise outcome.cancelled
    outcome.result()
