"""A fake sysfs tree with a fake kernel behind it, and a fake SR-IOV netlink, for hardware
this machine lacks (VFIO, IOMMU, SR-IOV NICs).

:class:`FakeSysfs` builds, under a temporary folder, the part of ``/sys`` that PCI
assignment reads, laid out as the kernel does (real symlinks, relative targets)::

    bus/pci/devices/ADDR          → ../../../devices/pciDDDD:00/ADDR
    bus/pci/drivers/NAME/         bind, unbind, new_id, remove_id, and ADDR → the device
    bus/pci/drivers_probe
    devices/pciDDDD:00/ADDR/      vendor, device, class, config, driver_override,
                                  driver → ../../../bus/pci/drivers/NAME
                                  iommu_group → ../../../kernel/iommu_groups/N
                                  physfn → ../PF, virtfnN → ../VF, net/IFNAME/device → ../../
                                  sriov_totalvfs, sriov_numvfs (PFs)
    kernel/iommu_groups/N/devices/ADDR → the device
    class/net/IFNAME              → ../../devices/pciDDDD:00/ADDR/net/IFNAME

Writing the control files changes nothing by itself, so :attr:`FakeSysfs.kernel` (a
:class:`FakeKernel`, the :class:`~qctl.host.sysfs.SysfsWriter` to inject) plays the
kernel: ``driver_override``, ``drivers/X/unbind``, ``drivers/X/bind`` and ``drivers_probe``
move the ``driver`` links (and a NIC's ``net/*`` interfaces) as Linux does, with its errnos
(``ENODEV`` for a device the driver does not hold or match, ``EBUSY`` to bind a bound
device). ``FakeKernel.fail`` makes a given write fail, to test rollback; ``writes`` records
every write as ``(short path, data)``, e.g. ``("0000:03:10.0/driver_override", "vfio-pci")``,
``("drivers/ixgbevf/unbind", "0000:03:10.0")``, ``("drivers_probe", "0000:03:10.0")``.

:class:`FakeVFNetlink` stands for the netlink facade in SR-IOV tests: PFs with VFs holding
an admin MAC and VLAN, every call recorded as a :class:`VFCall`, and failures on demand.

Usable from other suites as ``from host.fakesysfs import FakeSysfs`` (``tests/`` is on
``sys.path``).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qctl.errors import NetlinkError
from qctl.host import LinkInfo, Sysfs, VFConfig
from qctl.types import MACAddress, PCIAddress

ZERO_MAC = MACAddress(bytes(6))


def _addr(address: PCIAddress | str) -> PCIAddress:
    return address if isinstance(address, PCIAddress) else PCIAddress.parse(address)


def _symlink(link: Path, target: Path) -> None:
    """``link`` → ``target`` as a relative symlink, replacing whatever ``link`` was."""
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    # Like the kernel, always end with the target's own name (``../../../0000:03:00.0``,
    # never ``../..``): code reads the name from the link.
    link.symlink_to(os.path.join(os.path.relpath(target.parent, link.parent), target.name))


def vf_address(pf: PCIAddress, index: int) -> PCIAddress:
    """Where :meth:`FakeSysfs.add_pf` puts VF ``index`` of ``pf`` (slot 0x10 onwards)."""
    return PCIAddress(pf.domain, pf.bus, 0x10 + index // 8, index % 8)


class FakeSysfs:
    """A fake sysfs tree under ``base / "sys"``; see the module docstring."""

    def __init__(self, base: Path) -> None:
        self.root = base / "sys"
        self.kernel = FakeKernel(self)
        self.sysfs = Sysfs(root=self.root, writer=self.kernel)
        #: the driver ``drivers_probe`` picks for a device without an override
        self.native: dict[PCIAddress, str | None] = {}
        #: network interfaces a device has while bound to its native driver
        self.netdevs: dict[PCIAddress, list[str]] = {}
        self._next_group = 1
        for folder in ("bus/pci/devices", "bus/pci/drivers", "kernel/iommu_groups", "class/net"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        (self.root / "bus/pci/drivers_probe").write_text("")

    # -- paths -------------------------------------------------------------------------------

    def device_dir(self, address: PCIAddress | str) -> Path:
        """The device's real folder (``devices/pciDDDD:00/ADDR``)."""
        address = _addr(address)
        return self.root / "devices" / f"pci{address.domain:04x}:00" / str(address)

    def driver_dir(self, name: str) -> Path:
        return self.root / "bus/pci/drivers" / name

    def group_dir(self, group: int) -> Path:
        return self.root / "kernel/iommu_groups" / str(group)

    # -- building ----------------------------------------------------------------------------

    def add_driver(self, name: str) -> Path:
        """A loaded PCI driver ``name`` (idempotent)."""
        folder = self.driver_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        for attr in ("bind", "unbind", "new_id", "remove_id"):
            (folder / attr).touch()
        return folder

    def remove_driver(self, name: str) -> None:
        """Unload driver ``name`` (its folder goes; the test must not leave devices on it)."""
        folder = self.driver_dir(name)
        for entry in folder.iterdir():
            entry.unlink()
        folder.rmdir()

    def new_group(self) -> int:
        """A fresh IOMMU group number."""
        while self.group_dir(self._next_group).exists():
            self._next_group += 1
        group = self._next_group
        self.group_dir(group).joinpath("devices").mkdir(parents=True)
        return group

    def add_pci(
        self,
        address: PCIAddress | str,
        *,
        vendor: int = 0x8086,
        device: int = 0x10ED,
        cls: int = 0x020000,
        driver: str | None = None,
        native_driver: str | None = None,
        iommu_group: int | None = None,
        physfn: PCIAddress | str | None = None,
        vf_index: int | None = None,
        header_type: int | None = None,
        config: bool = True,
        bridge_attrs: bool = True,
    ) -> PCIAddress:
        """A PCI device; bound to ``driver`` if given.

        ``native_driver`` (default: ``driver``) is what ``drivers_probe`` binds without an
        override. ``iommu_group`` puts it in that group (create it with :meth:`new_group` or
        pass any number). ``physfn``/``vf_index`` make it VF ``vf_index`` of that PF.
        ``header_type`` defaults to 1 for a bridge class (``0x0604xx``), else 0; ``config``
        False leaves out the config space (as some sandboxes do), and bridges get
        ``secondary_bus_number`` and ``pci_bus/`` unless ``bridge_attrs`` is False.
        """
        address = _addr(address)
        folder = self.device_dir(address)
        folder.mkdir(parents=True)
        _symlink(self.root / "bus/pci/devices" / str(address), folder)
        (folder / "vendor").write_text(f"{vendor:#06x}\n")
        (folder / "device").write_text(f"{device:#06x}\n")
        (folder / "class").write_text(f"{cls:#08x}\n")
        (folder / "driver_override").write_text("(null)\n")
        is_bridge = cls >> 8 in {0x0604, 0x0607}
        if header_type is None:
            header_type = 1 if is_bridge else 0
        if config:
            space = bytearray(64)
            space[0:2] = vendor.to_bytes(2, "little")
            space[2:4] = device.to_bytes(2, "little")
            space[9:12] = cls.to_bytes(3, "little")
            space[0x0E] = header_type
            (folder / "config").write_bytes(bytes(space))
        if is_bridge and bridge_attrs:
            (folder / "secondary_bus_number").write_text("1\n")
            (folder / "pci_bus").mkdir()
        if iommu_group is not None:
            self.group_dir(iommu_group).joinpath("devices").mkdir(parents=True, exist_ok=True)
            _symlink(folder / "iommu_group", self.group_dir(iommu_group))
            _symlink(self.group_dir(iommu_group) / "devices" / str(address), folder)
        if physfn is not None:
            if vf_index is None:
                raise ValueError("a VF needs its vf_index")
            pf_folder = self.device_dir(physfn)
            _symlink(folder / "physfn", pf_folder)
            _symlink(pf_folder / f"virtfn{vf_index}", folder)
        self.native[address] = native_driver if native_driver is not None else driver
        if driver is not None:
            self.add_driver(driver)
            self._bind(address, driver)
        return address

    def add_netdev(self, name: str, address: PCIAddress | str) -> None:
        """Network interface ``name`` of ``address``, present while its native driver is bound."""
        address = _addr(address)
        self.netdevs.setdefault(address, []).append(name)
        native = self.native.get(address)
        if native is not None and self.driver_of(address) == native:
            self._show_netdev(name, address)

    def add_pf(
        self,
        netdev: str,
        address: PCIAddress | str,
        *,
        vfs: int = 2,
        driver: str = "ixgbe",
        vf_driver: str | None = "ixgbevf",
        group_per_vf: bool = True,
        iommu_group: int | None = None,
        totalvfs: int | None = None,
    ) -> list[PCIAddress]:
        """An SR-IOV PF with network interface ``netdev`` and ``vfs`` VFs enabled.

        The PF gets ``iommu_group`` (default: a new one); each VF its own new group when
        ``group_per_vf``, else the PF's. VFs sit at :func:`vf_address`, are bound to
        ``vf_driver`` (None: unbound) and then have interfaces ``{netdev}v{N}``.
        Returns the VF addresses, by VF number.
        """
        pf = _addr(address)
        pf_group = iommu_group if iommu_group is not None else self.new_group()
        self.add_pci(pf, driver=driver, iommu_group=pf_group)
        folder = self.device_dir(pf)
        (folder / "sriov_totalvfs").write_text(f"{totalvfs if totalvfs is not None else 64}\n")
        (folder / "sriov_numvfs").write_text(f"{vfs}\n")
        self.add_netdev(netdev, pf)
        made = []
        for index in range(vfs):
            vf = vf_address(pf, index)
            group = self.new_group() if group_per_vf else pf_group
            self.add_pci(
                vf,
                device=0x10ED,
                driver=vf_driver,
                iommu_group=group,
                physfn=pf,
                vf_index=index,
            )
            if vf_driver is not None:
                self.add_netdev(f"{netdev}v{index}", vf)
            made.append(vf)
        return made

    # -- state -------------------------------------------------------------------------------

    def driver_of(self, address: PCIAddress | str) -> str | None:
        link = self.device_dir(address) / "driver"
        return os.path.basename(os.readlink(link)) if link.is_symlink() else None

    def override_of(self, address: PCIAddress | str) -> str | None:
        text = (self.device_dir(address) / "driver_override").read_text().strip()
        return None if text == "(null)" else text

    def netdevs_of(self, address: PCIAddress | str) -> list[str]:
        folder = self.device_dir(address) / "net"
        return sorted(os.listdir(folder)) if folder.is_dir() else []

    def set_override(self, address: PCIAddress | str, driver: str | None) -> None:
        """Set ``driver_override`` behind the code's back (as an admin would)."""
        (self.device_dir(address) / "driver_override").write_text(f"{driver or '(null)'}\n")

    # -- what the kernel does ----------------------------------------------------------------

    def _show_netdev(self, name: str, address: PCIAddress) -> None:
        net = self.device_dir(address) / "net" / name
        net.mkdir(parents=True, exist_ok=True)
        _symlink(net / "device", self.device_dir(address))
        _symlink(self.root / "class/net" / name, net)

    def _hide_netdevs(self, address: PCIAddress) -> None:
        folder = self.device_dir(address) / "net"
        if not folder.is_dir():
            return
        for name in os.listdir(folder):
            (self.root / "class/net" / name).unlink(missing_ok=True)
            (folder / name / "device").unlink()
            (folder / name).rmdir()
        folder.rmdir()

    def _bind(self, address: PCIAddress, driver: str) -> None:
        _symlink(self.device_dir(address) / "driver", self.driver_dir(driver))
        _symlink(self.driver_dir(driver) / str(address), self.device_dir(address))
        if driver == self.native.get(address):
            for name in self.netdevs.get(address, []):
                self._show_netdev(name, address)

    def _unbind(self, address: PCIAddress) -> None:
        driver = self.driver_of(address)
        if driver is None:
            return
        self._hide_netdevs(address)
        (self.device_dir(address) / "driver").unlink()
        (self.driver_dir(driver) / str(address)).unlink(missing_ok=True)

    def _matches(self, address: PCIAddress, driver: str) -> bool:
        """Whether ``driver`` would take the device (override first, then the ID table)."""
        override = self.override_of(address)
        if override is not None:
            return driver == override
        return driver == self.native.get(address)

    def _probe_ok(self, address: PCIAddress, driver: str) -> bool:
        """Whether the driver's probe succeeds: vfio-pci wants an IOMMU group."""
        if (address, driver) in self.kernel.refused_probes:
            return False
        if driver == "vfio-pci":
            return (self.device_dir(address) / "iommu_group").is_symlink()
        return True


@dataclass
class _Failure:
    code: int
    times: int


class FakeKernel:
    """The fake tree's :class:`~qctl.host.sysfs.SysfsWriter`: applies kernel semantics."""

    def __init__(self, tree: FakeSysfs) -> None:
        self.tree = tree
        self.writes: list[tuple[str, str]] = []
        self.refused_probes: set[tuple[PCIAddress, str]] = set()
        #: devices ``drivers_probe`` leaves alone (so only an explicit ``bind`` works)
        self.no_autoprobe: set[PCIAddress] = set()
        self._failures: dict[str, _Failure] = {}
        #: called before each write with (short path, data); may raise to fail it
        self.before_write: Callable[[str, str], None] | None = None

    def fail(self, path: str, code: int = errno.EIO, *, times: int = 1) -> None:
        """Make the next ``times`` writes to ``path`` fail with ``code``.

        ``path`` is a short path as recorded in :attr:`writes` (``drivers_probe``,
        ``drivers/NAME/bind``, ``ADDR/driver_override``).
        """
        self._failures[path] = _Failure(code, times)

    def refuse_probe(self, address: PCIAddress | str, driver: str) -> None:
        """Make ``driver``'s probe of ``address`` fail silently (as a real probe error does)."""
        self.refused_probes.add((_addr(address), driver))

    def _short(self, path: Path) -> str:
        rel = Path(os.path.realpath(path)).relative_to(os.path.realpath(self.tree.root))
        parts = rel.parts
        if parts[:3] == ("bus", "pci", "drivers"):
            return "/".join(("drivers", *parts[3:]))
        if parts == ("bus", "pci", "drivers_probe"):
            return "drivers_probe"
        if parts[0] == "devices" and len(parts) >= 3:
            return "/".join(parts[2:])
        return str(rel)

    def write(self, path: Path, data: str) -> None:
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
        short = self._short(path)
        self.writes.append((short, data))
        if self.before_write is not None:
            self.before_write(short, data)
        failure = self._failures.get(short)
        if failure is not None and failure.times > 0:
            failure.times -= 1
            raise OSError(failure.code, os.strerror(failure.code), str(path))
        parts = short.split("/")
        if parts[0] == "drivers" and len(parts) == 3 and parts[2] in {"bind", "unbind"}:
            self._driver_write(parts[1], parts[2], data.strip())
        elif short == "drivers_probe":
            self._drivers_probe(data.strip())
        elif len(parts) == 2 and parts[1] == "driver_override":
            value = data.rstrip("\n")
            path.write_text(f"{value or '(null)'}\n")
        else:
            path.write_text(data)

    def _device(self, text: str) -> PCIAddress:
        try:
            address = PCIAddress.parse(text)
        except ValueError:
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV)) from None
        if not self.tree.device_dir(address).is_dir():
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
        return address

    def _driver_write(self, driver: str, action: str, text: str) -> None:
        address = self._device(text)
        current = self.tree.driver_of(address)
        if action == "unbind":
            if current != driver:
                raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
            self.tree._unbind(address)
            return
        if current is not None:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        if not self.tree._matches(address, driver):
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
        if not self.tree._probe_ok(address, driver):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        self.tree._bind(address, driver)

    def _drivers_probe(self, text: str) -> None:
        address = self._device(text)
        if self.tree.driver_of(address) is not None or address in self.no_autoprobe:
            return
        candidate = self.tree.override_of(address) or self.tree.native.get(address)
        if candidate is None or not self.tree.driver_dir(candidate).is_dir():
            return
        if self.tree._probe_ok(address, candidate):
            self.tree._bind(address, candidate)


# -- SR-IOV netlink ------------------------------------------------------------------------------


@dataclass(frozen=True)
class VFCall:
    """One VF request seen by :class:`FakeVFNetlink` (``op`` is ``get`` or ``set``)."""

    op: str
    pf: str
    vf: int
    mac: str | None = None
    vlan: int | None = None


@dataclass
class _FakePF:
    index: int
    up: bool
    vfs: list[VFConfig]


@dataclass
class FakeVFNetlink:
    """A netlink facade (``LinkControl``) for SR-IOV PFs that exist only in the test.

    ``refuse_zero_mac`` mimics PF drivers that refuse an all-zero admin MAC with ``EINVAL``;
    ``locked_vlan`` those that refuse VLAN changes with ``EPERM``. :meth:`fail` makes the
    next matching request fail. Any other link operation is a test error.
    """

    pfs: dict[str, _FakePF] = field(default_factory=dict)
    calls: list[VFCall] = field(default_factory=list)
    refuse_zero_mac: bool = False
    locked_vlan: bool = False
    _failures: list[tuple[Callable[[VFCall], bool], int]] = field(default_factory=list)

    def add_pf(
        self, name: str, *, vfs: int = 2, up: bool = True, mac: MACAddress = ZERO_MAC, vlan: int = 0
    ) -> None:
        self.pfs[name] = _FakePF(
            index=len(self.pfs) + 10, up=up, vfs=[VFConfig(mac, vlan) for _ in range(vfs)]
        )

    def config(self, pf: str, vf: int) -> VFConfig:
        return self.pfs[pf].vfs[vf]

    def fail(self, match: Callable[[VFCall], bool], code: int = errno.EIO) -> None:
        """Fail the next request for which ``match(call)`` is true with ``code``."""
        self._failures.append((match, code))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AssertionError(f"unexpected link operation {name}")

    async def get_link(self, name: str) -> LinkInfo | None:
        pf = self.pfs.get(name)
        if pf is None:
            return None
        state = "UP" if pf.up else "DOWN"
        return LinkInfo(pf.index, name, None, ZERO_MAC, 1500, None, pf.up, state)

    def _check(self, call: VFCall) -> _FakePF:
        self.calls.append(call)
        for i, (match, code) in enumerate(self._failures):
            if match(call):
                del self._failures[i]
                raise NetlinkError(f"injected failure of {call}", errno=code)
        pf = self.pfs.get(call.pf)
        if pf is None or not 0 <= call.vf < len(pf.vfs):
            raise NetlinkError(f"no VF {call.vf} of {call.pf}", errno=errno.ENODEV)
        return pf

    async def get_vf_config(self, pf: str, vf: int) -> VFConfig:
        return self._check(VFCall("get", pf, vf)).vfs[vf]

    async def set_vf_config(
        self, pf: str, vf: int, *, mac: MACAddress | None = None, vlan: int | None = None
    ) -> None:
        # One request per attribute, as the real facade sends them.
        if mac is not None:
            fake = self._check(VFCall("set", pf, vf, mac=str(mac)))
            if self.refuse_zero_mac and mac == ZERO_MAC:
                raise NetlinkError("zero MAC refused", errno=errno.EINVAL)
            fake.vfs[vf] = VFConfig(mac, fake.vfs[vf].vlan)
        if vlan is not None:
            fake = self._check(VFCall("set", pf, vf, vlan=vlan))
            if self.locked_vlan:
                raise NetlinkError("VLAN is locked", errno=errno.EPERM)
            fake.vfs[vf] = VFConfig(fake.vfs[vf].mac, vlan)
