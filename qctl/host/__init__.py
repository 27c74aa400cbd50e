"""HOST layer: the host side of guest devices, from plain values (never ``*Def`` objects).

- :mod:`.link`: :class:`LinkInfo` and the :class:`LinkControl` protocol (what we need from
  rtnetlink), so callers can inject a fake;
- :mod:`.netlink`: :class:`Netlink`, the rtnetlink implementation, the only pyroute2 user;
- :mod:`.tap`: :func:`create_tap` and the :class:`Tap` handle, :func:`delete_tap` for cleanup;
- :mod:`.vhost`: :func:`choose_vhost`, the vhost-net decision, and :func:`open_vhost_net`.
"""

from .link import LinkControl, LinkInfo, netlink_error
from .netlink import Netlink
from .tap import TUN_PATH, PendingTap, Tap, TapRequest, create_tap, delete_tap, tap_mac
from .vhost import VHOST_NET_PATH, VhostChoice, VhostMode, choose_vhost, open_vhost_net

__all__ = [
    "TUN_PATH",
    "VHOST_NET_PATH",
    "LinkControl",
    "LinkInfo",
    "Netlink",
    "PendingTap",
    "Tap",
    "TapRequest",
    "VhostChoice",
    "VhostMode",
    "choose_vhost",
    "create_tap",
    "delete_tap",
    "netlink_error",
    "open_vhost_net",
    "tap_mac",
]
