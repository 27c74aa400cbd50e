"""``qctl net-define|net-list|net-dumpxml|net-undefine``: network pools."""

from __future__ import annotations

import argparse
from typing import Any

from qctl import NetworkDef, NetworkStore, StateRoot, ValidationError, format_xml, load
from qctl.cli.common import add_json, add_state_dir, print_json


def register(sub: Any) -> None:
    """Add the network pool commands."""
    define = sub.add_parser("net-define", help="define (or replace) a network pool from XML")
    define.add_argument("file", metavar="FILE.xml")
    add_state_dir(define)
    define.set_defaults(func=_define)

    listing = sub.add_parser("net-list", help="list the pools and how many devices are held")
    add_state_dir(listing)
    add_json(listing)
    listing.set_defaults(func=_list)

    dump = sub.add_parser("net-dumpxml", help="a pool's XML and which interface holds each device")
    dump.add_argument("name")
    add_state_dir(dump)
    add_json(dump)
    dump.set_defaults(func=_dumpxml)

    undefine = sub.add_parser("net-undefine", help="forget a pool none of whose devices is held")
    undefine.add_argument("name")
    add_state_dir(undefine)
    undefine.set_defaults(func=_undefine)


def _store(args: argparse.Namespace) -> NetworkStore:
    return NetworkStore.for_host(StateRoot(args.state_dir))


def _define(args: argparse.Namespace) -> int:
    network = load(args.file)
    if not isinstance(network, NetworkDef):
        raise ValidationError("expected a <network> document", source=args.file)
    _store(args).define(network)
    print(f"defined network {network.name}")
    return 0


def _list(args: argparse.Namespace) -> int:
    store = _store(args)
    held = store.allocations()
    rows = []
    for name in store.names():
        network = store.get(name)
        mode = network.forward.mode.value if network.forward else "bridge"
        rows.append(
            {"name": name, "mode": mode, "held": sum(1 for a in held if a.network == name)}
        )
    if args.json:
        print_json(rows)
    else:
        for row in rows:
            print(f"{row['name']:<24} {row['mode']:<8} {row['held']} held")
    return 0


def _dumpxml(args: argparse.Namespace) -> int:
    store = _store(args)
    network = store.get(args.name)
    holders = {a.device: a for a in store.allocations() if a.network == args.name}
    devices = [
        {
            "device": device,
            "domain": holders[device].domain if device in holders else None,
            "alias": holders[device].alias if device in holders else None,
        }
        for device in store.devices(network)
    ]
    if args.json:
        print_json({"xml": format_xml(network), "devices": devices})
        return 0
    print(format_xml(network), end="")
    for row in devices:
        holder = f"{row['domain']}/{row['alias']}" if row["domain"] else "free"
        print(f"<!-- {row['device']}: {holder} -->")
    return 0


def _undefine(args: argparse.Namespace) -> int:
    _store(args).undefine(args.name)
    print(f"undefined network {args.name}")
    return 0
