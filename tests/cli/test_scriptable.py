"""The command line in scripts: closed pipes, global options anywhere, unknown names, state
directories that cannot be used, and ``--json`` on every verb that prints data.

Every command runs as its own process, through real pipes, as a script would run it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import pytest
from support import REPO_ROOT, run_qctl, unique

from qctl.cli import main as cli_main
from qctl.cli.parser import build_parser

EXAMPLES = REPO_ROOT / "examples"
QCTL = [sys.executable, "-m", "qctl.cli.main"]
POOL = "<network><name>lan</name><forward mode='bridge'/><bridge name='br0'/></network>"


def closed_pipe_run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run qctl with stdout on a pipe whose reader has already gone (so every write fails)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [*QCTL, *args], stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120
        )
    finally:
        os.close(write_end)


def shell(command: str) -> subprocess.CompletedProcess[str]:
    """Run a shell pipeline (``qctl`` is the command under test)."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, timeout=120, env=env
    )


# -- leaving without the interpreter's teardown ----------------------------------------------
def test_the_console_script_leaves_with_its_output_whole_and_its_exit_code(
    tmp_path: Path,
) -> None:
    script = Path(sys.executable).with_name("qctl")
    domain = str(EXAMPLES / "domain-basic.xml")
    for command in ([str(script)], QCTL):
        # a large output through a pipe, written out in full before the process ends
        formatted = subprocess.run(
            [*command, "format", "--json", domain], capture_output=True, text=True, timeout=120
        )
        assert formatted.returncode == 0 and json.loads(formatted.stdout)["name"]
        helped = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60)
        assert helped.returncode == 0 and helped.stderr == ""
        assert "attach-device" in helped.stdout
        wrong = subprocess.run([*command, "no-such-verb"], capture_output=True, text=True)
        assert wrong.returncode == 2 and "invalid choice" in wrong.stderr
        missing = subprocess.run(
            [*command, "list", "--state-dir", str(tmp_path / "nowhere")],
            capture_output=True,
            text=True,
        )
        assert missing.returncode == 8 and missing.stderr.startswith("qctl: ")


# -- closed pipes ----------------------------------------------------------------------------
@pytest.mark.qemu
def test_a_reader_that_went_away_ends_the_command_quietly(qemu_binary: str) -> None:
    domain = str(EXAMPLES / "domain-basic.xml")
    for args in (
        ["caps"],
        ["caps", "--json"],
        ["domxml-to-argv", domain],
        ["format", "--json", domain],
    ):
        result = closed_pipe_run(*args)
        assert result.stderr == "", (args, result.stderr)
        assert result.returncode == 141, args


@pytest.mark.qemu
def test_head_takes_the_first_line_and_nothing_is_said(qemu_binary: str) -> None:
    domain = EXAMPLES / "domain-basic.xml"
    for command in ("qctl caps | head -1", f"qctl domxml-to-argv {domain} | head -1"):
        result = shell(f"{command}; echo status=$? >&2")
        assert len(result.stdout.splitlines()) == 1, command
        assert result.stderr == "status=0\n", (command, result.stderr)


# -- global options --------------------------------------------------------------------------
def test_ctrl_c_before_the_verb_runs_is_quiet(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Ctrl-C while the parser is still being built (the faults script's double SIGINT
    found it) exits 130 without a traceback, as one during the verb does."""

    def interrupted(argv: object = None) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "build_parser", interrupted)
    during: list[object] = []
    chain = cli_main._chain

    def noted(exc: BaseException) -> list[BaseException]:
        during.append(signal.getsignal(signal.SIGINT))
        return chain(exc)

    monkeypatch.setattr(cli_main, "_chain", noted)
    hook, filters = sys.unraisablehook, list(warnings.filters)
    handler = signal.getsignal(signal.SIGINT)
    assert cli_main.main(["list"]) == 130
    assert capsys.readouterr() == ("", "")
    assert during == [signal.SIG_IGN]  # one more Ctrl-C meanwhile would change nothing
    # what it did to keep quiet is undone: main() may run in a longer-lived process
    assert (sys.unraisablehook, warnings.filters) == (hook, filters)
    assert signal.getsignal(signal.SIGINT) is handler


class _InterruptedWhenFreed:
    """What a Ctrl-C landing in a callback Python makes itself looks like: freeing it
    raises KeyboardInterrupt where nothing can catch it (the import system's module locks
    have such a weakref callback)."""

    def __del__(self) -> None:
        raise KeyboardInterrupt


def test_a_ctrl_c_python_can_only_report_still_ends_the_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ran_on: list[str] = []

    def interrupted_while_importing(argv: object = None) -> object:
        _InterruptedWhenFreed()  # made and freed at once: "Exception ignored in …"
        ran_on.append("after")  # Python goes on, until the Ctrl-C comes again
        for _ in range(100):
            time.sleep(0.01)
        ran_on.append("too far")
        return build_parser(None)

    monkeypatch.setattr(cli_main, "build_parser", interrupted_while_importing)
    hook = sys.unraisablehook
    assert cli_main.main(["list"]) == 130
    assert capsys.readouterr() == ("", "")  # no "Exception ignored", no listing
    assert ran_on == ["after"]
    assert sys.unraisablehook is hook


def test_a_ctrl_c_owed_as_the_command_ends_ends_it_and_never_lands_later(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def quick(argv: object = None) -> object:
        _InterruptedWhenFreed()
        return build_parser(None)  # ``list`` is done before the Ctrl-C could come again

    monkeypatch.setattr(cli_main, "build_parser", quick)
    monkeypatch.setattr(cli_main, "_REINTERRUPT_DELAY", 0.05)
    assert cli_main.main(["list"]) == 130  # raised by the block's end instead
    time.sleep(0.2)  # nothing lands here, in the caller, once main() returned
    assert capsys.readouterr().err == ""


def test_other_errors_python_can_only_report_are_reported_as_before() -> None:
    reported: list[object] = []

    class Failing:
        def __del__(self) -> None:
            raise ValueError("in __del__")

    hook = sys.unraisablehook
    sys.unraisablehook = reported.append
    try:
        with cli_main._ctrl_c_kept():
            Failing()
    finally:
        sys.unraisablehook = hook
    assert [type(r.exc_value) for r in reported] == [ValueError]  # type: ignore[attr-defined]


def test_a_second_ctrl_c_before_the_first_is_dealt_with_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def work() -> None:
        pass

    def interrupted(argv: object = None) -> None:
        never_started = work()  # noqa: F841 (what asyncio.run was given)
        raise KeyboardInterrupt

    real = signal.signal
    seconds: list[bool] = []

    def second_ctrl_c(signum: int, handler: object) -> object:
        if handler is signal.SIG_IGN and not seconds:  # it lands as SIGINT is held off
            seconds.append(True)
            raise KeyboardInterrupt
        return real(signum, handler)  # type: ignore[arg-type]

    monkeypatch.setattr(cli_main, "build_parser", interrupted)
    monkeypatch.setattr(signal, "signal", second_ctrl_c)
    handler = signal.getsignal(signal.SIGINT)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        assert cli_main.main(["list"]) == 130
    assert seconds and not said  # the first one's leftovers were dropped all the same
    assert capsys.readouterr() == ("", "")
    assert signal.getsignal(signal.SIGINT) is handler


def test_a_sigint_handler_set_outside_python_is_left_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # (getsignal says None then: Python could not set it back)
    def interrupted(argv: object = None) -> None:
        raise KeyboardInterrupt

    set_to: list[object] = []
    monkeypatch.setattr(cli_main, "build_parser", interrupted)
    monkeypatch.setattr(signal, "getsignal", lambda signum: None)
    monkeypatch.setattr(signal, "signal", lambda signum, handler: set_to.append(handler))
    assert cli_main.main(["list"]) == 130
    assert set_to == []


_LATE = """
import sys
from qctl.cli import main as cli_main

def late(argv=None):
    raise KeyboardInterrupt  # as main() returns 130 after dealing with the first

cli_main.main = late
cli_main.entry()
"""


def test_a_ctrl_c_as_main_returns_ends_the_command_with_130_quietly() -> None:
    done = subprocess.run([sys.executable, "-c", _LATE], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (130, "")


def test_ctrl_c_in_main_run_off_the_main_thread_is_quiet_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # (no signal handler can be set there: nothing is held off, nothing fails)
    def interrupted(argv: object = None) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "build_parser", interrupted)
    handler = signal.getsignal(signal.SIGINT)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(cli_main.main(["list"])))
    thread.start()
    thread.join(10)
    assert codes == [130] and capsys.readouterr() == ("", "")
    assert signal.getsignal(signal.SIGINT) is handler


_HALF_MADE = """
import asyncio, sys
from asyncio.unix_events import _UnixSelectorEventLoop
from qctl.cli import main as cli_main

async def work():
    pass

def half_made():
    never_started = work()  # what asyncio.run was given
    cut_short = object.__new__(_UnixSelectorEventLoop)  # its constructor interrupted…
    in_a_cycle = object.__new__(_UnixSelectorEventLoop)  # …later: its self-pipe reader
    in_a_cycle.itself = in_a_cycle  # makes a cycle
    return never_started, cut_short, in_a_cycle

def cut_short(argv=None):
    made = half_made()
    raise KeyboardInterrupt

def second_in_cleanup(argv=None):
    def first():
        made = half_made()
        raise KeyboardInterrupt
    try:
        first()
    finally:  # the first Ctrl-C's frames live on in the second's __context__
        raise KeyboardInterrupt

def wrapped_by_an_import(argv=None):
    made = half_made()
    raise RuntimeError("Error calling __set_name__") from KeyboardInterrupt()

cli_main.build_parser = globals()[sys.argv[1]]
sys.argv[1:] = ["list"]
cli_main.entry()  # as the qctl command ends: os._exit
"""


@pytest.mark.parametrize("how", ["cut_short", "second_in_cleanup", "wrapped_by_an_import"])
def test_ctrl_c_leaves_nothing_half_made_speaking_on_the_way_out(how: str) -> None:
    """A Ctrl-C inside ``asyncio.run`` (the faults script's double SIGINT) left a coroutine
    never awaited and an event loop whose ``__del__`` fails: both spoke on stderr as they
    were freed, wherever in the chain of exceptions their frames were."""
    done = subprocess.run(
        [sys.executable, "-c", _HALF_MADE, how], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stderr) == (130, "")


def test_ctrl_c_wrapped_by_an_import_is_quiet_and_other_errors_are_not(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Ctrl-C landing in a class's ``__set_name__`` while a module is imported reaches us
    as a RuntimeError caused by it (the faults script found one in ``platform``)."""

    def wrapped(argv: object = None) -> None:
        raise RuntimeError("Error calling __set_name__") from KeyboardInterrupt()

    monkeypatch.setattr(cli_main, "build_parser", wrapped)
    assert cli_main.main(["list"]) == 130
    assert capsys.readouterr() == ("", "")

    def broken(argv: object = None) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli_main, "build_parser", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        cli_main.main(["list"])


def test_global_options_go_before_or_after_the_verb(tmp_path: Path) -> None:
    state = tmp_path / "state"
    pool = tmp_path / "lan.xml"
    pool.write_text(POOL)
    run_qctl("net-define", str(pool), state=state)
    outputs = [
        subprocess.run(
            [*QCTL, *args], capture_output=True, text=True, check=True, timeout=60
        ).stdout
        for args in (
            ["--state-dir", str(state), "--json", "net-list"],
            ["net-list", "--json", "--state-dir", str(state)],
            ["--json", "net-list", "--state-dir", str(state)],
        )
    ]
    assert json.loads(outputs[0]) == [{"name": "lan", "mode": "bridge", "held": 0}]
    assert outputs[1] == outputs[0] and outputs[2] == outputs[0]


def test_debug_before_the_verb_shows_the_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [*QCTL, "--debug", "net-undefine", "nosuch", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "Traceback" in result.stderr


# -- unknown names and unusable state directories ----------------------------------------------
@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["net-undefine", "nosuch"], 8, "no network named 'nosuch'"),
        (["net-dumpxml", "nosuch"], 8, "no network named 'nosuch'"),
        (["dumpxml", "nosuch"], 8, "no domain named 'nosuch'"),
        (["domiflist", "nosuch"], 8, "no domain named 'nosuch'"),
        (["stop", "nosuch"], 8, "no domain named 'nosuch'"),
        (["qemu-monitor-command", "nosuch", "query-status"], 8, "no domain named 'nosuch'"),
    ],
)
def test_an_unknown_name_is_one_line_and_a_failure(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    (tmp_path / "state").mkdir()
    result = run_qctl(*args, state=tmp_path / "state", check=False)
    assert result.returncode == code
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr


@pytest.mark.parametrize("verb", ["list", "net-list"])
def test_a_state_dir_that_is_a_file_is_an_error(tmp_path: Path, verb: str) -> None:
    afile = tmp_path / "state"
    afile.write_text("")
    result = run_qctl(verb, state=afile, check=False)
    assert result.returncode == 8
    assert result.stderr == f"qctl: refusing state directory {afile}: it is not a directory\n"
    assert result.stdout == ""


@pytest.mark.parametrize("verb", ["list", "net-list"])
def test_a_mistyped_state_dir_is_an_error_not_an_empty_list(tmp_path: Path, verb: str) -> None:
    result = run_qctl(verb, state=tmp_path / "sate", check=False)
    assert result.returncode == 8
    assert result.stderr == f"qctl: no state directory {tmp_path / 'sate'}\n"


def test_an_unreadable_state_dir_is_an_error() -> None:
    """A state directory its user may not read (mode 0). Root reads anything, so as root
    the command runs without the capabilities that override file modes (still uid 0: it
    can read the checkout wherever it is, also a 0700 temporary clone)."""
    state = Path(tempfile.mkdtemp(prefix="qctl-state-"))
    command = [*QCTL, "list", "--state-dir", str(state)]
    if os.geteuid() == 0:
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *command]
    state.chmod(0)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    finally:
        state.chmod(0o700)
        state.rmdir()
    assert result.returncode == 8
    assert result.stderr == f"qctl: cannot open state directory {state}: Permission denied\n"


# -- help ------------------------------------------------------------------------------------
def test_every_verb_has_a_description_an_example_and_help_for_its_arguments() -> None:
    parser = build_parser()
    verbs = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, verb in verbs.items():
        assert verb.description, name
        assert verb.epilog and verb.epilog.startswith("examples:\n"), name
        assert f"qctl {name}" in verb.epilog, name
        for action in verb._actions:
            assert action.help, f"{name}: {action.dest} has no help"


def test_dumpxml_help_says_live_by_default() -> None:
    out = subprocess.run(
        [*QCTL, "dumpxml", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--inactive" in out and "live XML" in out


# -- --json on every verb that prints data ------------------------------------------------------
#: verbs whose output is not data here: ``completion`` prints shell code, ``console`` is a
#: terminal; the migration verbs print JSON Lines (progress, then the outcome), checked by
#: the migration guest tests, which have the two hosts and the guest they need
NOT_DATA = {"completion", "migrate", "migrate-incoming", "console"}

SPARE_PORTS = "\n".join(
    f"    <controller type='pci' index='{i}' model='pcie-root-port'/>" for i in range(1, 4)
)


def bios_domain(name: str, console: Path) -> str:
    """A small q35 TCG domain with no OS (SeaBIOS only), spare ports for hot-plug."""
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <serial type='file'><source path='{console}'/></serial>
{SPARE_PORTS}
  </devices>
</domain>
"""


def json_of(*args: str, state: Path) -> object:
    """Run a verb with ``--json``; its stdout must be one JSON document."""
    return json.loads(run_qctl(*args, "--json", state=state).stdout)


@pytest.mark.qemu
def test_every_verb_that_prints_data_prints_json(tun: None, tmp_path: Path) -> None:
    state = tmp_path / "state"
    ran: set[str] = set()

    def data(verb: str, *args: str) -> object:
        ran.add(verb)
        return json_of(verb, *args, state=state)

    domain_file = tmp_path / "domain.xml"
    name = unique("json")
    domain_file.write_text(bios_domain(name, tmp_path / "serial.log"))
    pool = tmp_path / "lan.xml"
    pool.write_text(POOL)
    nic = tmp_path / "nic.xml"
    nic.write_text(
        "<interface type='user'><mac address='52:54:00:30:00:07'/><model type='virtio'/>"
        "<alias name='ua-j1'/></interface>"
    )

    assert data("validate", str(domain_file)) == [
        {"file": str(domain_file), "valid": True, "problems": [], "warnings": []}
    ]
    device = data("format", str(nic))
    assert isinstance(device, dict) and device["kind"] == "interface"
    assert isinstance(data("caps"), dict)
    assert isinstance(data("domxml-to-argv", str(domain_file)), list)
    assert data("net-define", str(pool)) == json_of("format", str(pool), state=state)
    assert data("net-list")[0]["name"] == "lan"  # type: ignore[index]
    assert data("net-dumpxml", "lan") == {
        "network": json_of("format", str(pool), state=state),
        "devices": [],
    }
    assert data("net-undefine", "lan") == {"network": "lan", "result": "undefined"}

    started = data("start", str(domain_file))
    try:
        assert started == {  # a line of `list`, the same JSON
            "name": name,
            "pid": started["pid"],  # type: ignore[index]
            "state": "running",
            "job": None,
            "detach_pending": [],
            "error": None,
        }
        assert data("list") == [started]
        events = ["events", name, "--json", "--count", "2", "--timeout", "60"]
        listener = subprocess.Popen(
            [*QCTL, *events, "--state-dir", str(state)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert listener.stderr is not None and "listening" in listener.stderr.readline()
        for command in ("stop", "cont"):  # a STOP and a RESUME event for the listener
            data("qemu-monitor-command", name, json.dumps({"execute": command}))
        out, _ = listener.communicate(timeout=60)
        ran.add("events")
        lines = [json.loads(line) for line in out.splitlines()]  # JSON Lines: one per line
        assert [line["name"] for line in lines] == ["STOP", "RESUME"]

        # A device is the same object whichever verb prints it.
        attached = data("attach-device", name, str(nic))
        assert attached == {**device, "alias": "ua-j1", "address": attached["address"]}  # type: ignore[index]
        tap = data("attach-interface", name, "--type", "ethernet", "--model", "virtio")
        assert tap["kind"] == "interface" and tap["target_dev"]  # type: ignore[index]
        rows = data("domiflist", name)
        assert [r["alias"] for r in rows] == ["ua-j1", tap["alias"]]  # type: ignore[index]
        stats = data("domifstat", name, tap["alias"])  # type: ignore[index]
        assert stats["tap"] == tap["target_dev"] and stats["rx_bytes"] >= 0  # type: ignore[index]
        live = data("dumpxml", name)
        assert live["name"] == name  # type: ignore[index]
        assert data("qemu-monitor-command", name, "--hmp", "info", "network")
        # No OS answers the unplug request: the detaches are pending, and say so.
        assert data("detach-device", name, "--alias", "ua-j1", "--wait", "0.2") == {
            "domain": name,
            "alias": "ua-j1",
            "result": "pending",
        }
        assert data("detach-interface", name, "ethernet", "--wait", "0.2")["result"] == "pending"  # type: ignore[index]
        # The job and run-state verbs.
        assert data("job", name) == {"domain": name, "job": None}
        info = data("dominfo", name)
        assert info["detach_pending"] == ["ua-j1", tap["alias"]]  # type: ignore[index]
        assert data("suspend", name) == {"domain": name, "result": "suspended"}
        assert data("domstate", name) == {"domain": name, "state": "paused"}
        assert data("resume", name) == {"domain": name, "result": "resumed"}
        # No job runs to abort or migration to cancel: an error, one line, no data.
        for verb in ("job-abort", "migrate-cancel"):
            refused = run_qctl(verb, name, "--json", state=state, check=False)
            ran.add(verb)
            assert refused.returncode == 8 and refused.stdout == ""
            assert "has no job running" in refused.stderr
    finally:
        assert data("stop", name, "--force") == {"domain": name, "result": "stopped"}

    verbs = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert verbs - NOT_DATA - ran == set(), "verbs printing data without a --json check"
