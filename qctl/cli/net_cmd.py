"""``qctl net-define|net-list|net-dumpxml|net-undefine``: network pools."""

from __future__ import annotations

import argparse

import qctl
from qctl.cli.common import Subparsers, add_verb, existing_state_root, print_json, state_root
from qctl.cli.completion_cmd import complete_networks

NETWORK_HELP = "the network's name (as in its <name>)"


def register(sub: Subparsers) -> None:
    """Add the network pool commands."""
    define = add_verb(
        sub,
        "net-define",
        _define,
        summary="define (or replace) a network pool from XML",
        description="Store the <network> FILE.xml defines: a bridge, or a pool of host "
        "devices (a PF's VFs, or a list) that type='network' interfaces take from. "
        "--json prints the network's model.",
        examples=["qctl net-define examples/network-hostdev-vfs.xml"],
    )
    define.add_argument("file", metavar="FILE.xml", help="the <network> document")

    add_verb(
        sub,
        "net-list",
        _list,
        summary="list the pools and how many devices are held",
        description="List the defined networks: name, forward mode, and how many of their "
        "devices interfaces hold.",
        examples=["qctl net-list", "qctl net-list --json"],
    )

    dump = add_verb(
        sub,
        "net-dumpxml",
        _dumpxml,
        summary="a pool's XML and which interface holds each device",
        description="Print the network's XML, then a comment per device saying which "
        'domain and alias hold it. --json prints {"network": model, "devices": [...]}.',
        examples=["qctl net-dumpxml vfs", "qctl net-dumpxml vfs --json | jq .devices"],
    )
    complete_networks(dump.add_argument("name", metavar="NAME", help=NETWORK_HELP))

    undefine = add_verb(
        sub,
        "net-undefine",
        _undefine,
        summary="forget a pool none of whose devices is held",
        description="Forget the network NAME. Refused while an interface holds one of its "
        "devices; an unknown name is an error.",
        examples=["qctl net-undefine vfs"],
    )
    complete_networks(undefine.add_argument("name", metavar="NAME", help=NETWORK_HELP))


def _store(args: argparse.Namespace, *, query: bool = True) -> qctl.NetworkStore:
    root = existing_state_root(args) if query else state_root(args)
    return qctl.NetworkStore.for_host(root)


def _define(args: argparse.Namespace) -> int:
    network = qctl.load(args.file)
    if not isinstance(network, qctl.NetworkDef):
        raise qctl.ValidationError("expected a <network> document", source=args.file)
    _store(args, query=False).define(network)
    if args.json:
        print_json(qctl.def_to_dict(network))
    else:
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
        print_json({"network": qctl.def_to_dict(network), "devices": devices})
        return 0
    print(qctl.format_xml(network), end="")
    for row in devices:
        holder = f"{row['domain']}/{row['alias']}" if row["domain"] else "free"
        print(f"<!-- {row['device']}: {holder} -->")
    return 0


def _undefine(args: argparse.Namespace) -> int:
    _store(args).undefine(args.name)
    if args.json:
        print_json({"network": args.name, "result": "undefined"})
    else:
        print(f"undefined network {args.name}")
    return 0
