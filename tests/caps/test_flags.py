"""The detection table: complete, consistent with what the probe fetches, and each kind of
rule deciding on the fact it names."""

from __future__ import annotations

import dataclasses

import pytest

from qctl.caps import DETECTION, PROBED_DEVICES, Capability, QEMUCaps
from qctl.caps.flags import (
    KVM,
    SCHEMA_PATHS,
    Command,
    DeviceProperty,
    Event,
    QOMType,
    Rule,
    SchemaPath,
)


def test_every_capability_has_a_rule() -> None:
    assert set(DETECTION) == set(Capability)


def test_device_property_rules_name_probed_devices() -> None:
    for rule in DETECTION.values():
        if isinstance(rule, DeviceProperty):
            assert rule.device in PROBED_DEVICES, rule


def test_the_probe_resolves_exactly_the_schema_paths_of_the_table() -> None:
    paths = {rule.path for rule in DETECTION.values() if isinstance(rule, SchemaPath)}
    assert paths == SCHEMA_PATHS


def test_capability_names_are_lower_case_member_names() -> None:
    for flag in Capability:
        assert flag.value == flag.name.lower()


EMPTY = QEMUCaps()

CASES: list[tuple[Rule, QEMUCaps]] = [
    (Command("add-fd"), QEMUCaps(commands=frozenset({"add-fd"}))),
    (Event("UNPLUG_PRIMARY"), QEMUCaps(events=frozenset({"UNPLUG_PRIMARY"}))),
    (QOMType("vfio-pci"), QEMUCaps(qom_types=frozenset({"vfio-pci"}))),
    (
        DeviceProperty("virtio-net-pci", "failover"),
        QEMUCaps(device_properties={"virtio-net-pci": {"failover": "bool"}}),
    ),
    (SchemaPath("a/b"), QEMUCaps(schema_paths=frozenset({"a/b"}))),
    (KVM("present"), QEMUCaps(kvm_present=True)),
    (KVM("enabled"), QEMUCaps(kvm_enabled=True)),
]


@pytest.mark.parametrize(("rule", "caps"), CASES, ids=lambda v: type(v).__name__)
def test_a_rule_holds_exactly_when_its_fact_is_there(rule: Rule, caps: QEMUCaps) -> None:
    assert rule.holds(caps)
    assert not rule.holds(EMPTY)


def test_a_device_property_of_another_device_does_not_count() -> None:
    caps = QEMUCaps(device_properties={"e1000": {"failover": "bool"}})
    assert not DeviceProperty("virtio-net-pci", "failover").holds(caps)


def test_kvm_present_is_not_kvm_enabled() -> None:
    caps = QEMUCaps(kvm_present=True)
    assert caps.flags == {Capability.KVM_PRESENT}
    assert dataclasses.replace(caps, kvm_enabled=True).flags == {
        Capability.KVM_PRESENT,
        Capability.KVM_ENABLED,
    }


def test_command_line_option_rules_read_query_command_line_options() -> None:
    older = QEMUCaps(command_line_options={"sandbox", "sandbox.spawn", "chardev"})
    assert older.has(Capability.SECCOMP_SANDBOX) and not older.has(Capability.RUN_WITH_USER)
    newer = QEMUCaps(command_line_options={"run-with", "run-with.user"})
    assert newer.has(Capability.RUN_WITH_USER) and not newer.has(Capability.SECCOMP_SANDBOX)
    assert QEMUCaps.from_dict(newer.to_dict()).command_line_options == newer.command_line_options
    # without libseccomp, or from a cache written before the option was probed: no flag
    assert not QEMUCaps(command_line_options={"run-with"}).flags
