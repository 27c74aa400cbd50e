"""Shell completion for bash and zsh, through argcomplete.

``eval "$(qctl completion bash)"`` (or ``zsh``) installs it in a shell. The shell then runs
``qctl`` itself with argcomplete's environment (``_ARGCOMPLETE``) set; :func:`complete_if_asked`
notices that before parsing, imports argcomplete (only then), answers and exits. Besides
verbs and options, it completes the names of running domains, the aliases of a domain's
devices, and the names of defined networks, read from the state root given on the line
(``--state-dir``) or the default one.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

import qctl

Completer = Callable[..., list[str]]
SHELLS = ("bash", "zsh")


def _root(parsed_args: argparse.Namespace) -> qctl.StateRoot:
    return qctl.StateRoot(getattr(parsed_args, "state_dir", None))


def _domain_names(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    return [n for n in _root(parsed_args).names() if n.startswith(prefix)]


def _network_names(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    store = qctl.NetworkStore(_root(parsed_args))
    return [n for n in store.names() if n.startswith(prefix)]


def _device_aliases(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """The aliases of the devices of the domain named on the line (connecting to it)."""
    import asyncio  # only when completing an alias: not every qctl run pays for it

    async def aliases() -> list[str]:
        async with qctl.Domain.connect(parsed_args.name, state_root=_root(parsed_args)) as dom:
            return [entry.alias for entry in dom.ledger]

    return [a for a in asyncio.run(aliases()) if a.startswith(prefix)]


def _set(action: argparse.Action, completer: Completer) -> argparse.Action:
    # argcomplete reads the completer from this attribute of the action.
    setattr(action, "completer", completer)  # noqa: B010 - argparse.Action declares no such field
    return action


def complete_domains(action: argparse.Action) -> argparse.Action:
    """Complete ``action`` with the names of the domains in the state root."""
    return _set(action, _domain_names)


def complete_networks(action: argparse.Action) -> argparse.Action:
    """Complete ``action`` with the names of the defined networks."""
    return _set(action, _network_names)


def complete_aliases(action: argparse.Action) -> argparse.Action:
    """Complete ``action`` with the device aliases of the domain given as ``name``."""
    return _set(action, _device_aliases)


def completing() -> bool:
    """Whether this run answers the shell's request for completions."""
    return "_ARGCOMPLETE" in os.environ


def complete_if_asked(parser: argparse.ArgumentParser) -> None:
    """When the shell asks for completions, answer and exit; otherwise return at once."""
    if not completing():
        return
    import argcomplete  # only for a completion request: it is not free to import

    argcomplete.autocomplete(parser)


def completion(args: argparse.Namespace) -> int:
    from argcomplete.shell_integration import shellcode

    print(shellcode(["qctl"], shell=args.shell), end="")
    return 0


