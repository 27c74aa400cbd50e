"""TESTING — what a user's tests need to drive real QEMU: a pytest plugin and its helpers.

``pip install qctl`` registers :mod:`qctl.testing.plugin` with pytest (entry point
``pytest11``); its fixtures (``qctl_netns``, ``qctl_bridge``, ``qctl_state_root``,
``qctl_guest`` and its ``_module``/``_session`` forms) need pytest-asyncio. The names here
can be used without the plugin.
"""

from qctl.testing.guest import Guest, guest_dir, guest_xml
from qctl.testing.netns import in_private_netns, unshare_net

__all__ = ["Guest", "guest_dir", "guest_xml", "in_private_netns", "unshare_net"]
