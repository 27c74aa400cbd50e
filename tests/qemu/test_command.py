"""Golden command lines: domain XML + recorded caps (+ simulated host) in, argv out.

Each ``data/argv/NAME.xml`` is dry-run (:func:`qctl.qemu.dryrun.dry_run`) against the caps
recorded from this machine's QEMU 7.2 (``data/argv/qemu-7.2.caps.json``), edited per case as
:data:`CASES` says, with the host facts the case names. The outcome is compared with
``NAME.args`` (one argv element per line, like libvirt's ``.args`` files) or, for a
configuration that must be refused, ``NAME.err`` (the error's class and message).

Regenerate after an intended change with ``QCTL_REGEN_GOLDEN=1 pytest tests/qemu/test_command.py``
and review the diff.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest

from qctl.caps import DETECTION, Capability, QEMUCaps
from qctl.caps.flags import SchemaPath
from qctl.conf import (
    DomainDef,
    InterfaceType,
    NetDriverName,
    NetworkDef,
    format_xml,
    parse_domain,
    parse_network,
)
from qctl.errors import QctlError, StateError, UnsupportedError, ValidationError
from qctl.qemu.command import Features, build_command, format_props
from qctl.qemu.dryrun import DRY_RUN_MONITOR, dry_run, dry_run_argv
from qctl.qemu.nic import NICResources
from qctl.qemu.plan import features_from_caps, plan
from qctl.types import MACAddress, PCIAddress

DATA = Path(__file__).parent / "data" / "argv"
CAPS_FILE = DATA / "qemu-7.2.caps.json"
REGEN = bool(os.environ.get("QCTL_REGEN_GOLDEN"))


# -- the recorded caps and their edits ------------------------------------------------------


def load_caps() -> QEMUCaps:
    """The caps probed from this machine's QEMU 7.2 (``/dev/vhost-net`` absent, as here)."""
    return QEMUCaps.from_json(CAPS_FILE.read_text())


def with_xen(caps: QEMUCaps) -> QEMUCaps:
    """``caps`` of a QEMU built with the Xen PV NIC (``xen-net-device``)."""
    return dataclasses.replace(caps, qom_types=caps.qom_types | {"xen-net-device"})


def without_failover(caps: QEMUCaps) -> QEMUCaps:
    """``caps`` of a QEMU before 4.2: virtio-net has no ``failover`` property."""
    props = {d: dict(p) for d, p in caps.device_properties.items()}
    del props["virtio-net-pci"]["failover"]
    return dataclasses.replace(caps, device_properties=props)


def without_json(caps: QEMUCaps) -> QEMUCaps:
    """``caps`` of a QEMU whose ``-netdev``/``-device`` take only ``key=value`` syntax."""
    paths = set()
    for flag in (Capability.NETDEV_JSON, Capability.DEVICE_JSON):
        rule = DETECTION[flag]
        assert isinstance(rule, SchemaPath)
        paths.add(rule.path)
    return dataclasses.replace(caps, schema_paths=caps.schema_paths - paths)


CapsEdit = Callable[[QEMUCaps], QEMUCaps]

NETWORKS = {
    "lan": parse_network(
        "<network><name>lan</name><forward mode='bridge'/><bridge name='br-lan'/></network>"
    ),
    "vfs": parse_network(
        "<network><name>vfs</name><forward mode='hostdev' managed='yes'>"
        "<pf dev='eth9'/></forward></network>"
    ),
}


def lookup_network(name: str) -> NetworkDef:
    """The test's network pools, refusing an unknown name as the state root does."""
    try:
        return NETWORKS[name]
    except KeyError:
        raise StateError(f"no network named {name!r} is defined (qctl net-define)") from None


def counting_macs() -> Callable[[], MACAddress]:
    """A MAC source giving 52:54:00:00:00:01, :02, … (deterministic plans)."""
    counter = iter(range(1, 1 << 24))

    def new_mac() -> MACAddress:
        return MACAddress(b"\x52\x54\x00" + next(counter).to_bytes(3, "big"))

    return new_mac


@dataclasses.dataclass(frozen=True)
class Case:
    """How to dry-run one golden XML: host facts and edits to the recorded caps."""

    vhost_net: bool = False
    edits: tuple[CapsEdit, ...] = ()


# Every XML in data/argv needs an entry (test_every_xml_has_a_case checks).
CASES: dict[str, Case] = {
    # interface types
    "user-pc-tcg": Case(),
    "ethernet-q35": Case(),
    "bridge-pc": Case(),
    "network-q35": Case(),
    "network-hostdev-pool": Case(),
    "network-undefined": Case(),
    "hostdev-interface-q35": Case(),
    "hostdev-pc": Case(),
    "usb-hostdev-interface": Case(),
    # models
    "models-pc": Case(),
    "netfront-xen": Case(edits=(with_xen,)),
    "netfront-no-xen": Case(),
    # vhost-net: <driver name> × KVM/TCG × /dev/vhost-net opens or not
    "vhost-default-available": Case(vhost_net=True),
    "vhost-default-unavailable": Case(vhost_net=False),
    "vhost-default-non-virtio": Case(vhost_net=True),
    "vhost-forced-available": Case(vhost_net=True),
    "vhost-forced-off": Case(vhost_net=True),
    "vhost-forced-missing": Case(vhost_net=False),
    "vhost-forced-non-virtio": Case(vhost_net=True),
    "vhost-tcg-forced": Case(vhost_net=True),
    # NIC properties
    "multiqueue": Case(vhost_net=True),
    "failover": Case(),
    "failover-unsupported": Case(edits=(without_failover,)),
    # the failover test rig: an emulated e1000e standing in for the VF
    "failover-standin": Case(),
    "failover-standin-kv": Case(edits=(without_json,)),
    "failover-standin-pc": Case(),
    "boot-mtu-queue-sizes": Case(),
    "link-down": Case(),
    "placement-q35": Case(),
    "kv-syntax": Case(edits=(without_json,)),
    # the examples compared with libvirt (tests/qemu/test_libvirt_parity.py): this host
    # has no /dev/vhost-net, except where compare-libvirt gave libvirt a stand-in
    "libvirt-virtio-full": Case(),
    "libvirt-models": Case(),
    "libvirt-failover-virtio": Case(),
    "libvirt-tcg-vhost": Case(),
    "libvirt-vhost-missing": Case(),
    "libvirt-vhostnet-virtio": Case(vhost_net=True),
    "libvirt-upstream-hostdev": Case(),
    "libvirt-upstream-teaming": Case(),
    "libvirt-upstream-net-virtio": Case(),
    "libvirt-upstream-hostdev-pci-address": Case(),
    # issue 12: what libvirt gets right, and nothing silently ignored
    "hostdev-teaming": Case(),
    "hostdev-unassigned": Case(),
    "hostdev-twice": Case(),
    "usb-net-pc": Case(),
    "models-case": Case(),
    "address-empty": Case(),
    "target-unmanaged": Case(),
    "bandwidth-refused": Case(),
    "libvirt-upstream-disk-virtio": Case(),
    "libvirt-upstream-disk-sata-device": Case(),
    "libvirt-upstream-disk-scsi-vpd": Case(),
    "libvirt-upstream-q35-virt-manager": Case(),
    # disks: raw and qcow2 virtio, sata cdroms (one empty), scsi on an implicit virtio-scsi
    "disk-virtio-q35": Case(),
    "disk-sata-cdrom-q35": Case(),
    "disk-scsi-pc": Case(),
    "disk-cdrom-virtio": Case(),
    "disk-scsi-lsi": Case(),
    # serial ports of every kind, and a <console> that is serial port 0
    "serial-kinds": Case(),
    # a device qctl would keep but not create
    "not-created-video": Case(),
}


def case_caps(case: Case) -> QEMUCaps:
    caps = load_caps()
    for edit in case.edits:
        caps = edit(caps)
    return caps


def run_case(name: str) -> str:
    """The golden text of case ``name``: argv one per line, or the refusal."""
    case = CASES[name]
    try:
        defn = parse_domain((DATA / f"{name}.xml").read_bytes(), source=f"{name}.xml")
        argv = dry_run_argv(
            defn,
            case_caps(case),
            vhost_net_available=case.vhost_net,
            networks=lookup_network,
            new_mac=counting_macs(),
        )
    except QctlError as exc:
        return f"{type(exc).__name__}: {exc}\n"
    return "".join(f"{arg}\n" for arg in argv)


def golden_path(name: str, text: str) -> Path:
    return DATA / (f"{name}.err" if not text.startswith("/") else f"{name}.args")


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str) -> None:
    text = run_case(name)
    path = golden_path(name, text)
    other = path.with_suffix(".err" if path.suffix == ".args" else ".args")
    if REGEN:
        path.write_text(text)
        other.unlink(missing_ok=True)
    assert not other.exists(), f"{other.name} is stale: the case now gives {path.name}"
    assert path.exists(), f"{path.name} missing; regenerate with QCTL_REGEN_GOLDEN=1"
    assert text == path.read_text()


def test_every_xml_has_a_case() -> None:
    xmls = {p.stem for p in DATA.glob("*.xml")}
    assert xmls == set(CASES)
    outputs = {p.stem for p in DATA.glob("*.args")} | {p.stem for p in DATA.glob("*.err")}
    assert outputs <= set(CASES), "golden outputs without a case"


# -- what the goldens show, stated as assertions ---------------------------------------------


def golden_argv(name: str) -> list[str]:
    return (DATA / f"{name}.args").read_text().splitlines()


def option_values(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == option]


def nic_props(name: str) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """The JSON ``-netdev`` and NIC ``-device`` property dicts of a golden argv."""
    argv = golden_argv(name)
    netdevs = [json.loads(v) for v in option_values(argv, "-netdev")]
    devices = [json.loads(v) for v in option_values(argv, "-device")]
    nics = [d for d in devices if d["driver"] not in ("pcie-root-port", "isa-serial")]
    return netdevs, nics


def test_vhost_default_with_and_without_the_device() -> None:
    on, _ = nic_props("vhost-default-available")
    off, _ = nic_props("vhost-default-unavailable")
    assert on == [
        {
            "type": "tap",
            "fd": "tapfd-net0-0",
            "vhost": True,
            "vhostfd": "vhostfd-net0-0",
            "id": "hostnet0",
        }
    ]
    assert off == [{"type": "tap", "fd": "tapfd-net0-0", "id": "hostnet0"}]


@pytest.mark.parametrize(
    ("name", "vhost"),
    [
        ("vhost-forced-available", True),
        ("vhost-forced-off", False),
        ("vhost-tcg-forced", False),  # libvirt ignores name='vhost' without KVM
        ("vhost-default-non-virtio", False),
    ],
)
def test_vhost_choice_reaches_argv_and_live_xml(name: str, vhost: bool) -> None:
    netdevs, _ = nic_props(name)
    assert ("vhost" in netdevs[0]) is vhost
    defn = parse_domain((DATA / f"{name}.xml").read_bytes())
    result = dry_run(defn, load_caps(), vhost_net_available=CASES[name].vhost_net)
    iface = result.domain.interfaces[0]
    assert iface.target_dev is not None and str(iface.target_dev) == "vnet0"
    if iface.is_virtio:
        assert iface.driver is not None
        assert iface.driver.name is (NetDriverName.VHOST if vhost else NetDriverName.QEMU)
    else:
        assert iface.driver is None or iface.driver.name is not NetDriverName.QEMU


def test_vhost_required_but_missing_is_refused() -> None:
    defn = parse_domain((DATA / "vhost-forced-missing.xml").read_bytes())
    with pytest.raises(UnsupportedError, match="vhost-net was requested but is unavailable") as e:
        dry_run_argv(defn, load_caps(), vhost_net_available=False)
    assert e.value.capability == "vhost-net"


def test_vhost_availability_defaults_to_the_caps_host_facts() -> None:
    defn = parse_domain((DATA / "vhost-default-available.xml").read_bytes())
    caps = load_caps()
    assert not caps.host.vhost_net
    assert "vhost" not in json.loads(option_values(dry_run_argv(defn, caps), "-netdev")[0])
    with_device = dataclasses.replace(caps, host=dataclasses.replace(caps.host, vhost_net=True))
    netdev = json.loads(option_values(dry_run_argv(defn, with_device), "-netdev")[0])
    assert netdev["vhost"] is True


def test_multiqueue() -> None:
    netdevs, nics = nic_props("multiqueue")
    assert netdevs[0]["fds"] == "tapfd-net0-0:tapfd-net0-1:tapfd-net0-2:tapfd-net0-3"
    assert netdevs[0]["vhostfds"] == ("vhostfd-net0-0:vhostfd-net0-1:vhostfd-net0-2:vhostfd-net0-3")
    assert (nics[0]["mq"], nics[0]["vectors"]) == (True, 10)
    assert netdevs[1] == {"type": "tap", "fds": "tapfd-net1-0:tapfd-net1-1", "id": "hostnet1"}
    assert (nics[1]["mq"], nics[1]["vectors"]) == (True, 6)


def test_failover_pair() -> None:
    netdevs, nics = nic_props("failover")
    assert [n["id"] for n in netdevs] == ["hostua-backup0"]
    virtio, vfio = nics
    assert virtio["failover"] is True and virtio["id"] == "ua-backup0"
    assert vfio["driver"] == "vfio-pci"
    assert vfio["failover_pair_id"] == "ua-backup0"
    assert "failover" not in vfio


@pytest.mark.parametrize(
    ("name", "capability", "words"),
    [
        ("failover-unsupported", "virtio_net_failover", "needs virtio-net failover"),
        ("netfront-no-xen", "xen_pv_nic", "xen-net-device"),
        ("usb-hostdev-interface", "usb-hostdev-interface", "USB host device cannot be assigned"),
        ("network-hostdev-pool", "network-bridge", "is a hostdev pool"),
    ],
)
def test_refusals_name_the_capability(name: str, capability: str, words: str) -> None:
    case = CASES[name]
    defn = parse_domain((DATA / f"{name}.xml").read_bytes())
    with pytest.raises(UnsupportedError, match=words) as info:
        dry_run_argv(
            defn, case_caps(case), vhost_net_available=case.vhost_net, networks=lookup_network
        )
    assert info.value.capability == capability


def test_vhost_on_a_non_virtio_model_is_invalid() -> None:
    """Refused when the document is read (libvirt refuses it when the domain starts)."""
    with pytest.raises(ValidationError, match="driver name='vhost' needs a virtio model"):
        parse_domain((DATA / "vhost-forced-non-virtio.xml").read_bytes())


def test_network_needs_a_lookup() -> None:
    defn = parse_domain((DATA / "network-q35.xml").read_bytes())
    with pytest.raises(StateError, match="no network named 'lan'"):
        dry_run_argv(defn, load_caps())


def test_netfront_has_no_pci_address() -> None:
    _, nics = nic_props("netfront-xen")
    assert nics == [
        {"driver": "xen-net-device", "netdev": "hostnet0", "id": "net0", "mac": "52:54:00:aa:00:01"}
    ]


def test_no_model_is_rtl8139() -> None:
    _, nics = nic_props("user-pc-tcg")
    assert nics[0]["driver"] == "rtl8139"


def test_boot_mtu_and_queue_sizes() -> None:
    _, nics = nic_props("boot-mtu-queue-sizes")
    virtio, e1000e = nics
    assert {k: virtio[k] for k in ("rx_queue_size", "tx_queue_size", "host_mtu", "bootindex")} == {
        "rx_queue_size": 1024,
        "tx_queue_size": 512,
        "host_mtu": 9000,
        "bootindex": 1,
    }
    assert e1000e["bootindex"] == 2
    assert "host_mtu" not in e1000e


def test_link_down_has_no_command_line_effect() -> None:
    down = golden_argv("link-down")
    up_xml = (DATA / "link-down.xml").read_text().replace("<link state='down'/>", "")
    up = dry_run_argv(parse_domain(up_xml), load_caps(), new_mac=counting_macs())
    assert down == up


def test_key_value_syntax_escapes_commas() -> None:
    argv = golden_argv("kv-syntax")
    # Domain names cannot hold commas (one name rule for validate and start): the file can.
    assert "file,id=charserial0,path=/var/log/guest,,1.log" in argv
    netdevs = option_values(argv, "-netdev")
    assert netdevs[0] == "tap,fds=tapfd-net0-0:tapfd-net0-1,id=hostnet0"
    assert netdevs[1] == "user,id=hostnet1"
    devices = option_values(argv, "-device")
    assert (
        "virtio-net-pci,mq=on,vectors=6,rx_queue_size=512,host_mtu=1400,netdev=hostnet0,"
        "id=net0,mac=52:54:00:aa:00:01,bootindex=1,bus=pci.0,addr=0x2"
    ) in devices
    assert "vfio-pci,host=0000:03:07.1,id=hostdev0,bus=pci.0,addr=0x4" in devices


def test_format_props_escapes_every_comma() -> None:
    props: dict[str, str | int | bool] = {"driver": "a,b", "x": "1,,2", "on": True, "n": 3}
    assert format_props(props, as_json=False, head="driver") == "a,,b,x=1,,,,2,on=on,n=3"
    assert format_props(props, as_json=True, head="driver") == (
        '{"driver":"a,b","x":"1,,2","on":true,"n":3}'
    )


def test_placement_uses_declared_ports_first() -> None:
    argv = golden_argv("placement-q35")
    ports = [json.loads(v) for v in option_values(argv, "-device")][:3]
    assert [(p["id"], p["addr"]) for p in ports] == [
        ("pci.1", "0x2"),
        ("pci.2", "0x1"),
        ("pci.3", "0x3"),
    ]
    _, nics = nic_props("placement-q35")
    assert [(n["id"], n["bus"], n["addr"]) for n in nics] == [
        ("net0", "pci.2", "0x0"),  # explicit address kept
        ("net1", "pci.1", "0x0"),  # the declared empty port
        ("net2", "pci.3", "0x0"),  # a new port
    ]
    assert nics[1]["mac"] == "52:54:00:00:00:01"  # generated, in document order


# -- the dry run itself ---------------------------------------------------------------------


def test_dry_run_touches_nothing_and_uses_symbols(monkeypatch: pytest.MonkeyPatch) -> None:
    defn = parse_domain((DATA / "multiqueue.xml").read_bytes())
    caps = load_caps()

    def no_io(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError(f"the dry run did I/O: {args}")

    for module, name in ((os, "open"), (builtins, "open"), (socket, "socket")):
        monkeypatch.setattr(module, name, no_io)
    result = dry_run(defn, caps, vhost_net_available=True, new_mac=counting_macs())
    monkeypatch.undo()
    assert f"socket,id=charmonitor,{DRY_RUN_MONITOR},server=on,wait=off" in result.argv
    assert result.argv[0] == "/usr/bin/qemu-system-x86_64"
    assert result.nics["net0"] == NICResources(
        tap_fds=tuple(f"tapfd-net0-{q}" for q in range(4)),
        vhost_fds=tuple(f"vhostfd-net0-{q}" for q in range(4)),
        tap_name="vnet0",
    )
    names = [str(i.target_dev) for i in result.domain.interfaces]
    assert names == ["vnet0", "vnet1"]


def test_tap_names_keep_target_dev_and_skip_taken_names() -> None:
    xml = (DATA / "ethernet-q35.xml").read_text().replace("tap-eth0", "vnet0")
    result = dry_run(parse_domain(xml), load_caps())
    assert [str(i.target_dev) for i in result.domain.interfaces] == ["vnet0", "vnet1"]


def test_binary_override_and_default() -> None:
    defn = parse_domain((DATA / "user-pc-tcg.xml").read_bytes())
    assert dry_run_argv(defn, load_caps(), binary="/opt/qemu")[0] == "/opt/qemu"
    bare = dataclasses.replace(defn, devices=dataclasses.replace(defn.devices, emulator=None))
    assert dry_run_argv(bare, load_caps())[0] == "qemu-system-x86_64"


def test_dry_run_matches_build_command_with_the_same_resources() -> None:
    """The dry run adds nothing of its own: build_command with its resources gives its argv."""
    defn = parse_domain((DATA / "bridge-pc.xml").read_bytes())
    caps = load_caps()
    result = dry_run(defn, caps)
    again = build_command(
        result.domain,
        features_from_caps(caps),
        result.nics,
        binary=result.argv[0],
        monitor=DRY_RUN_MONITOR,
    )
    assert again == result.argv


def test_interfaces_without_taps_get_no_resources() -> None:
    defn = parse_domain((DATA / "hostdev-pc.xml").read_bytes())
    result = dry_run(defn, load_caps())
    assert result.nics == {}
    user = result.domain.interfaces[0]
    assert user.type is InterfaceType.USER and user.target_dev is None


def test_plan_is_deterministic_with_injected_macs() -> None:
    xml = (DATA / "placement-q35.xml").read_bytes()
    first = plan(parse_domain(xml), load_caps(), new_mac=counting_macs())
    second = plan(parse_domain(xml), load_caps(), new_mac=counting_macs())
    assert first == second


def _defn(name: str) -> DomainDef:
    return parse_domain((DATA / f"{name}.xml").read_bytes())


def test_features_follow_caps() -> None:
    caps = load_caps()
    assert features_from_caps(caps) == Features(True, True, True)
    assert features_from_caps(without_json(caps)) == Features(False, False, True)
    assert features_from_caps(without_failover(caps)).failover is False


def test_a_qemu_outside_the_system_prefixes_gets_its_data_directories(tmp_path: Path) -> None:
    """The -L of :mod:`qctl.caps.install` follow the binary, before anything else."""
    binary = tmp_path / "usr" / "bin" / "qemu-system-x86_64"
    binary.parent.mkdir(parents=True)
    binary.touch()
    (tmp_path / "usr" / "share" / "qemu").mkdir(parents=True)
    caps = dataclasses.replace(load_caps(), binary=str(binary))
    features = features_from_caps(caps)
    assert features.data_dirs == (f"{tmp_path}/usr/share/qemu",)
    defn = _defn("link-down")
    bare = dataclasses.replace(defn, devices=dataclasses.replace(defn.devices, items=()))
    argv = build_command(bare, features, {}, binary=str(binary), monitor="fd=3")
    assert argv[:4] == [str(binary), "-L", f"{tmp_path}/usr/share/qemu", "-name"]


# -- issue 12: what libvirt gets right, each with the XML that showed the bug ---------------


def devices_of(name: str) -> list[dict[str, object]]:
    return [json.loads(value) for value in option_values(golden_argv(name), "-device")]


def test_a_hostdev_with_transient_teaming_gets_failover_pair_id() -> None:
    (vfio,) = [d for d in devices_of("hostdev-teaming") if d["driver"] == "vfio-pci"]
    assert vfio["failover_pair_id"] == "ua-backup0"
    (virtio,) = [d for d in devices_of("hostdev-teaming") if d["driver"] == "virtio-net-pci"]
    assert virtio["failover"] is True


def test_a_hostdev_with_transient_teaming_needs_failover_pair_id() -> None:
    defn = parse_domain((DATA / "hostdev-teaming.xml").read_bytes(), source="t.xml")
    caps = load_caps()
    props = {d: dict(p) for d, p in caps.device_properties.items()}
    props["vfio-pci"].pop("failover_pair_id", None)
    no_pair = dataclasses.replace(caps, device_properties=props)
    with pytest.raises(UnsupportedError, match=r"^t\.xml:18: .*failover_pair_id"):
        dry_run(defn, no_pair)


def test_the_same_host_device_twice_is_refused_as_in_libvirt() -> None:
    text = (DATA / "hostdev-twice.err").read_text()
    assert "host PCI device 0000:05:00.0 already exists in the domain" in text


def test_an_unassigned_hostdev_is_not_given_to_the_guest() -> None:
    hosts = [d["host"] for d in devices_of("hostdev-unassigned")]
    assert hosts == ["0000:05:00.1"]
    defn = parse_domain((DATA / "hostdev-unassigned.xml").read_bytes())
    live = dry_run(defn, load_caps()).domain
    assert [(h.alias, h.address) for h in live.hostdevs] == [
        ("hostdev0", None),
        ("hostdev1", PCIAddress(0, 0, 2, 0)),
    ]


def test_usb_net_goes_on_the_usb_bus() -> None:
    devices = devices_of("usb-net-pc")
    assert devices[0] == {
        "driver": "piix3-usb-uhci",
        "id": "usb",
        "bus": "pci.0",
        "addr": "0x1.0x2",
    }
    usb = [d for d in devices if d["driver"] == "usb-net"]
    assert [(d["bus"], d["port"]) for d in usb] == [("usb.0", "1"), ("usb.0", "2")]
    assert all("addr" not in d for d in usb)
    q35 = (DATA / "usb-net-pc.xml").read_text().replace("machine='pc'", "machine='q35'")
    with pytest.raises(UnsupportedError, match=r"^q35\.xml:11: .*usb-net NIC on a q35"):
        dry_run(parse_domain(q35, source="q35.xml"), load_caps())


def test_model_names_are_matched_as_libvirt_matches_them() -> None:
    devices = devices_of("models-case")
    assert [d["driver"] for d in devices if d["driver"] != "pcie-root-port"] == [
        "virtio-net-pci",
        "vfio-pci",
        "e1000e",
    ]
    virtio = devices[3]
    assert virtio["failover"] is True and virtio["mq"] is True  # VIRTIO is virtio: teaming too


def test_an_empty_pci_address_is_assigned_not_slot_0() -> None:
    assert [d["addr"] for d in devices_of("address-empty")] == ["0x2", "0x3"]
    defn = parse_domain((DATA / "address-empty.xml").read_bytes())
    live = dry_run(defn, load_caps()).domain
    assert not any(i.auto_address for i in live.interfaces)  # the live XML has the address
    assert '<address type="pci"/>' in format_xml(defn)


def test_start_and_dry_run_errors_name_the_file_and_line() -> None:
    for path in sorted(DATA.glob("*.err")):
        if path.stem.startswith("libvirt-"):
            continue  # compared with libvirt's own message
        assert path.read_text().split(": ", 2)[1].startswith(f"{path.stem}.xml:"), path.name
