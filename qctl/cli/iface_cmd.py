"""``qctl domiflist|domifstat|attach-interface|detach-interface``: a domain's NICs, as in virsh.

``attach-interface`` and ``detach-interface`` spare the XML file: the NIC is described (or
found) by virsh's options, ``--type bridge|network|ethernet|user``, ``--source``, ``--model``,
``--mac``, ``--alias``, and the work is ``attach-device``/``detach-device``'s.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any
from xml.sax.saxutils import quoteattr

import qctl
from qctl.cli.common import print_json, state_root
from qctl.cli.device_cmd import attach_and_print, detach_and_print

_COLUMNS = ("alias", "type", "source", "tap", "model", "mac", "state")
# LinkStats' counters, in virsh's order
_COUNTERS = (
    "rx_bytes",
    "rx_packets",
    "rx_errs",
    "rx_drop",
    "tx_bytes",
    "tx_packets",
    "tx_errs",
    "tx_drop",
)




def _one(args: argparse.Namespace, what: str, *, required: bool) -> str | None:
    """The value given positionally or as an option (not both, unless equal)."""
    positional, option = getattr(args, f"{what}_arg"), getattr(args, what)
    if positional and option and positional != option:
        raise qctl.ConfigError(f"{what} given twice: {positional!r} and --{what} {option!r}")
    value: str | None = positional or option
    if required and not value:
        raise qctl.ConfigError(f"give the interface's {what} (TYPE or --{what})")
    return value


def interface_xml(
    type_: str,
    source: str | None,
    *,
    model: str | None = None,
    mac: str | None = None,
    alias: str | None = None,
    target: str | None = None,
) -> str:
    """The ``<interface>`` document virsh's attach-interface options describe."""
    parts = [f"<interface type={quoteattr(type_)}>"]
    if type_ in ("bridge", "network"):
        if not source:
            raise qctl.ConfigError(f"an interface of type {type_} needs a source ({type_} name)")
        parts.append(f"<source {type_}={quoteattr(source)}/>")
    elif source:
        raise qctl.ConfigError(f"an interface of type {type_} takes no source")
    if mac:
        parts.append(f"<mac address={quoteattr(mac)}/>")
    if target:
        parts.append(f"<target dev={quoteattr(target)}/>")
    if model:
        parts.append(f"<model type={quoteattr(model)}/>")
    if alias:
        parts.append(f"<alias name={quoteattr(alias)}/>")
    parts.append("</interface>")
    return "".join(parts)


def attach_interface(args: argparse.Namespace) -> int:
    type_ = _one(args, "type", required=True)
    assert type_ is not None
    xml = interface_xml(
        type_,
        _one(args, "source", required=False),
        model=args.model,
        mac=args.mac,
        alias=args.alias,
        target=args.target,
    )
    return attach_and_print(args, xml, "attach-interface")


async def _nics(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The domain's NICs as rows (see ``_COLUMNS``), from its live XML and ledger."""
    async with qctl.Domain.connect(args.name, state_root=state_root(args)) as dom:
        live = qctl.parse_domain(dom.xml(), source=args.name, live=True)
        entries = {entry.alias: entry for entry in dom.ledger}
    rows = []
    for device in live.devices.items:
        if not isinstance(device, qctl.InterfaceDef):
            continue
        entry = entries.get(device.alias or "")
        src = device.source
        source = (src.bridge or src.network or src.pci or src.usb) if src else None
        rows.append(
            {
                "alias": device.alias,
                "type": device.type.value,
                "source": str(source) if source else None,
                "tap": entry.tap if entry and entry.tap else device.target_dev,
                "model": device.model,
                "mac": str(device.mac) if device.mac else None,
                # a NIC of the live XML the ledger does not track holds nothing on the host
                "state": entry.state.value if entry else "attached",
            }
        )
    return rows


def domiflist(args: argparse.Namespace) -> int:
    rows = asyncio.run(_nics(args))
    if args.json:
        print_json(rows)
        return 0
    table = [[c.capitalize() for c in _COLUMNS]]
    table += [[str(row[c]) if row[c] else "-" for c in _COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
    for line in table:
        cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        print("  ".join(cells).rstrip())
    return 0


def _find(rows: list[dict[str, Any]], name: str, *, wanted: str) -> dict[str, Any]:
    """The row whose alias, tap or MAC is ``wanted``; StateError naming the domain otherwise."""
    key = wanted.lower()
    for row in rows:
        if key in (row["alias"], row["tap"], (row["mac"] or "").lower()):
            return row
    raise qctl.StateError(f"domain {name!r} has no interface {wanted!r} (qctl domiflist {name})")


def domifstat(args: argparse.Namespace) -> int:
    row = _find(asyncio.run(_nics(args)), args.name, wanted=args.interface)
    if not row["tap"]:
        raise qctl.UnsupportedError(
            f"interface {row['alias']} of {args.name!r} ({row['type']}) has no host tap to count"
        )
    stats = qctl.link_stats(row["tap"])
    counters = {name: int(getattr(stats, name)) for name in _COUNTERS}
    if args.json:
        print_json({"domain": args.name, "alias": row["alias"], "tap": row["tap"], **counters})
    else:
        for key, value in counters.items():
            print(f"{row['tap']} {key} {value}")
    return 0


def detach_interface(args: argparse.Namespace) -> int:
    type_ = _one(args, "type", required=True)
    rows = [r for r in asyncio.run(_nics(args)) if r["type"] == type_]
    if args.mac:
        rows = [r for r in rows if (r["mac"] or "").lower() == args.mac.lower()]
    if args.alias:
        rows = [r for r in rows if r["alias"] == args.alias]
    what = f"interface of type {type_}" + (f" with MAC {args.mac}" if args.mac else "")
    what += f" with alias {args.alias}" if args.alias else ""
    if not rows:
        raise qctl.StateError(f"domain {args.name!r} has no {what}")
    if len(rows) > 1:
        raise qctl.ConfigError(
            f"domain {args.name!r} has {len(rows)} interfaces of type {type_}; "
            "name one with --mac or --alias"
        )
    alias = rows[0]["alias"]
    return detach_and_print(args, alias, alias)
