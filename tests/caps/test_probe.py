"""Probing: replayed QEMU sessions (as recorded, and edited to stand for other QEMUs), the
spawned command line, bad inputs and cancellation — each ending typed, leaving nothing."""

from __future__ import annotations

import _ctypes
import asyncio
import dataclasses
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from fakeqmp import RECORDING_10_0, FakeQMPServer, Recording, read_log

from caps.entitled import comparable, module_dir
from caps.support import HOST, FakeQEMU, Leftovers, Replay, start_log, wait_until
from qctl.caps import Capability, probe, resolve_binary
from qctl.errors import (
    ProcessError,
    QMPConnectionError,
    QMPProtocolError,
    QMPTimeoutError,
)

C = Capability
CAPTURE_CAPS = Path(__file__).resolve().parents[2] / "scripts" / "capture-caps"
# Everything QEMU 7.2 has, as qctl sees it; it has no Xen PV NIC device (QEMU 8.2 added it).
FLAGS_7_2 = frozenset(Capability) - {C.XEN_PV_NIC, C.RUN_WITH_USER}


async def test_replayed_7_2_session(recording: Recording, replay: Replay) -> None:
    caps = await replay(recording)
    assert caps.version[:2] == (7, 2)
    assert caps.package.startswith("Debian 1:7.2")
    assert caps.flags == FLAGS_7_2
    assert caps.binary is None and caps.host == HOST
    assert set(caps.device_properties) == {
        "virtio-net-pci",
        "e1000",
        "e1000e",
        "rtl8139",
        "vfio-pci",
        "pcie-root-port",
    }
    assert caps.device_properties["virtio-net-pci"]["failover"] == "bool"
    assert caps.default_machine is not None and caps.default_machine.alias == "pc"
    assert "DEVICE_DELETED" in caps.events  # from the schema: 7.2 has no query-events


async def test_without_the_failover_property_there_is_no_failover(
    recording: Recording, replay: Replay
) -> None:
    """A QEMU older than 4.2: virtio-net-pci has no 'failover' property."""
    props = recording.reply("device-list-properties", {"typename": "virtio-net-pci"})
    props[:] = [p for p in props if p["name"] != "failover"]
    caps = await replay(recording)
    assert not caps.has(C.VIRTIO_NET_FAILOVER)
    assert caps.flags == FLAGS_7_2 - {C.VIRTIO_NET_FAILOVER}


async def test_a_xen_net_device_type_means_a_xen_pv_nic(
    recording: Recording, replay: Replay
) -> None:
    recording.reply("qom-list-types").append({"name": "xen-net-device", "parent": "xen-device"})
    xen_props = [{"name": "netdev", "type": "str"}, {"name": "mac", "type": "str"}]
    recording.set_reply("device-list-properties", {"typename": "xen-net-device"}, xen_props)
    caps = await replay(recording)
    assert caps.flags == FLAGS_7_2 | {C.XEN_PV_NIC}
    assert dict(caps.device_properties["xen-net-device"]) == {"mac": "str", "netdev": "str"}


def _entity(schema: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(e for e in schema if e["name"] == name)


async def test_an_older_qemu_without_json_netdev_and_wait_unplug(
    recording: Recording, replay: Replay
) -> None:
    """Roughly QEMU 5.x: netdev_add takes free-form arguments, MigrationStatus has no
    wait-unplug, device_add no JSON features, and query-events still exists."""
    schema = recording.reply("query-qmp-schema")
    _entity(schema, "netdev_add")["arg-type"] = "legacy-netdev-args"
    schema.append(
        {
            "name": "legacy-netdev-args",
            "meta-type": "object",
            "members": [{"name": "type", "type": "str"}, {"name": "id", "type": "str"}],
        }
    )
    migration_info = _entity(schema, _entity(schema, "query-migrate")["ret-type"])
    status = next(m for m in migration_info["members"] if m["name"] == "status")
    status_enum = _entity(schema, status["type"])
    status_enum["values"].remove("wait-unplug")
    status_enum["members"] = [m for m in status_enum["members"] if m["name"] != "wait-unplug"]
    del _entity(schema, "device_add")["features"]
    recording.set_reply("query-events", None, [{"name": "SHUTDOWN"}, {"name": "QEMU_OLD_EVENT"}])
    caps = await replay(recording)
    assert caps.flags == FLAGS_7_2 - {C.NETDEV_JSON, C.MIGRATION_WAIT_UNPLUG, C.DEVICE_JSON}
    assert {"QEMU_OLD_EVENT", "DEVICE_DELETED"} <= caps.events


async def test_independent_queries_are_asked_at_once(recording: Recording, sockdir: str) -> None:
    """Each first-wave reply is held until every first-wave query has arrived: a probe
    asking one at a time would get errors instead."""
    first_wave = {
        "qom-list-types",
        "query-qmp-schema",
        "query-version",
        "query-commands",
        "query-events",
        "query-machines",
        "query-kvm",
        "query-command-line-options",
    }
    all_arrived = asyncio.Event()
    async with FakeQMPServer(os.path.join(sockdir, "s"), recording=recording) as server:

        def held(command: str) -> Any:
            async def answer(arguments: dict[str, Any]) -> dict[str, Any]:
                if first_wave <= {name for name, _ in server.received}:
                    all_arrived.set()
                try:
                    async with asyncio.timeout(5):
                        await all_arrived.wait()
                except TimeoutError:
                    return {"error": {"class": "GenericError", "desc": "asked one at a time"}}
                outcome = recording.outcome(command, arguments)
                assert outcome is not None
                if "error" in outcome:
                    return {"error": outcome["error"]}
                return {"return": outcome["reply"]}

            return answer

        for command in first_wave:
            server.handlers[command] = held(command)
        caps = await probe(qmp_socket=server.path, host=HOST)
    assert caps.flags == FLAGS_7_2
    asked = [(name, args) for name, args in server.received if name != "qmp_capabilities"]
    assert sorted(name for name, _ in asked) == sorted(
        [*first_wave, *["device-list-properties"] * 6]
    )


async def test_a_spawned_probe_uses_the_probe_command_line(
    fake_qemu: FakeQEMU, leftovers: Leftovers, recording: Recording, replay: Replay
) -> None:
    binary = fake_qemu()
    caps = await probe(binary, host=HOST)
    (start,) = read_log(start_log(binary))
    argv = start["argv"]
    assert argv[:7] == [
        "-S",
        "-no-user-config",
        "-nodefaults",
        "-nographic",
        "-machine",
        "none,accel=kvm:tcg",
        "-qmp",
    ]
    assert re.fullmatch(r"unix:.*/qctl-probe-[^/]+/qmp\.sock,server=on,wait=off", argv[7])
    assert start["dir_mode"] == 0o700
    assert caps.binary == str(binary.resolve())
    assert caps == dataclasses.replace(await replay(recording), binary=caps.binary)
    leftovers.check()


async def test_a_binary_found_on_path(
    fake_qemu: FakeQEMU, leftovers: Leftovers, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = fake_qemu(name="qemu-system-fake")
    monkeypatch.setenv("PATH", f"{binary.parent}{os.pathsep}{os.environ['PATH']}")
    caps = await probe("qemu-system-fake", host=HOST)
    assert caps.binary == str(binary.resolve())
    leftovers.check()


async def test_a_binary_that_exits_at_once(leftovers: Leftovers) -> None:
    with pytest.raises(ProcessError, match=r"/bin/true exited \(0\) before answering QMP") as info:
        await probe("/bin/true")
    assert info.value.returncode == 0
    leftovers.check()


async def test_a_binary_that_fails_reports_its_stderr(
    fake_qemu: FakeQEMU, leftovers: Leftovers
) -> None:
    with pytest.raises(ProcessError, match="fake failure") as info:
        await probe(fake_qemu("fail"))
    assert info.value.returncode == 1
    assert info.value.stderr_tail == "qemu-system-x86_64: -machine none: fake failure"
    leftovers.check()


async def test_a_qemu_that_dies_mid_probe(fake_qemu: FakeQEMU, leftovers: Leftovers) -> None:
    with pytest.raises(ProcessError, match=r"exited \(2\)") as info:
        await probe(fake_qemu("die"))
    assert info.value.returncode == 2
    assert "died on query-qmp-schema" in info.value.stderr_tail
    leftovers.check()


async def test_a_text_file_is_not_qemu(tmp_path: Path, leftovers: Leftovers) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a program\n")
    with pytest.raises(ProcessError, match=r"cannot run .*notes\.txt: Permission denied"):
        await probe(text)
    text.chmod(0o755)
    with pytest.raises(ProcessError, match="Exec format error"):
        await probe(text)
    leftovers.check()


async def test_a_missing_binary(tmp_path: Path) -> None:
    with pytest.raises(ProcessError, match="no such QEMU binary"):
        await probe(tmp_path / "absent")
    with pytest.raises(ProcessError, match="no such QEMU binary"):
        await probe("qctl-no-such-qemu-on-path")


async def test_a_binary_that_never_listens_is_killed_after_the_timeout(
    tmp_path: Path, leftovers: Leftovers
) -> None:
    sleeper = tmp_path / "sleeper"
    sleeper.write_text("#!/bin/sh\nexec sleep 1000\n")
    sleeper.chmod(0o755)
    with pytest.raises(QMPTimeoutError, match=r"no complete QMP answer within 0\.5s"):
        await probe(sleeper, timeout=0.5)
    leftovers.check()


@pytest.mark.parametrize(
    ("mode", "error"), [("silent", QMPTimeoutError), ("garbage", QMPProtocolError)]
)
async def test_a_binary_that_does_not_speak_qmp_is_stopped(
    fake_qemu: FakeQEMU, leftovers: Leftovers, mode: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await probe(fake_qemu(mode), timeout=1)
    leftovers.check()


async def test_a_socket_that_is_not_qmp(sockdir: str) -> None:
    async with FakeQMPServer(os.path.join(sockdir, "s"), mode="garbage") as server:
        with pytest.raises(QMPProtocolError, match="does not speak QMP"):
            await probe(qmp_socket=server.path)


async def test_a_socket_that_never_answers(sockdir: str) -> None:
    async with FakeQMPServer(os.path.join(sockdir, "s"), mode="silent") as server:
        with pytest.raises(QMPTimeoutError, match=r"within 0\.3s"):
            await probe(qmp_socket=server.path, timeout=0.3)


async def test_a_missing_socket(sockdir: str) -> None:
    with pytest.raises(QMPConnectionError, match="No such file or directory"):
        await probe(qmp_socket=os.path.join(sockdir, "absent.sock"))


async def test_cancelling_a_probe_stops_qemu_and_removes_its_directory(
    fake_qemu: FakeQEMU, leftovers: Leftovers
) -> None:
    binary = fake_qemu("silent")
    task = asyncio.create_task(probe(binary))
    await wait_until(lambda: bool(read_log(start_log(binary))))
    assert len(list(leftovers.tmpdir.iterdir())) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    leftovers.check()


async def test_probe_needs_exactly_one_target() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        await probe()
    with pytest.raises(ValueError, match="exactly one"):
        await probe("/bin/true", qmp_socket="/tmp/x")


@pytest.mark.qemu
async def test_the_installed_qemu(
    qemu_binary: str, qemu_version: str, leftovers: Leftovers
) -> None:
    caps = await probe(qemu_binary)
    assert f"qemu{caps.version[0]}.{caps.version[1]}" == qemu_version
    for flag in (C.VIRTIO_NET_FAILOVER, C.NETDEV_JSON, C.VFIO_PCI, C.KVM_PRESENT):
        assert caps.has(flag), flag
    # QEMU 8.2 added the Xen PV NIC.
    assert caps.has(C.XEN_PV_NIC) == (caps.version >= (8, 2, 0))
    assert caps.binary == resolve_binary(qemu_binary)
    leftovers.check()


async def test_replayed_10_0_session(replay: Replay) -> None:
    """Debian's QEMU 10.0 from backports has everything qctl looks for."""
    caps = await replay(Recording.load(RECORDING_10_0))
    assert caps.version[:2] == (10, 0)
    assert caps.package.startswith("Debian 1:10.0")
    assert caps.flags == frozenset(Capability)
    assert dict(caps.device_properties["xen-net-device"])["netdev"] == "str"
    assert {"UNPLUG_PRIMARY", "FAILOVER_NEGOTIATED", "DEVICE_UNPLUG_GUEST_ERROR"} <= caps.events


@pytest.mark.qemu
async def test_the_recording_replays_to_what_the_real_probe_sees(
    qemu_binary: str, recording: Recording, replay: Replay
) -> None:
    real = await probe(qemu_binary, host=HOST)
    recorded, real = comparable(await replay(recording), real, module_dir(qemu_binary))
    assert recorded == real


@pytest.mark.qemu
async def test_capture_caps_records_a_replayable_session(
    qemu_binary: str, tmp_path: Path, replay: Replay
) -> None:
    output = tmp_path / "session.jsonl.gz"
    proc = await asyncio.create_subprocess_exec(
        str(CAPTURE_CAPS), "--binary", qemu_binary, "--output", str(output)
    )
    assert await proc.wait() == 0
    real = await probe(qemu_binary, host=HOST)
    assert await replay(Recording.load(output)) == dataclasses.replace(real, binary=None)


async def test_replays_compare_equal_but_for_the_optional_module_types(
    recording: Recording, replay: Replay, tmp_path: Path
) -> None:
    """A machine without the optional GL module (``tmp_path`` as its module directory) and a
    newer Debian revision: comparable. Its module file there, or any other type: not."""
    recorded = await replay(recording)
    types = recording.reply("qom-list-types")
    types[:] = [t for t in types if t["name"] != "virtio-gpu-gl-device"]
    version = recording.reply("query-version")
    version["qemu"]["micro"] += 1
    version["package"] += "+deb12u99"
    elsewhere = await replay(recording)
    assert elsewhere.version[2] == recorded.version[2] + 1
    left, right = comparable(recorded, elsewhere, tmp_path)
    assert left == right
    # A shared object whose libraries are all there stands in for the module.
    shutil.copy(_ctypes.__file__, tmp_path / "hw-display-virtio-gpu-gl.so")
    with pytest.raises(AssertionError, match=r"hw-display-virtio-gpu-gl\.so in .* loads, yet"):
        comparable(recorded, elsewhere, tmp_path)
    (tmp_path / "hw-display-virtio-gpu-gl.so").unlink()
    types.append({"name": "qctl-unknown-device", "parent": "device"})
    left, right = comparable(recorded, await replay(recording), tmp_path)
    assert right.qom_types - left.qom_types == {"qctl-unknown-device"}
    version["qemu"]["minor"] += 1
    with pytest.raises(AssertionError, match=r"\(7, 3, 23\)"):
        comparable(recorded, await replay(recording), tmp_path)
