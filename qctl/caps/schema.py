"""Questions to QEMU's introspected QAPI schema (``query-qmp-schema``).

Introspection hides type names (they are numbered, ``"100"``), so a type can only be reached
from a command or event that uses it. A *schema path* does exactly that, step by step::

    netdev_add/arg-type/+tap                    netdev_add's argument is a union with a 'tap' case
    query-migrate/ret-type/status/=wait-unplug  the reply's 'status' enum has 'wait-unplug'
    query-migrate/ret-type/blocked-reasons      the reply has a 'blocked-reasons' member
    device_add/$json-cli-hotplug                device_add has the feature 'json-cli-hotplug'

The first step names a command or event. Then:

- ``arg-type`` / ``ret-type``: go to the command's (or event's) argument or return type;
- ``NAME``: go to the type of an object's member ``NAME``;
- ``+CASE``: go to the type of a union's variant ``CASE``;
- ``=VALUE``: the enum has the value ``VALUE`` (stays on the enum);
- ``$FEATURE``: the command, event or type has the feature ``FEATURE`` (stays on it).

Arrays are stepped through to their element type and alternates to each alternative, so a
path holds when any way through it does. A path *resolves* when every step succeeds.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

__all__ = ["QAPISchema"]

_Entity = Mapping[str, Any]


class QAPISchema:
    """The schema as ``query-qmp-schema`` returned it, indexed by name."""

    def __init__(self, entities: Iterable[_Entity]) -> None:
        self._by_name: dict[str, _Entity] = {
            entity["name"]: entity
            for entity in entities
            if isinstance(entity, Mapping) and isinstance(entity.get("name"), str)
        }

    def events(self) -> frozenset[str]:
        """The names of every event QEMU can emit."""
        return frozenset(n for n, e in self._by_name.items() if e.get("meta-type") == "event")

    def resolves(self, path: str) -> bool:
        """Whether every step of ``path`` succeeds (see the module for the syntax)."""
        first, *steps = path.split("/")
        start = self._by_name.get(first)
        if start is None or start.get("meta-type") not in ("command", "event"):
            return False
        nodes = [start]
        for step in steps:
            nodes = [after for node in nodes for after in self._step(node, step)]
            if not nodes:
                return False
        return True

    def _step(self, node: _Entity, step: str) -> Iterator[_Entity]:
        if step.startswith("$"):
            if step[1:] in node.get("features", ()):
                yield node
            return
        if node.get("meta-type") in ("command", "event"):
            if step in ("arg-type", "ret-type"):
                yield from self._lookup(node.get(step))
            return
        for concrete in self._concrete(node):
            meta = concrete.get("meta-type")
            if step.startswith("="):
                if meta == "enum" and step[1:] in _enum_values(concrete):
                    yield concrete
            elif meta != "object":
                continue
            elif step.startswith("+"):
                for variant in concrete.get("variants", ()):
                    if variant.get("case") == step[1:]:
                        yield from self._lookup(variant.get("type"))
            else:
                for member in concrete.get("members", ()):
                    if member.get("name") == step:
                        yield from self._lookup(member.get("type"))

    def _concrete(self, node: _Entity) -> Iterator[_Entity]:
        """``node`` itself, or what an array or alternate stands for."""
        meta = node.get("meta-type")
        if meta == "array":
            for element in self._lookup(node.get("element-type")):
                yield from self._concrete(element)
        elif meta == "alternate":
            for member in node.get("members", ()):
                for alternative in self._lookup(member.get("type")):
                    yield from self._concrete(alternative)
        else:
            yield node

    def _lookup(self, name: object) -> Iterator[_Entity]:
        if isinstance(name, str) and name in self._by_name:
            yield self._by_name[name]


def _enum_values(enum: _Entity) -> set[str]:
    """An enum's values: ``members`` (QEMU ≥ 6.2) or the older ``values`` list."""
    values = {m.get("name") for m in enum.get("members", ()) if isinstance(m, Mapping)}
    values.update(enum.get("values", ()))
    return {v for v in values if isinstance(v, str)}
