"""What the host layer needs from the kernel's link table, as plain values.

:class:`LinkInfo` is a snapshot of one network interface and :class:`LinkControl` the
operations taps and bridges need. :class:`qctl.host.netlink.Netlink` implements the protocol
over rtnetlink; code that only *uses* links (tap creation here, the QEMU driver above) takes a
``LinkControl`` so its tests can pass a fake that records calls or injects failures.

Every operation names interfaces by name, like ``ip link`` does, and reports failure as
:class:`qctl.errors.NetlinkError` whose message names the operation and the interfaces, and
whose ``errno`` is the kernel's error number; :func:`netlink_error` builds that message.
"""

from __future__ import annotations

from typing import Protocol

from qctl.record import record

from ..errors import NetlinkError
from ..types import MACAddress
from .oserror import errno_text

__all__ = ["VLAN_MAX", "LinkControl", "LinkInfo", "VFConfig", "netlink_error"]

VLAN_MAX = 4095
"""The highest 802.1Q VLAN id (0 means "no VLAN")."""


@record
class LinkInfo:
    """One network interface as the kernel reported it at the time of the request.

    ``kind`` is the rtnetlink link kind (``bridge``, ``tun``, ``veth``, …; ``None`` for
    devices without one, such as ``lo`` or physical NICs). ``master`` names the device this
    one is enslaved to (a bridge, for a bridge port). ``up`` is the administrative state (the
    ``IFF_UP`` flag), ``operstate`` the operational one (``UP``, ``DOWN``, ``UNKNOWN``, …).
    ``mac`` is ``None`` for links whose hardware address is not an Ethernet MAC.
    """

    index: int
    name: str
    kind: str | None
    mac: MACAddress | None
    mtu: int
    master: str | None
    up: bool
    operstate: str


@record
class VFConfig:
    """The administrative settings an SR-IOV PF holds for one of its VFs.

    ``mac`` is the *admin* MAC the VF's driver (in the host or in a guest) starts with, all
    zeros when none was set; ``vlan`` the VLAN id the PF tags the VF's traffic with, 0 for
    none. ``ip link show PF`` prints them as ``vf N link/ether MAC … vlan VLAN``.
    """

    mac: MACAddress
    vlan: int


class LinkControl(Protocol):
    """Link operations used to prepare host networking for a guest.

    Implementations raise :class:`qctl.errors.NetlinkError` on failure. Operations on an
    interface that does not exist fail with ``errno.ENODEV``, except the queries (which return
    ``None``/``False``) and :meth:`delete_link` (deleting what is gone already is success).
    """

    async def get_link(self, name: str) -> LinkInfo | None:
        """The interface called ``name``, or ``None`` when there is none."""
        ...

    async def link_index(self, name: str) -> int | None:
        """The ifindex of ``name``, or ``None`` when there is no such interface."""
        ...

    async def link_exists(self, name: str) -> bool:
        """Whether an interface called ``name`` exists."""
        ...

    async def list_links(self, *, master: str | None = None) -> list[LinkInfo]:
        """Every interface, or only those enslaved to ``master`` (the ports of a bridge)."""
        ...

    async def set_mac(self, name: str, mac: MACAddress) -> None:
        """Set the hardware address of ``name``."""
        ...

    async def set_mtu(self, name: str, mtu: int) -> None:
        """Set the MTU of ``name``."""
        ...

    async def set_up(self, name: str) -> None:
        """Bring ``name`` administratively up."""
        ...

    async def set_down(self, name: str) -> None:
        """Bring ``name`` administratively down."""
        ...

    async def set_master(self, name: str, master: str) -> None:
        """Enslave ``name`` to ``master`` (add it as a port of that bridge)."""
        ...

    async def setup_link(
        self,
        index: int,
        name: str,
        *,
        mac: MACAddress,
        mtu: int | None = None,
        master: tuple[int, str] | None = None,
    ) -> None:
        """Give link ``index`` (called ``name``) ``mac`` and ``mtu``, make it a port of
        ``master`` (its index and name) and bring it up, in one request (a new tap's whole
        set-up)."""
        ...

    async def set_nomaster(self, name: str) -> None:
        """Release ``name`` from its master, if it has one."""
        ...

    async def create_bridge(self, name: str) -> None:
        """Create a Linux bridge called ``name`` (left down, with default settings)."""
        ...

    async def create_veth(self, name: str, peer: str) -> None:
        """Create a veth pair ``name`` ↔ ``peer``."""
        ...

    async def delete_link(self, name: str, *, index: int | None = None) -> bool:
        """Delete ``name``; with ``index``, only if ``name`` still is that very link.

        Returns ``False`` when there was nothing to delete (no such name, or the name now
        belongs to another link), ``True`` when a link was deleted.
        """
        ...

    async def get_vf_config(self, pf: str, vf: int) -> VFConfig:
        """The admin MAC and VLAN of VF number ``vf`` of the SR-IOV PF ``pf``.

        Fails with ``EOPNOTSUPP`` when ``pf`` reports no VFs, ``ENODEV`` when it has no VF
        ``vf`` (or there is no ``pf``).
        """
        ...

    async def set_vf_config(
        self, pf: str, vf: int, *, mac: MACAddress | None = None, vlan: int | None = None
    ) -> None:
        """Set VF ``vf``'s admin MAC and/or VLAN (0 clears it) through its PF ``pf``.

        The MAC is set first, then the VLAN, in two requests, so an error names the one that
        failed; what is ``None`` is left as it is.
        """
        ...


def netlink_error(what: str, code: int | None, reason: str | None = None) -> NetlinkError:
    """A :class:`NetlinkError` reading ``<what>: <reason> (<ERRNO NAME>)``.

    ``what`` says what was attempted (``cannot enslave vnet3 to br0``); ``reason`` defaults to
    the C library's text for ``code``. Used by the facade and by callers that detect a
    failure before asking the kernel (a missing bridge), so both read the same.
    """
    return NetlinkError(f"{what}: {errno_text(code, reason)}", errno=code)
