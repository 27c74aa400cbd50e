import pytest

from qctl.testing import Guest

pytestmark = [pytest.mark.qemu, pytest.mark.guest]
MAC = "52:54:00:77:00:01"


async def test_a_hotplugged_nic_reaches_the_guest(qctl_guest: Guest, qctl_bridge: str) -> None:
    await qctl_guest.domain.attach_device(
        f"<interface type='bridge'><mac address='{MAC}'/><source bridge='{qctl_bridge}'/>"
        "<model type='virtio'/></interface>"
    )
    nics = await qctl_guest.wait_for_nics(lambda nics: MAC in nics, timeout=60)
    assert nics[MAC][1] == "virtio_net"
