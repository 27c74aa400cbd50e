"""Disk planning: target names to indexes and drive places, the controllers disks need,
libvirt's aliases and block node numbers. (The argv itself: golden files in
test_command.py, and test_libvirt_parity.py.)"""

from __future__ import annotations

import pytest

from qctl.conf import DiskBus, DiskControllerDef, DiskControllerType, DriveAddress, parse_domain
from qctl.errors import UnsupportedError
from qctl.qemu.disk import Q35_AHCI_ADDRESS, disk_index, node_names, plan_disks


@pytest.mark.parametrize(
    ("target", "index"), [("vda", 0), ("sdb", 1), ("vdz", 25), ("vdaa", 26), ("sdab", 27)]
)
def test_disk_index_reads_target_names_like_libvirt(target: str, index: int) -> None:
    assert disk_index(target) == index


@pytest.mark.parametrize("target", ["vd", "vd1", "sdA"])
def test_a_target_without_letters_is_refused(target: str) -> None:
    with pytest.raises(UnsupportedError, match=f"disk target '{target}' is not a prefix"):
        disk_index(target)


def _domain(machine: str, devices: str) -> str:
    return (
        f"<domain type='qemu'><name>d</name><memory>65536</memory>"
        f"<os><type machine='{machine}'>hvm</type></os><devices>{devices}</devices></domain>"
    )


def test_sata_and_scsi_places_and_the_controllers_they_need() -> None:
    defn = parse_domain(
        _domain(
            "q35",
            "<controller type='pci' index='0' model='pcie-root'/>"
            "<disk type='file'><source file='/a'/><target dev='sdg' bus='sata'/></disk>"
            "<disk type='file'><source file='/b'/><target dev='sdb' bus='sata'/></disk>"
            "<disk type='file'><source file='/c'/><target dev='sdi'/></disk>"
            "<disk type='file'><source file='/d'/><target dev='vdc'/></disk>",
        )
    )
    planned = plan_disks(defn)
    assert [(d.alias, d.target_bus, d.drive) for d in planned.disks] == [
        ("sata1-0-0", DiskBus.SATA, DriveAddress(controller=1, unit=0)),
        ("sata0-0-1", DiskBus.SATA, DriveAddress(controller=0, unit=1)),
        ("scsi1-0-0-1", DiskBus.SCSI, DriveAddress(controller=1, unit=1)),
        ("virtio-disk2", DiskBus.VIRTIO, None),
    ]
    # added after the last controller, sorted; q35's sata0 is the chipset's AHCI ("ide")
    assert planned.devices.items[1:4] == (
        DiskControllerDef(
            type=DiskControllerType.SATA, index=0, alias="ide", address=Q35_AHCI_ADDRESS
        ),
        DiskControllerDef(type=DiskControllerType.SATA, index=1, alias="sata1"),
        DiskControllerDef(
            type=DiskControllerType.SCSI, index=1, model="virtio-scsi", alias="scsi1"
        ),
    )


def test_given_controllers_and_aliases_are_kept() -> None:
    defn = parse_domain(
        _domain(
            "pc",
            "<controller type='scsi' index='0'><alias name='ua-hba'/></controller>"
            "<disk type='file'><source file='/a'/><target dev='sda'/>"
            "<alias name='ua-a'/></disk>",
        )
    )
    planned = plan_disks(defn)
    assert planned.disk_controllers == (
        DiskControllerDef(
            type=DiskControllerType.SCSI, index=0, model="virtio-scsi", alias="ua-hba"
        ),
    )
    assert planned.disks[0].alias == "ua-a"


def test_block_nodes_count_down_over_disks_with_a_medium() -> None:
    defn = plan_disks(
        parse_domain(
            _domain(
                "pc",
                "<disk type='file'><source file='/a'/><target dev='vda'/></disk>"
                "<disk type='file' device='cdrom'><target dev='sda' bus='sata'/></disk>"
                "<disk type='file'><source file='/b'/><target dev='vdb'/></disk>",
            )
        )
    )
    assert node_names(defn) == {"virtio-disk0": 2, "virtio-disk1": 1}
