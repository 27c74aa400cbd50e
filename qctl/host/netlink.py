"""The rtnetlink facade: the only module of qctl that imports pyroute2.

:class:`Netlink` implements :class:`qctl.host.link.LinkControl` over pyroute2's
``AsyncIPRoute``. Why the asyncio flavour: since pyroute2 0.9 the synchronous ``IPRoute`` is a
wrapper that drives its *own* event loop with ``run_until_complete``, so it cannot be called
from a coroutine (it fails with "This event loop is already running"), and running it through
``asyncio.to_thread`` would spin up a private event loop in each worker thread. ``AsyncIPRoute``
instead registers its socket with the running loop, so a request never blocks the loop and
cancellation simply abandons the reply.

What stays out of the public surface: pyroute2's message objects are turned into
:class:`~qctl.host.link.LinkInfo` here, and its exceptions into :class:`qctl.errors.NetlinkError`
with the kernel's errno and the kernel's extended-ack text when it sent one (``mtu greater than
device maximum`` says more than ``Invalid argument``).

pyroute2 itself is imported when the first socket is opened (:func:`_pyroute2`): it costs
more to import than a whole ``qctl list``, and most commands never touch a link.

The socket is opened on first use and belongs to the event loop running at that time; one
``Netlink`` serves one loop. Requests are serialised by a lock: they take microseconds, and
one request in flight at a time keeps replies and sequence numbers trivially matched.
"""

from __future__ import annotations

import asyncio
import errno as errno_mod
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any

from ..errors import NetlinkError
from ..types import MACAddress
from .ifioctl import bridge_add_port, if_exists, if_set_mac, if_set_mtu, if_up
from .link import VLAN_MAX, LinkInfo, VFConfig, netlink_error

__all__ = ["Netlink"]

_IFF_UP = 0x1
# <linux/rtnetlink.h>: ask RTM_GETLINK to include IFLA_NUM_VF and IFLA_VFINFO_LIST.
_RTEXT_FILTER_VF = 0x1

# A request: given the pyroute2 socket, the awaitable that performs it.
_Request = Callable[[Any], Awaitable[Any]]


def _parse_mac(text: object) -> MACAddress | None:
    """The link's hardware address when it is an Ethernet MAC, else ``None``."""
    if not isinstance(text, str):
        return None
    try:
        return MACAddress.parse(text)
    except ValueError:
        return None


def _link_info(msg: Any, names: Mapping[int, str]) -> LinkInfo:
    """Turn one pyroute2 ``ifinfmsg`` into a :class:`LinkInfo`; ``names`` maps index → name."""
    master = msg.get("master")
    kind = msg.get(("linkinfo", "kind"))
    return LinkInfo(
        index=int(msg["index"]),
        name=str(msg.get("ifname")),
        kind=str(kind) if kind is not None else None,
        mac=_parse_mac(msg.get("address")),
        mtu=int(msg.get("mtu") or 0),
        master=names.get(int(master)) if master else None,
        up=bool(int(msg["flags"]) & _IFF_UP),
        operstate=str(msg.get("operstate") or "UNKNOWN"),
    )


def _vf_config(msg: Any, pf: str, vf: int, what: str) -> VFConfig:
    """VF ``vf``'s admin MAC and VLAN from the PF's ``ifinfmsg`` (asked with RTEXT_FILTER_VF).

    Each ``IFLA_VF_INFO`` of ``IFLA_VFINFO_LIST`` carries ``IFLA_VF_MAC`` and ``IFLA_VF_VLAN``
    structs that start with the VF number; the entry is found by that number, not by its
    position in the list.
    """
    infos = msg.get_attr("IFLA_VFINFO_LIST")
    if infos is None:
        raise netlink_error(what, errno_mod.EOPNOTSUPP, f"{pf} reports no SR-IOV VFs")
    for info in infos.get_attrs("IFLA_VF_INFO"):
        mac_attr = info.get_attr("IFLA_VF_MAC")
        if mac_attr is None or int(mac_attr["vf"]) != vf:
            continue
        mac = _parse_mac(mac_attr["mac"])
        if mac is None:
            raise netlink_error(what, errno_mod.EPROTO, f"bad VF MAC {mac_attr['mac']!r}")
        vlan_attr = info.get_attr("IFLA_VF_VLAN")
        vlan = int(vlan_attr["vlan"]) if vlan_attr is not None else 0
        return VFConfig(mac=mac, vlan=vlan)
    count = msg.get_attr("IFLA_NUM_VF")
    reason = f"{pf} has no VF {vf}" + (f" (it has {count})" if count is not None else "")
    raise netlink_error(what, errno_mod.ENODEV, reason)


def _pyroute2() -> tuple[Any, Any]:
    """pyroute2's ``AsyncIPRoute`` class and its ``NetlinkError``, imported on first use."""
    from pyroute2 import AsyncIPRoute
    from pyroute2.netlink.exceptions import NetlinkError as PyrouteNetlinkError

    return AsyncIPRoute, PyrouteNetlinkError


class Netlink:
    """Link operations over one rtnetlink socket (see the module docstring for the design).

    Use as ``async with Netlink() as netlink:``, or create it and call :meth:`aclose` when
    done; closing twice is harmless, using it after closing fails with ``EBADF``.
    """

    def __init__(self) -> None:
        self._ipr: Any = None
        self._closed = False
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Netlink:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the netlink socket (idempotent)."""
        self._closed = True
        ipr, self._ipr = self._ipr, None
        if ipr is not None:
            ipr.close()

    async def _run(self, what: str, request: _Request) -> Any:
        """Perform ``request``, translating failures into :class:`NetlinkError` about ``what``."""
        if self._closed:
            raise netlink_error(what, errno_mod.EBADF, "the netlink connection is closed")
        async_ip_route, pyroute_netlink_error = _pyroute2()
        async with self._lock:
            try:
                if self._ipr is None:
                    # No multicast groups: we never read events, so none should queue up.
                    self._ipr = async_ip_route(groups=0, ext_ack=True)
                return await request(self._ipr)
            except pyroute_netlink_error as exc:
                reason = exc.args[1] if len(exc.args) > 1 else None
                raise netlink_error(what, exc.code, str(reason) if reason else None) from exc
            except OSError as exc:
                raise netlink_error(what, exc.errno, exc.strerror) from exc

    async def _get_msg(self, what: str, **selector: Any) -> Any:
        """The ``ifinfmsg`` selected by ``ifname=`` or ``index=``, or ``None`` (ENODEV)."""
        try:
            msgs = await self._run(what, lambda ipr: ipr.link("get", **selector))
        except NetlinkError as exc:
            if exc.errno == errno_mod.ENODEV:
                return None
            raise
        return msgs[0] if msgs else None

    async def _require_index(self, name: str, what: str) -> int:
        """The ifindex of ``name``; ``ENODEV`` reported as failing ``what`` when missing."""
        msg = await self._get_msg(what, ifname=name)
        if msg is None:
            raise netlink_error(what, errno_mod.ENODEV)
        return int(msg["index"])

    async def _set(self, name: str, what: str, **changes: Any) -> None:
        """Apply ``changes`` (pyroute2 ``link set`` keywords) to ``name``."""
        index = await self._require_index(name, what)
        await self._run(what, lambda ipr: ipr.link("set", index=index, **changes))

    # -- queries ---------------------------------------------------------------------------

    async def get_link(self, name: str) -> LinkInfo | None:
        """The interface called ``name``, or ``None`` when there is none."""
        if not if_exists(name):  # by ioctl: "gone" must not cost pyroute2's import
            return None
        msg = await self._get_msg(f"cannot read link {name}", ifname=name)
        if msg is None:
            return None
        names: dict[int, str] = {}
        master = msg.get("master")
        if master:
            master_msg = await self._get_msg(f"cannot read master of {name}", index=int(master))
            if master_msg is not None:
                names[int(master)] = str(master_msg.get("ifname"))
        return _link_info(msg, names)

    async def link_index(self, name: str) -> int | None:
        """The ifindex of ``name``, or ``None`` when there is no such interface."""
        if not if_exists(name):  # by ioctl: "gone" must not cost pyroute2's import
            return None
        msg = await self._get_msg(f"cannot look up link {name}", ifname=name)
        return None if msg is None else int(msg["index"])

    async def link_exists(self, name: str) -> bool:
        """Whether an interface called ``name`` exists."""
        return await self.link_index(name) is not None

    async def list_links(self, *, master: str | None = None) -> list[LinkInfo]:
        """Every interface, or only the ports of ``master`` (``ENODEV`` if it is missing)."""
        master_index = None
        if master is not None:
            master_index = await self._require_index(master, f"cannot list ports of {master}")

        async def dump(ipr: Any) -> list[Any]:
            return [msg async for msg in await ipr.link("dump")]

        msgs = await self._run("cannot list links", dump)
        names = {int(msg["index"]): str(msg.get("ifname")) for msg in msgs}
        if master_index is not None:
            msgs = [msg for msg in msgs if int(msg.get("master") or 0) == master_index]
        return [_link_info(msg, names) for msg in msgs]

    # -- changes ---------------------------------------------------------------------------

    async def set_mac(self, name: str, mac: MACAddress) -> None:
        """Set the hardware address of ``name``."""
        await self._set(name, f"cannot set MAC address of {name} to {mac}", address=str(mac))

    async def set_mtu(self, name: str, mtu: int) -> None:
        """Set the MTU of ``name``."""
        await self._set(name, f"cannot set MTU of {name} to {mtu}", mtu=mtu)

    async def set_up(self, name: str) -> None:
        """Bring ``name`` administratively up."""
        await self._set(name, f"cannot bring {name} up", state="up")

    async def set_down(self, name: str) -> None:
        """Bring ``name`` administratively down."""
        await self._set(name, f"cannot bring {name} down", state="down")

    async def set_master(self, name: str, master: str) -> None:
        """Enslave ``name`` to ``master``."""
        what = f"cannot enslave {name} to {master}"
        master_index = await self._require_index(master, what)
        await self._set(name, what, master=master_index)

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
        ``master`` (its index and name) and bring it up.

        Done with the classic interface ioctls, in libvirt's order (MAC before joining the
        bridge, up last): each costs microseconds where a pyroute2 request costs hundreds,
        and a tap's set-up is on the path of every hot-plug.
        """
        parts = [f"MAC {mac}"]
        if mtu is not None:
            parts.append(f"MTU {mtu}")
        if master is not None:
            parts.append(f"port of {master[1]}")
        try:
            if_set_mac(name, mac.octets)
            if mtu is not None:
                if_set_mtu(name, mtu)
            if master is not None:
                bridge_add_port(master[1], index)
            if_up(name)
        except NetlinkError as exc:
            raise NetlinkError(
                f"cannot set up {name} ({', '.join(parts)}): {exc}", errno=exc.errno
            ) from exc

    async def set_nomaster(self, name: str) -> None:
        """Release ``name`` from its master, if it has one."""
        await self._set(name, f"cannot release {name} from its master", master=0)

    async def create_bridge(self, name: str) -> None:
        """Create a Linux bridge called ``name`` (left down, with default settings)."""
        await self._run(
            f"cannot create bridge {name}",
            lambda ipr: ipr.link("add", ifname=name, kind="bridge"),
        )

    async def create_veth(self, name: str, peer: str) -> None:
        """Create a veth pair ``name`` ↔ ``peer``."""
        await self._run(
            f"cannot create veth pair {name}/{peer}",
            lambda ipr: ipr.link("add", ifname=name, kind="veth", peer=peer),
        )

    async def delete_link(self, name: str, *, index: int | None = None) -> bool:
        """Delete ``name``; with ``index``, only if ``name`` still is that very link.

        The deletion itself goes by ifindex, which the kernel never hands to another link
        while this one lives, so a name taken over in the meantime is never deleted by mistake.
        Returns whether a link was deleted.
        """
        current = await self.link_index(name)
        if current is None or (index is not None and current != index):
            return False
        try:
            await self._run(f"cannot delete {name}", lambda ipr: ipr.link("del", index=current))
        except NetlinkError as exc:
            if exc.errno == errno_mod.ENODEV:
                return False
            raise
        return True

    # -- SR-IOV VFs, through their PF ------------------------------------------------------

    async def get_vf_config(self, pf: str, vf: int) -> VFConfig:
        """The admin MAC and VLAN of VF number ``vf`` of the SR-IOV PF ``pf``."""
        what = f"cannot read the configuration of VF {vf} of {pf}"
        index = await self._require_index(pf, what)
        msgs = await self._run(
            what, lambda ipr: ipr.link("get", index=index, ext_mask=_RTEXT_FILTER_VF)
        )
        if not msgs:
            raise netlink_error(what, errno_mod.ENODEV)
        return _vf_config(msgs[0], pf, vf, what)

    async def set_vf_config(
        self, pf: str, vf: int, *, mac: MACAddress | None = None, vlan: int | None = None
    ) -> None:
        """Set VF ``vf``'s admin MAC and/or VLAN through its PF ``pf`` (MAC first)."""
        if vlan is not None and not 0 <= vlan <= VLAN_MAX:
            raise netlink_error(
                f"cannot set the VLAN of VF {vf} of {pf} to {vlan}",
                errno_mod.EINVAL,
                f"a VLAN id is 0 to {VLAN_MAX}",
            )
        if mac is None and vlan is None:
            return
        index = await self._require_index(pf, f"cannot configure VF {vf} of {pf}")
        if mac is not None:
            # pyroute2 consumes the dict (it pops the keys): build a fresh one per request.
            await self._run(
                f"cannot set the MAC address of VF {vf} of {pf} to {mac}",
                lambda ipr: ipr.link("set", index=index, vf={"vf": vf, "mac": str(mac)}),
            )
        if vlan is not None:
            await self._run(
                f"cannot set the VLAN of VF {vf} of {pf} to {vlan}",
                lambda ipr: ipr.link("set", index=index, vf={"vf": vf, "vlan": vlan}),
            )
