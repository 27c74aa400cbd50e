"""The vhost-net decision table, with the device simulated by a regular file (or its absence)."""

from __future__ import annotations

import logging
import os
import resource
from pathlib import Path

import pytest
from support import open_fd_count

from qctl.errors import HostError, UnsupportedError
from qctl.host import VhostChoice, VhostMode, choose_vhost, open_vhost_net

MODES: list[VhostMode | None] = [None, "vhost", "qemu"]


@pytest.fixture
def device(tmp_path: Path) -> Path:
    """Something that opens read-write, standing in for /dev/vhost-net."""
    path = tmp_path / "vhost-net"
    path.write_bytes(b"")
    return path


@pytest.fixture
def missing(tmp_path: Path) -> Path:
    """A /dev/vhost-net that is not there."""
    return tmp_path / "no-vhost-net"


# (mode, accel_is_kvm, device opens) → vhost used, or the error text. Virtio NIC throughout.
TABLE: list[tuple[VhostMode | None, bool, bool, bool | str]] = [
    (None, True, True, True),
    (None, True, False, False),  # with a warning
    (None, False, True, False),
    (None, False, False, False),
    ("vhost", True, True, True),
    ("vhost", True, False, "vhost-net was requested but is unavailable"),
    ("vhost", False, True, False),  # libvirt: no vhost-net without KVM, even when asked
    ("vhost", False, False, False),
    ("qemu", True, True, False),
    ("qemu", True, False, False),
    ("qemu", False, True, False),
    ("qemu", False, False, False),
]


@pytest.mark.parametrize(("mode", "kvm", "opens", "expected"), TABLE)
@pytest.mark.parametrize("queues", [1, 3])
def test_decision_table(
    device: Path,
    missing: Path,
    mode: VhostMode | None,
    kvm: bool,
    opens: bool,
    expected: bool | str,
    queues: int,
) -> None:
    path = str(device if opens else missing)
    before = open_fd_count()
    if isinstance(expected, str):
        with pytest.raises(UnsupportedError, match=expected) as info:
            choose_vhost(mode, accel_is_kvm=kvm, virtio=True, queues=queues, path=path)
        assert info.value.capability == "vhost-net"
        assert f"cannot open {path}: No such file or directory (ENOENT)" in str(info.value)
    else:
        with choose_vhost(mode, accel_is_kvm=kvm, virtio=True, queues=queues, path=path) as c:
            assert c.use_vhost is expected
            assert len(c.fds) == (queues if expected else 0)
            assert all(not os.get_inheritable(fd) for fd in c.fds)
            assert c.reason
    assert open_fd_count() == before


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kvm", [True, False])
def test_non_virtio_models(device: Path, mode: VhostMode | None, kvm: bool) -> None:
    if mode == "vhost" and kvm:
        with pytest.raises(UnsupportedError, match="only supported for virtio") as info:
            choose_vhost(mode, accel_is_kvm=kvm, virtio=False, path=str(device))
        assert info.value.capability == "vhost-net"
    else:
        choice = choose_vhost(mode, accel_is_kvm=kvm, virtio=False, path=str(device))
        assert (choice.use_vhost, choice.fds) == (False, [])


def test_unavailable_without_a_name_warns(missing: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="qctl.host.vhost"):
        choice = choose_vhost(None, accel_is_kvm=True, virtio=True, path=str(missing))
    assert not choice.use_vhost
    assert "vhost-net is unavailable" in choice.reason
    assert [r.getMessage() for r in caplog.records] == [
        f"not using vhost-net: cannot open {missing}: No such file or directory (ENOENT)"
    ]


def test_close_is_idempotent(device: Path) -> None:
    before = open_fd_count()
    choice = choose_vhost("vhost", accel_is_kvm=True, virtio=True, queues=2, path=str(device))
    assert choice.use_vhost and len(choice.fds) == 2
    choice.close()
    choice.close()
    assert choice.fds == []
    assert open_fd_count() == before


def test_open_is_all_or_nothing(device: Path) -> None:
    """When the n-th open fails (here: out of fds), the ones opened before are closed."""
    in_use = [int(fd) for fd in os.listdir("/proc/self/fd")]
    limit = max(in_use) + 3
    free_below_limit = limit - (len(in_use) - 1)  # one listed fd was listdir's own
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = open_fd_count()
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        with pytest.raises(HostError, match=r"\(EMFILE\)"):
            open_vhost_net(free_below_limit + 1, str(device))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert open_fd_count() == before


def test_open_needs_a_count(device: Path) -> None:
    with pytest.raises(ValueError, match="at least one"):
        open_vhost_net(0, str(device))


def test_choice_is_plain_data() -> None:
    choice = VhostChoice(False, [], "why")
    with choice:
        pass
    assert choice == VhostChoice(False, [], "why")
