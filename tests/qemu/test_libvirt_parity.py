"""qctl gives QEMU the same NICs, disks and serial ports as libvirt 9.0 does, for the same
domain XML.

For each ``tests/qemu/data/argv/libvirt-*.xml`` the command line libvirt built is recorded in
``tests/data/libvirt/`` (by ``scripts/compare-libvirt`` from a local libvirt 9.0.0, or, for
``libvirt-upstream-*``, taken from libvirt's own test suite; see the README there). Each NIC's
``-netdev`` and ``-device`` properties must be equal, key for key, value for value and in the
same order, apart from what depends on the run: fd numbers (only their count must agree) and
the PCI placement (``bus``, ``addr``). Disks likewise: each disk ``-device`` (and its
controller's), and the ``-blockdev`` nodes it uses, with block node numbers left out (the
golden argv tests pin them). Serial ports: the ``-chardev`` and its ``isa-serial``. A
configuration libvirt refused must be refused by qctl with the same meaning.

The ``libvirt-upstream-*`` recordings are libvirt's argv for a current QEMU
(``x86_64-latest``): they are also compared with qctl's argv for QEMU 10.0's caps
(``qemu-10.0.caps.json``, from the recorded 10.0 probe).

The recorded files make this run without libvirt.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest

from qctl.caps import QEMUCaps
from qctl.conf import parse_domain
from qctl.errors import UnsupportedError
from qctl.qemu.dryrun import dry_run_argv

HERE = Path(__file__).parent
XML_DIR = HERE / "data" / "argv"
CAPS_FILE = XML_DIR / "qemu-7.2.caps.json"
CAPS_10_0 = XML_DIR / "qemu-10.0.caps.json"
LIBVIRT_DIR = HERE.parent / "data" / "libvirt"

CASES = sorted(p.stem for p in XML_DIR.glob("libvirt-*.xml"))

NIC_DRIVERS = frozenset(
    {
        "virtio-net-pci",
        "virtio-net-pci-transitional",
        "virtio-net-pci-non-transitional",
        "e1000",
        "e1000e",
        "rtl8139",
        "vfio-pci",
        "xen-net-device",
    }
)
DISK_DRIVERS = frozenset(
    {
        "virtio-blk-pci",
        "ide-hd",
        "ide-cd",
        "scsi-hd",
        "scsi-cd",
        "ahci",
        "virtio-scsi-pci",
    }
)
# Properties of libvirt's test input that the reduced XML here left out (not modeled).
DROPPED_KEYS = {"libvirt-upstream-disk-scsi-vpd": frozenset({"vendor", "product"})}
FD_KEYS = frozenset({"fd", "fds", "vhostfd", "vhostfds"})
PLACEMENT_KEYS = frozenset({"bus", "addr"})

Props = list[tuple[str, Any]]


def normalized(props: dict[str, Any]) -> Props:
    """The properties in order, without placement, fd lists reduced to their length."""
    out: Props = []
    for key, value in props.items():
        if key in PLACEMENT_KEYS:
            continue
        if key in FD_KEYS:
            value = f"<{len(str(value).split(':'))} fd>"
        out.append((key, value))
    return out


def nic_options(argv: list[str]) -> tuple[dict[str, Props], dict[str, Props]]:
    """``-netdev`` backends and NIC ``-device`` frontends by id, normalized."""
    netdevs: dict[str, Props] = {}
    devices: dict[str, Props] = {}
    for option, value in itertools.pairwise(argv):
        if option not in ("-netdev", "-device"):
            continue
        assert value.startswith("{"), f"expected JSON syntax: {option} {value}"
        props = json.loads(value)
        if option == "-netdev":
            netdevs[props["id"]] = normalized(props)
        elif props["driver"] in NIC_DRIVERS:
            devices[props["id"]] = normalized(props)
    return netdevs, devices


_NODE = re.compile(r"^libvirt-\d+-")


def _node(value: Any) -> Any:
    return _NODE.sub("libvirt-N-", value) if isinstance(value, str) else value


def disk_options(argv: list[str], dropped: frozenset[str] = frozenset()) -> dict[str, Props]:
    """Disk and disk controller ``-device`` options by id, each with the block nodes its
    ``drive`` stands on (``format``, ``storage``), node numbers and placement left out."""
    nodes: dict[str, dict[str, Any]] = {}
    devices: dict[str, dict[str, Any]] = {}
    for option, value in itertools.pairwise(argv):
        if option == "-blockdev":
            props = json.loads(value)
            nodes[props["node-name"]] = props
        elif option == "-device" and value.startswith("{"):
            props = json.loads(value)
            if props["driver"] in DISK_DRIVERS:
                devices[props["id"]] = props
    out: dict[str, Props] = {}
    for dev_id, props in devices.items():
        entry = [(k, _node(v)) for k, v in normalized(props) if k not in dropped]
        if "drive" in props:
            fmt = nodes[props["drive"]]
            entry.append(("format", [(k, _node(v)) for k, v in fmt.items()]))
            storage = nodes[fmt["file"]]
            entry.append(("storage", [(k, _node(v)) for k, v in storage.items()]))
        out[dev_id] = entry
    return out


def serial_options(argv: list[str]) -> list[tuple[str, Props]]:
    """Each ``isa-serial`` device with its ``-chardev`` argument."""
    chardevs: dict[str, str] = {}
    out: list[tuple[str, Props]] = []
    for option, value in itertools.pairwise(argv):
        if option == "-chardev" and not value.startswith("socket,id=charmonitor"):
            chardevs[value.split("id=", 1)[1].split(",", 1)[0]] = value
        elif option == "-device" and '"isa-serial"' in value:
            props = json.loads(value)
            out.append((chardevs[props["chardev"]], normalized(props)))
    return out


def recorded(name: str) -> list[str]:
    return (LIBVIRT_DIR / f"{name}.args").read_text().splitlines()


def qctl_argv(name: str, caps_file: Path = CAPS_FILE) -> list[str]:
    defn = parse_domain((XML_DIR / f"{name}.xml").read_bytes(), source=f"{name}.xml")
    caps = QEMUCaps.from_json(caps_file.read_text())
    # compare-libvirt gave libvirt a stand-in /dev/vhost-net for these only; this host has none
    vhost = name.startswith("libvirt-vhostnet-")
    return dry_run_argv(defn, caps, vhost_net_available=vhost)


def test_every_example_has_a_recording() -> None:
    assert CASES, "no libvirt-*.xml examples"
    for name in CASES:
        recorded = [LIBVIRT_DIR / f"{name}{suffix}" for suffix in (".args", ".err")]
        assert sum(p.exists() for p in recorded) == 1, f"{name}: need exactly one of {recorded}"


RECORDED = [n for n in CASES if (LIBVIRT_DIR / f"{n}.args").exists()]


def assert_same_nics(name: str, caps_file: Path) -> None:
    theirs_netdevs, theirs_devices = nic_options(recorded(name))
    ours_netdevs, ours_devices = nic_options(qctl_argv(name, caps_file))
    assert theirs_devices, "the recording has no NIC"
    assert ours_devices == theirs_devices
    assert ours_netdevs == theirs_netdevs


@pytest.mark.parametrize("name", [n for n in RECORDED if nic_options(recorded(n))[1]])
def test_nic_properties_match_libvirt(name: str) -> None:
    assert_same_nics(name, CAPS_FILE)


@pytest.mark.parametrize(
    "name",
    [n for n in CASES if n.startswith("libvirt-upstream-") and nic_options(recorded(n))[1]],
)
def test_nic_properties_match_libvirt_latest_on_qemu_10_0(name: str) -> None:
    """libvirt's argv for a current QEMU, against qctl's for the recorded QEMU 10.0."""
    caps = QEMUCaps.from_json(CAPS_10_0.read_text())
    assert caps.version[:2] == (10, 0)
    assert_same_nics(name, CAPS_10_0)
DISK_CASES = [n for n in RECORDED if "-disk" in n or "virt-manager" in n]


def test_disk_cases_are_found() -> None:
    assert len(DISK_CASES) == 4
    assert all(disk_options(recorded(name)) for name in DISK_CASES)


@pytest.mark.parametrize("name", DISK_CASES)
def test_disk_properties_match_libvirt(name: str) -> None:
    """Each of the reduced XML's disks gets libvirt's devices and block nodes (libvirt's
    recording may hold more disks, which the reduction left out: see its README)."""
    dropped = DROPPED_KEYS.get(name, frozenset())
    theirs = disk_options(recorded(name), dropped)
    ours = disk_options(qctl_argv(name))
    assert ours
    assert ours == {dev_id: theirs.get(dev_id) for dev_id in ours}


@pytest.mark.parametrize("name", [n for n in RECORDED if serial_options(recorded(n))])
def test_serial_ports_match_libvirt(name: str) -> None:
    assert serial_options(qctl_argv(name)) == serial_options(recorded(name))


@pytest.mark.parametrize("name", [n for n in CASES if (LIBVIRT_DIR / f"{n}.err").exists()])
def test_refusals_match_libvirt(name: str) -> None:
    theirs = (LIBVIRT_DIR / f"{name}.err").read_text().strip()
    with pytest.raises(UnsupportedError) as info:
        qctl_argv(name)
    ours = str(info.value)
    # libvirt: "unsupported configuration: vhost-net was requested for an interface, but is
    # unavailable"; qctl: "vhost-net was requested but is unavailable: <why>"
    for words in ("vhost-net was requested", "unavailable"):
        assert words in theirs and words in ours
    assert theirs.startswith("unsupported configuration")
    assert info.value.capability == "vhost-net"


def test_recorded_vhost_choices() -> None:
    """What libvirt chose, stated: vhost-net on by default and on request, off on request,
    for non-virtio models and under TCG, and never without the device."""
    vhost_on = {
        name: {
            nd_id: dict(props).get("vhost", False)
            for nd_id, props in nic_options(
                (LIBVIRT_DIR / f"{name}.args").read_text().splitlines()
            )[0].items()
        }
        for name in ("libvirt-vhostnet-virtio", "libvirt-tcg-vhost", "libvirt-virtio-full")
    }
    assert vhost_on == {
        # queues=2 default, name='vhost', name='qemu', e1000e
        "libvirt-vhostnet-virtio": {
            "hostnet0": True,
            "hostnet1": True,
            "hostnet2": False,
            "hostnet3": False,
        },
        "libvirt-tcg-vhost": {"hostnet0": False},
        "libvirt-virtio-full": {"hostnet0": False, "hostnet1": False},
    }
