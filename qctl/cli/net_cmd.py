"""``qctl net-define|net-list|net-dumpxml|net-undefine``: network pools."""

from __future__ import annotations

import argparse

import qctl
from qctl.cli.common import existing_state_root, print_json, state_root


def _store(args: argparse.Namespace, *, query: bool = True) -> qctl.NetworkStore:
    root = existing_state_root(args) if query else state_root(args)
    return qctl.NetworkStore.for_host(root)


def define(args: argparse.Namespace) -> int:
    network = qctl.load(args.file)
    if not isinstance(network, qctl.NetworkDef):
        raise qctl.ValidationError("expected a <network> document", source=args.file)
    _store(args, query=False).define(network)
    if args.json:
        print_json(qctl.def_to_dict(network))
    else:
        print(f"defined network {network.name}")
    return 0


def list_(args: argparse.Namespace) -> int:
    store = _store(args)
    held = store.allocations(strict=True)
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


def dumpxml(args: argparse.Namespace) -> int:
    store = _store(args)
    network = store.get(args.name)
    holders = {a.device: a for a in store.allocations(strict=True) if a.network == args.name}
    devices = [
        {
            "device": device,
            "domain": holders[device].domain if device in holders else None,
            "alias": holders[device].alias if device in holders else None,
        }
        for device in store.devices(network)
    ]
    if args.json:
        print_json({"network": qctl.def_to_dict(network), "devices": devices})
        return 0
    print(qctl.format_xml(network), end="")
    for row in devices:
        holder = f"{row['domain']}/{row['alias']}" if row["domain"] else "free"
        print(f"<!-- {row['device']}: {holder} -->")
    return 0


def undefine(args: argparse.Namespace) -> int:
    _store(args).undefine(args.name)
    if args.json:
        print_json({"network": args.name, "result": "undefined"})
    else:
        print(f"undefined network {args.name}")
    return 0
