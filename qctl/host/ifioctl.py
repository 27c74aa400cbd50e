"""Quick facts about a network interface through ioctls, in the caller's network namespace.

A hot-plug checks its bridge on every attach; a netlink query through pyroute2 costs a
few hundred microseconds, these ioctls a few. (``/sys/class/net`` is no substitute: it
shows the namespace sysfs was mounted in, not the caller's.)
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import socket
import struct

from ..errors import HostError, NetlinkError
from .link import netlink_error

__all__ = [
    "bridge_add_port",
    "if_driver",
    "if_exists",
    "if_index",
    "if_mtu",
    "if_set_mac",
    "if_set_mtu",
    "if_up",
]

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_SIOCGIFMTU = 0x8921
_SIOCSIFMTU = 0x8922
_SIOCSIFHWADDR = 0x8924
_SIOCBRADDIF = 0x89A2
_ARPHRD_ETHER = 1
_IFF_UP = 0x1
_SIOCETHTOOL = 0x8946
_ETHTOOL_GDRVINFO = 0x00000003
_DRVINFO_SIZE = 196  # struct ethtool_drvinfo
_IFNAMSIZ = 16


def _ifreq(name: str, payload: bytes) -> bytes:
    return struct.pack(f"{_IFNAMSIZ}s", name.encode()) + payload


def _ioctl(name: str, request: int, payload: bytes, what: str) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            return fcntl.ioctl(sock.fileno(), request, _ifreq(name, payload))
        except OSError as exc:
            raise netlink_error(f"{what} of {name}", exc.errno) from exc


def if_index(name: str) -> int:
    """The ifindex of ``name`` (``NetlinkError`` with ENODEV when there is none)."""
    try:
        return socket.if_nametoindex(name)
    except OSError as exc:  # it sets no errno: the kernel's answer is ENODEV
        raise netlink_error(f"no interface {name}", exc.errno or errno.ENODEV) from exc


def if_exists(name: str) -> bool:
    """Whether an interface called ``name`` exists in this network namespace (ENODEV from
    SIOCGIFFLAGS is "no"; any other failure raises, as ``NetlinkError``)."""
    try:
        _ioctl(name, _SIOCGIFFLAGS, bytes(24), "cannot read the flags")
    except NetlinkError as exc:
        if exc.errno == errno.ENODEV:
            return False
        raise
    return True


def if_mtu(name: str) -> int:
    """The MTU of ``name``."""
    reply = _ioctl(name, _SIOCGIFMTU, struct.pack("i", 0) + bytes(20), "cannot read the MTU")
    return int(struct.unpack_from("i", reply, _IFNAMSIZ)[0])


def if_driver(name: str) -> str:
    """The driver behind ``name`` as ethtool reports it (``bridge``, ``veth``, ``tun``, …)."""
    info = ctypes.create_string_buffer(_DRVINFO_SIZE)
    struct.pack_into("I", info, 0, _ETHTOOL_GDRVINFO)
    _ioctl(
        name,
        _SIOCETHTOOL,
        struct.pack("P", ctypes.addressof(info)) + bytes(16),
        "cannot ask the driver",
    )
    driver = info.raw[4 : 4 + 32].split(b"\0", 1)[0].decode(errors="replace")
    if not driver:
        raise HostError(f"{name} reports no driver")
    return driver


def if_set_mac(name: str, mac: bytes) -> None:
    """Set the Ethernet address of ``name`` to the six bytes ``mac``."""
    _ioctl(
        name,
        _SIOCSIFHWADDR,
        struct.pack("H6s", _ARPHRD_ETHER, mac) + bytes(16),
        "cannot set the MAC",
    )


def if_set_mtu(name: str, mtu: int) -> None:
    """Set the MTU of ``name``."""
    _ioctl(name, _SIOCSIFMTU, struct.pack("i", mtu) + bytes(20), f"cannot set MTU {mtu}")


def if_up(name: str) -> None:
    """Bring ``name`` administratively up."""
    reply = _ioctl(name, _SIOCGIFFLAGS, bytes(24), "cannot read the flags")
    flags = struct.unpack_from("H", reply, _IFNAMSIZ)[0]
    _ioctl(name, _SIOCSIFFLAGS, struct.pack("H", flags | _IFF_UP) + bytes(22), "cannot bring up")


def bridge_add_port(bridge: str, port_index: int) -> None:
    """Make the interface with index ``port_index`` a port of ``bridge``."""
    _ioctl(bridge, _SIOCBRADDIF, struct.pack("i", port_index) + bytes(20), "cannot add a port")
