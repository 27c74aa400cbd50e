"""The ``qctl`` command line: every verb's options, help and examples, and nothing else.

Building this parser costs argparse and no more: a verb names its handler as
``"module:function"`` under :mod:`qctl.cli`, and :func:`qctl.cli.main.main` imports that
module only for the verb being run. So ``qctl --help`` imports no part of the library, and a
verb pays only for what its handler uses (lxml for ``validate``, qemu.qmp for ``caps``).

Global options (``--state-dir``, ``--json``, ``--debug``) are accepted before or after the
verb: the top-level parser declares them with real defaults, every verb's parser again with
``SUPPRESS`` defaults, so a value given before the verb is not overwritten by the verb's.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeAlias

import qctl
from qctl.cli.complete import (
    SHELLS,
    complete_aliases,
    complete_domains,
    complete_networks,
)

if TYPE_CHECKING:
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

DEFAULT_BINARY = "qemu-system-x86_64"
DOMAIN_HELP = "the domain's name (as in its <name>)"
NETWORK_HELP = "the network's name (as in its <name>)"
WAIT_HELP = "seconds to wait for QEMU to report the removal (5); then it is 'pending'"
TYPES = ("bridge", "network", "ethernet", "user")
_TYPE_HELP = "how the NIC reaches the host: " + ", ".join(TYPES)
_LIVE_HELP = "the XML of a running domain: allow device aliases not chosen by the user (net0)"
_EPILOG = """\
exit status: 0 success, 1 a check answered "no", 2 usage, 3 configuration error,
4 unsupported by QEMU or the host, 5 QMP, 6 host, 7 QEMU process, 8 state, 9 hotplug,
10 other qctl error, 141 the reader of the output went away.

`qctl COMMAND --help` describes a command, with examples."""
_WIDTH = 88


def add_global_options(parser: argparse.ArgumentParser, *, in_verb: bool) -> None:
    """``--state-dir``, ``--json`` and ``--debug`` (see the module docstring for ``in_verb``)."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if in_verb else value

    group = parser.add_argument_group("global options (before or after the command)")
    group.add_argument(
        "--state-dir",
        metavar="DIR",
        default=default(None),
        help="state root (default: $QCTL_STATE_DIR, /run/qctl for root, else "
        "$XDG_RUNTIME_DIR/qctl)",
    )
    group.add_argument(
        "--json", action="store_true", default=default(False), help="print the result as JSON"
    )
    group.add_argument(
        "--debug",
        action="store_true",
        default=default(False),
        help="log verbosely, show tracebacks",
    )


def add_verb(
    sub: Subparsers,
    name: str,
    handler: str,
    *,
    summary: str,
    description: str,
    examples: Sequence[str],
) -> argparse.ArgumentParser:
    """Declare verb ``name``: a one-line ``summary`` for ``qctl --help``, a ``description``
    and ``examples`` for ``qctl NAME --help``, and its ``handler``, ``"module:function"`` in
    :mod:`qctl.cli`, a function taking the parsed arguments and returning the exit status."""
    parser = sub.add_parser(
        name,
        help=summary,
        description=textwrap.fill(description, _WIDTH),
        epilog="examples:\n" + "\n".join(f"  {line}" for line in examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_global_options(parser, in_verb=True)
    parser.set_defaults(handler=handler)
    return parser


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser; given the command line, only the verbs of the group that
    declares its verb.

    Declaring every verb costs about 15 ms (argparse's help formatting and translation
    lookups), a tenth of what an ``attach-device`` pays to start, for parsers the run never
    uses. Without a known verb in ``argv`` (``qctl --help``, a typo, completion) every verb
    is declared, so usage errors and the overview list them all.
    """
    parser = argparse.ArgumentParser(
        prog="qctl",
        description="Control QEMU like libvirt's QEMU driver, without a daemon.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"qctl {qctl.__version__}")
    add_global_options(parser, in_verb=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    verb = verb_of(argv) if argv is not None else None
    for declare, verbs in VERB_GROUPS:
        if verb is None or verb in verbs:
            declare(sub)
    return parser


def verb_of(argv: Sequence[str]) -> str | None:
    """The verb ``argv`` names, when it is one of qctl's: the first word that is neither an
    option nor the value of ``--state-dir`` (the one global option taking a value)."""
    after_state_dir = False
    for word in argv:
        if after_state_dir:
            after_state_dir = False
        elif word == "--state-dir":
            after_state_dir = True
        elif not word.startswith("-"):
            return word if any(word in verbs for _, verbs in VERB_GROUPS) else None
    return None


def _capability(text: str) -> qctl.Capability:
    """A flag name, case-insensitive; a usage error listing the valid names otherwise."""
    try:
        return qctl.Capability(text.lower())
    except ValueError:
        names = ", ".join(flag.value for flag in qctl.Capability)
        raise argparse.ArgumentTypeError(f"unknown flag {text!r}; valid flags: {names}") from None


def _type_and_source(parser: argparse.ArgumentParser) -> None:
    """TYPE and SOURCE, positional as in virsh or as ``--type``/``--source``."""
    parser.add_argument("type_arg", nargs="?", choices=TYPES, metavar="TYPE", help=_TYPE_HELP)
    complete_networks(
        parser.add_argument(
            "source_arg", nargs="?", metavar="SOURCE", help="the bridge or network name"
        )
    )
    parser.add_argument("--type", choices=TYPES, help="the same as TYPE")
    complete_networks(parser.add_argument("--source", metavar="SOURCE", help="the same as SOURCE"))


def _conf_verbs(sub: Subparsers) -> None:
    """Add the ``validate`` and ``format`` commands."""
    validate = add_verb(
        sub,
        "validate",
        "conf_cmd:validate",
        summary="check domain, device and network documents",
        description="Check each FILE (a <domain>, <interface>, <hostdev> or <network>) and "
        "report every problem as FILE:LINE: message on stderr. Exit 0 when all are valid, 3 "
        "otherwise. --json prints a report per file on stdout instead.",
        examples=[
            "qctl validate examples/domain-basic.xml",
            "qctl validate --json *.xml | jq '.[] | select(.valid | not) | .file'",
        ],
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="documents to check")
    validate.add_argument("--live", action="store_true", help=_LIVE_HELP)
    validate.add_argument(
        "--lenient",
        action="store_true",
        help="report parts qctl would not apply (not supported by qctl) as warnings",
    )

    fmt = add_verb(
        sub,
        "format",
        "conf_cmd:format_",
        summary="print a document normalized (or its model as JSON)",
        description="Print FILE as normalized XML; it must be valid. --json prints the "
        "model instead: the same JSON every verb uses for a domain, device or network.",
        examples=["qctl format examples/domain-basic.xml", "qctl format --json nic.xml"],
    )
    fmt.add_argument("file", metavar="FILE", help="the document to print")
    fmt.add_argument("--live", action="store_true", help=_LIVE_HELP)


def _caps_verbs(sub: Subparsers) -> None:
    """Add the ``caps`` command."""
    parser = add_verb(
        sub,
        "caps",
        "caps_cmd:run",
        summary="show what a QEMU binary can do",
        description="Probe a QEMU binary (cached) or a running QEMU, and show its "
        "capabilities: version, KVM, host facts, machine types and every flag qctl uses. "
        "--json prints the whole capabilities object.",
        examples=[
            "qctl caps",
            "qctl caps --binary /usr/bin/qemu-system-x86_64 --json | jq .version",
            "qctl caps --flag virtio_net_failover && echo supported",
        ],
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--binary",
        metavar="PATH",
        help=f"QEMU binary (default: $QCTL_QEMU, or {DEFAULT_BINARY} on PATH)",
    )
    target.add_argument("--connect", metavar="SOCKET", help="QMP socket of a running QEMU")
    parser.add_argument("--no-cache", action="store_true", help="probe afresh, skip the cache")
    parser.add_argument(
        "--flag",
        type=_capability,
        metavar="NAME",
        help="exit 0 if the flag is present, 1 if not (prints nothing)",
    )


def _domain_verbs(sub: Subparsers) -> None:
    """Add the domain lifecycle commands."""
    start = add_verb(
        sub,
        "start",
        "domain_cmd:start",
        summary="start a domain from its XML; QEMU keeps running",
        description="Start the domain FILE.xml defines: probe QEMU (cached), prepare the "
        "host side (taps, vhost-net, VFIO), spawn QEMU and record its state. QEMU keeps "
        "running after qctl exits; every other command finds it by name.",
        examples=["qctl start examples/domain-basic.xml", "qctl start vm.xml --json"],
    )
    start.add_argument("file", metavar="FILE.xml", help="the <domain> document")
    start.add_argument(
        "--no-confine",
        action="store_true",
        help="run QEMU as qctl's user without its sandbox (as root QEMU runs as "
        "$QCTL_QEMU_USER or qctl-qemu, sandboxed, by default)",
    )

    add_verb(
        sub,
        "list",
        "domain_cmd:list_",
        summary="list domains: pid, run state, job; the state of exited ones is released",
        description="List the domains of the state root with their QEMU pid, run state (as "
        "the last qctl process saw it), the job running on each (in any process) and pending "
        "detaches, from the books alone: nothing waits for a job. A domain whose QEMU exited "
        "is shown once as 'gone' and what it held (taps, pool devices) released; a damaged "
        "status file is shown with its error (drop it with `stop --force`).",
        examples=["qctl list", "qctl --state-dir /tmp/qctl list --json | jq -r '.[].name'"],
    )

    stop = add_verb(
        sub,
        "stop",
        "domain_cmd:stop",
        summary="power a domain down (then quit, then kill)",
        description="Press the ACPI power button and wait up to --timeout seconds, when a "
        "guest can answer it (a paused, migrated-away or unbooted one cannot: QEMU is told "
        "to quit at once); then ask QEMU to quit, then kill it. Each step is said on stderr. "
        "What the domain held is released.",
        examples=["qctl stop vm1", "qctl stop vm1 --force"],
    )
    complete_domains(stop.add_argument("name", metavar="NAME", help=DOMAIN_HELP))
    stop.add_argument(
        "--force",
        action="store_true",
        help="skip the ACPI power-down; drop a damaged state once no QEMU runs for it",
    )
    stop.add_argument(
        "--timeout", type=float, default=30.0, metavar="S", help="power-down grace (30 s)"
    )

    argv = add_verb(
        sub,
        "domxml-to-argv",
        "domain_cmd:domxml_to_argv",
        summary="the QEMU command line a domain would start with (dry run)",
        description="Print the command line `qctl start FILE.xml` would run, without "
        "touching the host: fds are symbolic, taps not created. --json prints the argv list.",
        examples=[
            "qctl domxml-to-argv examples/domain-basic.xml",
            "qctl domxml-to-argv vm.xml --json | jq -r '.[]'",
        ],
    )
    argv.add_argument("file", metavar="FILE.xml", help="the <domain> document")
    argv.add_argument(
        "--emulator",
        metavar="PATH",
        help="probe this QEMU for what it can do, and start the argv with it (default: the "
        "cached capabilities of the document's <emulator>, else $QCTL_QEMU or "
        "qemu-system-x86_64)",
    )
    argv.add_argument(
        "--probe-document-emulator",
        action="store_true",
        help="run the document's <emulator> to probe it (never done otherwise)",
    )

    dumpxml = add_verb(
        sub,
        "dumpxml",
        "domain_cmd:dumpxml",
        summary="a running domain's XML (live; --inactive: as defined)",
        description="Print the live XML of a running domain, as virsh does: the devices "
        "hot-plugged since the start, with the aliases, PCI addresses, taps and vhost choice "
        "qctl filled in. --inactive prints the definition as it was given to `qctl start`. "
        "--json prints the model instead of XML.",
        examples=["qctl dumpxml vm1", "qctl dumpxml vm1 --inactive", "qctl dumpxml vm1 --json"],
    )
    complete_domains(dumpxml.add_argument("name", metavar="NAME", help=DOMAIN_HELP))
    shown = dumpxml.add_mutually_exclusive_group()
    shown.add_argument(
        "--inactive", action="store_true", help="the definition as given, not the live XML"
    )
    shown.add_argument(
        "--migratable",
        action="store_true",
        help="the definition a migration destination starts with (host details mapped back)",
    )


def _job_verbs(sub: Subparsers) -> None:
    """Add the job and run-state commands."""
    job = add_verb(
        sub,
        "job",
        "job_cmd:job",
        summary="the job running on a domain, in any process (virsh domjobinfo)",
        description="Show the job running on domain NAME — attach, detach, stop, migrate… — "
        "with its device, owner process, time and progress, from the books alone: it never "
        "waits for the job.",
        examples=["qctl job vm1", "qctl job vm1 --json | jq .job.kind"],
    )
    complete_domains(job.add_argument("name", metavar="NAME", help=DOMAIN_HELP))

    abort = add_verb(
        sub,
        "job-abort",
        "job_cmd:job_abort",
        summary="abort the job running on a domain; it is rolled back",
        description="Ask the owner of domain NAME's running job (this or another process) to "
        "abort it, and wait until it has rolled back what it had done.",
        examples=["qctl job-abort vm1"],
    )
    complete_domains(abort.add_argument("name", metavar="NAME", help=DOMAIN_HELP))

    for verb, summary, handler in (
        ("suspend", "pause a domain's vCPUs", "job_cmd:suspend"),
        ("resume", "run a paused domain's vCPUs again", "job_cmd:resume"),
    ):
        parser = add_verb(
            sub,
            verb,
            handler,
            summary=summary,
            description=summary[0].upper() + summary[1:] + ".",
            examples=[f"qctl {verb} vm1"],
        )
        complete_domains(parser.add_argument("name", metavar="NAME", help=DOMAIN_HELP))

    state = add_verb(
        sub,
        "domstate",
        "job_cmd:domstate",
        summary="a domain's run state, asked of QEMU",
        description="Print running, paused, inmigrate, postmigrate, shutdown or crashed, "
        "as QEMU reports it now.",
        examples=["qctl domstate vm1"],
    )
    complete_domains(state.add_argument("name", metavar="NAME", help=DOMAIN_HELP))

    info = add_verb(
        sub,
        "dominfo",
        "job_cmd:dominfo",
        summary="a domain's pid, run state, job and pending detaches, from its books",
        description="Summarize domain NAME from its status file, without waiting for a job.",
        examples=["qctl dominfo vm1", "qctl dominfo vm1 --json"],
    )
    complete_domains(info.add_argument("name", metavar="NAME", help=DOMAIN_HELP))


def _console_verbs(sub: Subparsers) -> None:
    """Add the ``console`` command."""
    console = add_verb(
        sub,
        "console",
        "console_cmd:run",
        summary="attach this terminal to a domain's serial console (Ctrl-] leaves)",
        description="Attach this terminal to the first serial port of the running domain "
        "NAME: what the guest writes is shown, what is typed goes to the guest (a "
        "<serial type='pty'/>); Ctrl-] leaves. --log prints what the guest wrote since QEMU "
        "started, --follow then goes on until QEMU exits.",
        examples=["qctl console vm1", "qctl console vm1 --log --follow"],
    )
    complete_domains(console.add_argument("name", metavar="NAME", help=DOMAIN_HELP))
    console.add_argument("--log", action="store_true", help="print what the guest wrote, then exit")
    console.add_argument(
        "--follow", action="store_true", help="with --log: go on until QEMU exits (or Ctrl-C)"
    )


def _migrate_verbs(sub: Subparsers) -> None:
    """Add the live migration commands."""
    migrate = add_verb(
        sub,
        "migrate",
        "migrate_cmd:migrate",
        summary="live-migrate a domain to another host (failover pairs included)",
        description="Migrate the running domain NAME to a destination that `qctl "
        "migrate-incoming` made listen on URI (tcp:HOST:PORT or unix:PATH). Failover "
        "primaries are unplugged by QEMU first and plugged again on the destination. On "
        "success this host's QEMU is quit and everything it held released; on failure or "
        "`migrate-cancel` the domain keeps running here. A terminal shows a progress bar; "
        "--json prints JSON Lines (progress, then the outcome).",
        examples=[
            "qctl migrate vm1 --uri tcp:192.0.2.2:4444",
            "qctl migrate vm1 --uri tcp:192.0.2.2:4444 --bandwidth 100 --json",
        ],
    )
    complete_domains(migrate.add_argument("name", metavar="NAME", help=DOMAIN_HELP))
    migrate.add_argument("--uri", required=True, help="the destination: tcp:HOST:PORT, unix:PATH")
    migrate.add_argument(
        "--timeout", type=float, default=0.0, metavar="S", help="give up after S s (0: never)"
    )
    migrate.add_argument("--bandwidth", type=float, metavar="MIB/S", help="cap the transfer")
    migrate.add_argument("--downtime", type=int, metavar="MS", help="longest guest pause allowed")

    incoming = add_verb(
        sub,
        "migrate-incoming",
        "migrate_cmd:migrate_incoming",
        summary="be a live migration's destination: start, listen, receive",
        description="Start the domain FILE.xml defines (the source's `dumpxml --migratable`) "
        "waiting for its guest, with this host's own taps, bridges and pool devices, listen "
        "on --listen and wait until the guest has arrived and runs here. On failure or "
        "timeout everything made here is removed.",
        examples=["qctl migrate-incoming vm1.xml --listen tcp:0.0.0.0:4444"],
    )
    incoming.add_argument("file", metavar="FILE.xml", help="the migratable <domain> document")
    incoming.add_argument("--listen", required=True, help="tcp:HOST:PORT or unix:PATH")
    incoming.add_argument(
        "--timeout", type=float, default=0.0, metavar="S", help="give up after S s (0: never)"
    )

    cancel = add_verb(
        sub,
        "migrate-cancel",
        "migrate_cmd:migrate_cancel",
        summary="cancel a domain's migration (it keeps running here)",
        description="Abort the migration job of domain NAME from any process; QEMU re-plugs "
        "the failover primaries and the domain keeps running on this host.",
        examples=["qctl migrate-cancel vm1"],
    )
    complete_domains(cancel.add_argument("name", metavar="NAME", help=DOMAIN_HELP))


def _device_verbs(sub: Subparsers) -> None:
    """Add the hot-plug commands."""
    attach = add_verb(
        sub,
        "attach-device",
        "device_cmd:attach",
        summary="hot-plug an <interface> or <hostdev> from a file",
        description="Hot-plug the device FILE.xml describes into the running domain NAME, "
        "as one transaction: on failure everything done is undone. Prints the device as the "
        "live XML shows it (alias, PCI address, tap); --json prints its model.",
        examples=[
            "qctl attach-device vm1 nic.xml",
            "qctl attach-device vm1 nic.xml --json | jq -r .alias",
        ],
    )
    complete_domains(attach.add_argument("name", metavar="NAME", help=DOMAIN_HELP))
    attach.add_argument("file", metavar="FILE.xml", help="an <interface> or <hostdev> document")

    detach = add_verb(
        sub,
        "detach-device",
        "device_cmd:detach",
        summary="unplug a device (by file or --alias)",
        description="Ask the guest to release a device and wait for QEMU's removal event. "
        "The device is named by a file (matched by alias, else MAC or host address) or by "
        "--alias. When the event has not come after --wait seconds the detach is 'pending': "
        "it completes whenever the guest lets go.",
        examples=[
            "qctl detach-device vm1 nic.xml",
            "qctl detach-device vm1 --alias ua-nic1 --wait 30 --json",
        ],
    )
    complete_domains(detach.add_argument("name", metavar="NAME", help=DOMAIN_HELP))
    target = detach.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "file", metavar="FILE.xml", nargs="?", help="the device's document (or use --alias)"
    )
    complete_aliases(
        target.add_argument("--alias", metavar="A", help="the device's alias (net0, ua-x, …)")
    )
    detach.add_argument("--wait", type=float, default=5.0, metavar="S", help=WAIT_HELP)

    events = add_verb(
        sub,
        "events",
        "device_cmd:events",
        summary="print a domain's events as they come",
        description="Print the events of the running domain NAME as they come: devices "
        "added and removed, unplugs the guest refused, NIC filter changes, shutdown. "
        "--json prints JSON Lines: one object per event and line.",
        examples=[
            "qctl events vm1 --count 1 --timeout 30",
            "qctl events vm1 --json | jq -c 'select(.event == \"DeviceRemoved\")'",
        ],
    )
    complete_domains(events.add_argument("name", metavar="NAME", help=DOMAIN_HELP))
    events.add_argument("--count", type=int, default=0, metavar="N", help="stop after N events")
    events.add_argument(
        "--timeout", type=float, default=0.0, metavar="S", help="stop after S seconds (0: never)"
    )


def _iface_verbs(sub: Subparsers) -> None:
    """Add the interface commands."""
    iflist = add_verb(
        sub,
        "domiflist",
        "iface_cmd:domiflist",
        summary="list a running domain's network interfaces",
        description="List the NICs of the running domain NAME: alias, type, source (bridge, "
        "network or host device), host tap, model, MAC, and the state qctl's ledger gives "
        "(attached, detaching, …). --json prints one object per NIC with those keys.",
        examples=["qctl domiflist vm1", "qctl domiflist vm1 --json | jq -r '.[].mac'"],
    )
    complete_domains(iflist.add_argument("name", metavar="NAME", help=DOMAIN_HELP))

    ifstat = add_verb(
        sub,
        "domifstat",
        "iface_cmd:domifstat",
        summary="traffic counters of a domain's NIC (its host tap)",
        description="Print the counters of the host tap behind a NIC of the running domain "
        "NAME, as the host sees them (rx: from the guest, tx: to the guest).",
        examples=["qctl domifstat vm1 net0", "qctl domifstat vm1 52:54:00:12:34:56 --json"],
    )
    complete_domains(ifstat.add_argument("name", metavar="NAME", help=DOMAIN_HELP))
    complete_aliases(
        ifstat.add_argument("interface", metavar="IFACE", help="the NIC's alias, tap or MAC")
    )

    attach = add_verb(
        sub,
        "attach-interface",
        "iface_cmd:attach_interface",
        summary="hot-plug a NIC described by options (no XML file)",
        description="Hot-plug a NIC into the running domain NAME, described as virsh "
        "describes it: its type, its source (the bridge or network; none for user and "
        "ethernet), and optionally model, MAC, alias and tap name. Prints the device as "
        "the live XML shows it; --json prints its model.",
        examples=[
            "qctl attach-interface vm1 --type bridge --source br0 --model virtio",
            "qctl attach-interface vm1 network lan --mac 52:54:00:00:00:02 --alias ua-lan",
            "qctl attach-interface vm1 --type user --model e1000e --json",
        ],
    )
    complete_domains(attach.add_argument("name", metavar="NAME", help=DOMAIN_HELP))
    _type_and_source(attach)
    attach.add_argument("--model", metavar="MODEL", help="virtio, e1000e, rtl8139, …")
    attach.add_argument("--mac", metavar="MAC", help="the guest MAC (default: chosen by qctl)")
    attach.add_argument("--alias", metavar="A", help="a user alias, ua-…")
    attach.add_argument("--target", metavar="TAP", help="the host tap's name")

    detach = add_verb(
        sub,
        "detach-interface",
        "iface_cmd:detach_interface",
        summary="unplug a NIC found by type and MAC (or alias)",
        description="Unplug the NIC of the running domain NAME that has the given type "
        "and, when the domain has several, the given --mac or --alias.",
        examples=[
            "qctl detach-interface vm1 --type bridge --mac 52:54:00:00:00:02",
            "qctl detach-interface vm1 user --alias ua-nic1 --wait 30",
        ],
    )
    complete_domains(detach.add_argument("name", metavar="NAME", help=DOMAIN_HELP))
    detach.add_argument("type_arg", nargs="?", choices=TYPES, metavar="TYPE", help=_TYPE_HELP)
    detach.add_argument("--type", choices=TYPES, help="the same as TYPE")
    detach.add_argument("--mac", metavar="MAC", help="the NIC's MAC")
    complete_aliases(detach.add_argument("--alias", metavar="A", help="the NIC's alias"))
    detach.add_argument("--wait", type=float, default=5.0, metavar="S", help=WAIT_HELP)


def _monitor_verbs(sub: Subparsers) -> None:
    """Add the ``qemu-monitor-command`` command."""
    monitor = add_verb(
        sub,
        "qemu-monitor-command",
        "monitor_cmd:run",
        summary="send a raw QMP command (or --hmp line) to a running domain",
        description="Send COMMAND to the QEMU of the running domain NAME and print the "
        "reply: QMP JSON such as '{\"execute\": \"query-status\"}' (or a bare command name), "
        'printed as {"return": …}; or with --hmp a human monitor line, printed as text. '
        "qctl's ledger does not know what such a command changes: the next connect "
        "reconciles devices added or removed this way.",
        examples=[
            "qctl qemu-monitor-command vm1 '{\"execute\": \"query-status\"}'",
            "qctl qemu-monitor-command vm1 --pretty query-pci",
            "qctl qemu-monitor-command vm1 --hmp 'info network'",
        ],
    )
    complete_domains(monitor.add_argument("name", metavar="NAME", help=DOMAIN_HELP))
    monitor.add_argument(
        "command", nargs="+", metavar="COMMAND", help="QMP JSON, or HMP with --hmp (words joined)"
    )
    monitor.add_argument("--hmp", action="store_true", help="COMMAND is a human monitor line")
    monitor.add_argument("--pretty", action="store_true", help="indent the QMP reply")


def _net_verbs(sub: Subparsers) -> None:
    """Add the network pool commands."""
    define = add_verb(
        sub,
        "net-define",
        "net_cmd:define",
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
        "net_cmd:list_",
        summary="list the pools and how many devices are held",
        description="List the defined networks: name, forward mode, and how many of their "
        "devices interfaces hold.",
        examples=["qctl net-list", "qctl net-list --json"],
    )

    dump = add_verb(
        sub,
        "net-dumpxml",
        "net_cmd:dumpxml",
        summary="a pool's XML and which interface holds each device",
        description="Print the network's XML, then a comment per device saying which "
        'domain and alias hold it. --json prints {"network": model, "devices": [...]}.',
        examples=["qctl net-dumpxml vfs", "qctl net-dumpxml vfs --json | jq .devices"],
    )
    complete_networks(dump.add_argument("name", metavar="NAME", help=NETWORK_HELP))

    undefine = add_verb(
        sub,
        "net-undefine",
        "net_cmd:undefine",
        summary="forget a pool none of whose devices is held",
        description="Forget the network NAME. Refused while an interface holds one of its "
        "devices; an unknown name is an error.",
        examples=["qctl net-undefine vfs"],
    )
    complete_networks(undefine.add_argument("name", metavar="NAME", help=NETWORK_HELP))


def _completion_verbs(sub: Subparsers) -> None:
    """Add the ``completion`` command."""
    completion = add_verb(
        sub,
        "completion",
        "complete:completion",
        summary="print the shell code that completes qctl's commands",
        description="Print the code that makes SHELL complete qctl's commands, options, "
        "domain names, device aliases and network names. Evaluate it in the shell's start-up "
        "file.",
        examples=[
            'eval "$(qctl completion bash)"     # in ~/.bashrc',
            'eval "$(qctl completion zsh)"      # in ~/.zshrc',
        ],
    )
    completion.add_argument("shell", choices=SHELLS, metavar="SHELL", help="bash or zsh")


#: Each group of verbs, in the order ``qctl --help`` lists them, with the verbs it declares
#: (tests/cli/test_parser.py checks each group declares exactly these).
VERB_GROUPS: tuple[tuple[Callable[[Subparsers], None], frozenset[str]], ...] = (
    (_conf_verbs, frozenset({"validate", "format"})),
    (_caps_verbs, frozenset({"caps"})),
    (_domain_verbs, frozenset({"start", "list", "stop", "domxml-to-argv", "dumpxml"})),
    (_job_verbs, frozenset({"job", "job-abort", "suspend", "resume", "domstate", "dominfo"})),
    (_device_verbs, frozenset({"attach-device", "detach-device", "events"})),
    (_migrate_verbs, frozenset({"migrate", "migrate-incoming", "migrate-cancel"})),
    (_console_verbs, frozenset({"console"})),
    (
        _iface_verbs,
        frozenset({"domiflist", "domifstat", "attach-interface", "detach-interface"}),
    ),
    (_monitor_verbs, frozenset({"qemu-monitor-command"})),
    (_net_verbs, frozenset({"net-define", "net-list", "net-dumpxml", "net-undefine"})),
    (_completion_verbs, frozenset({"completion"})),
)
