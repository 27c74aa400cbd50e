import pytest

from qctl.testing import Guest

pytestmark = [pytest.mark.qemu, pytest.mark.guest]
MAC = "52:54:00:77:00:02"


async def test_a_hotplugged_nic_reaches_a_guest(qctl_guest_module: Guest, qctl_bridge: str) -> None:
    await qctl_guest_module.domain.attach_device(
        f"<interface type='bridge'><mac address='{MAC}'/><source bridge='{qctl_bridge}'/>"
        "<model type='virtio'/></interface>"
    )
    nics = await qctl_guest_module.wait_for_nics(lambda nics: MAC in nics, timeout=60)
    assert nics[MAC][1] == "virtio_net"
