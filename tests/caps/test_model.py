"""QEMUCaps: frozen, flags derived from facts, JSON round trip lossless, bad JSON refused."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from fakeqmp import Recording

from caps.support import Replay
from qctl.caps import Capability, HostFacts, MachineType, QEMUCaps

SMALL = QEMUCaps(
    binary="/usr/bin/qemu-system-x86_64",
    version=(7, 2, 22),
    package="Debian",
    commands={"add-fd", "device_add"},  # type: ignore[arg-type]  # plain sets are frozen
    events=frozenset({"DEVICE_DELETED"}),
    qom_types=frozenset({"vfio-pci", "virtio-net-pci"}),
    device_properties={"virtio-net-pci": {"mac": "str", "failover": "bool"}},
    machines=(MachineType("pc-q35-7.2", "q35"), MachineType("pc-i440fx-7.2", "pc", True)),
    kvm_present=True,
    kvm_enabled=False,
    schema_paths=frozenset({"netdev_add/arg-type/+tap"}),
    host=HostFacts(vhost_net=False, tun=True),
)


async def test_json_round_trip_of_a_probed_qemu(recording: Recording, replay: Replay) -> None:
    caps = await replay(recording)
    assert QEMUCaps.from_json(caps.to_json()) == caps


def test_json_round_trip_of_a_small_one() -> None:
    again = QEMUCaps.from_json(SMALL.to_json(indent=2))
    assert again == SMALL
    assert again.flags == SMALL.flags
    assert again.default_machine == MachineType("pc-i440fx-7.2", "pc", True)


def test_flags_are_derived_from_the_facts() -> None:
    assert SMALL.flags == {
        Capability.ADD_FD,
        Capability.DEVICE_DELETED_EVENT,
        Capability.VFIO_PCI,
        Capability.VIRTIO_NET_FAILOVER,
        Capability.NETDEV_JSON,
        Capability.KVM_PRESENT,
    }
    older = dataclasses.replace(SMALL, device_properties={"virtio-net-pci": {"mac": "str"}})
    assert not older.has(Capability.VIRTIO_NET_FAILOVER)


def test_json_is_sorted_and_names_the_flags() -> None:
    data = json.loads(SMALL.to_json())
    assert data["commands"] == ["add-fd", "device_add"]
    assert data["flags"] == sorted(flag.value for flag in SMALL.flags)
    assert data["version"] == [7, 2, 22]
    assert data["machines"][1] == {"name": "pc-i440fx-7.2", "alias": "pc", "default": True}
    assert SMALL.version_text == "7.2.22"


def test_caps_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        SMALL.package = "changed"  # type: ignore[misc]
    with pytest.raises(TypeError):
        SMALL.device_properties["e1000"] = {}  # type: ignore[index]
    with pytest.raises(TypeError):
        SMALL.device_properties["virtio-net-pci"]["x"] = "str"  # type: ignore[index]
    assert isinstance(SMALL.commands, frozenset)
    assert len({SMALL, QEMUCaps.from_json(SMALL.to_json())}) == 1  # hashable, by value


def _broken(change: dict[str, Any]) -> str:
    data = SMALL.to_dict()
    data.update(change)
    return json.dumps(data)


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        "{}",
        _broken({"version": [7, 2]}),
        _broken({"version": ["7", 2, 0]}),
        _broken({"commands": "add-fd"}),
        _broken({"events": [1]}),
        _broken({"kvm": {"present": 1, "enabled": False}}),
        _broken({"host": {}}),
        _broken({"device_properties": {"e1000": {"mac": 1}}}),
        _broken({"machines": [{"name": "pc"}]}),
        _broken({"binary": 3}),
        "not json",
    ],
)
def test_malformed_json_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        QEMUCaps.from_json(text)
