"""Packaging and the command line: what a newcomer installs and types first.

The wheel holds LICENSE, ``py.typed``, every Lua script and the static files;
each optional extra names what it brings, and a missing one says how to
install it; ``rtkit --version`` and ``--help`` show what they should.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import rtkit
from rtkit.cli import LOG_LEVELS, build_parser, main
from rtkit_testing import require

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
PROJECT = PYPROJECT["project"]
SOCKET_IO_STACK = {"python-socketio", "aiohttp", "pyjwt"}


def _names(requirements: list[str]) -> set[str]:
    return {r.split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip() for r in requirements}


def _python(code: str, *blocked: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where the modules ``blocked`` cannot be imported."""
    prelude = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in blocked)
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )


# ------------------------------------------------------------ metadata


def test_version_license_and_classifiers_say_what_is_true() -> None:
    assert PROJECT["version"] == rtkit.__version__
    assert PROJECT["license"] == "MIT"
    assert "MIT License" in (ROOT / "LICENSE").read_text("utf-8")
    versions = {
        c.rsplit(" :: ", 1)[1]
        for c in PROJECT["classifiers"]
        if c.startswith("Programming Language :: Python :: 3.")
    }
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert running in versions, f"the tests run on {running}, the classifiers say {versions}"
    assert PROJECT["requires-python"] == f">={min(versions, key=lambda v: int(v.split('.')[1]))}"


def test_the_gateway_extra_does_not_pull_the_socket_io_stack() -> None:
    extras = PROJECT["optional-dependencies"]
    assert not _names(extras["gateway"]) & SOCKET_IO_STACK
    assert _names(extras["realtime"]) >= SOCKET_IO_STACK
    assert extras["server"] == ["rtkit[gateway,realtime]"]
    assert PYPROJECT["project"]["entry-points"]["pytest11"] == {"rtkit": "rtkit.testing.plugin"}


def test_a_gateway_service_imports_without_the_socket_io_stack() -> None:
    done = _python(
        "from rtkit import ApiGateway, MicroService\n"
        "from rtkit.gateway import Route\n"
        "print(ApiGateway.__name__, MicroService.__name__, Route.__name__)\n",
        "socketio",
        "engineio",
        "aiohttp",
        "jwt",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ApiGateway", "MicroService", "Route"]


# ------------------------------------------------------------ missing extras


@pytest.mark.parametrize(
    ("code", "extra"),
    [
        ("import rtkit; rtkit.ApiGateway", "gateway"),
        ("import rtkit; rtkit.MicroService", "gateway"),
        ("from rtkit.gateway import ApiGateway", "gateway"),
        ("import rtkit.microservice", "gateway"),
        ("import rtkit.http", "gateway"),
        ("import rtkit; rtkit.RealtimeServer", "realtime"),
        ("from rtkit.realtime import ChatClient", "realtime"),
        ("from rtkit.realtime import ChatService", "realtime"),
        ("from rtkit.testing import ChatTestClient", "realtime"),
    ],
)
def test_a_missing_extra_says_how_to_install_it(code: str, extra: str) -> None:
    done = _python(code, "starlette", "httpx", "uvicorn", "socketio", "engineio", "jwt", "aiohttp")
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError:") and f"pip install 'rtkit[{extra}]'" in last, last


def test_what_needs_no_extra_imports_without_them() -> None:
    done = _python(
        "import rtkit\n"
        "from rtkit.realtime import MessageStore, ChatMessage\n"
        "from rtkit.gateway import ResponseCache\n"
        "from rtkit.testing import TestBroker, EventRecorder\n"
        "print(rtkit.EventBus.__name__)\n",
        *("starlette", "httpx", "uvicorn", "socketio", "engineio", "jwt", "aiohttp", "aio_pika"),
    )
    assert (done.returncode, done.stdout.strip()) == (0, "EventBus"), done.stderr


def test_rabbitmq_without_aio_pika_says_how_to_install_it() -> None:
    done = _python(
        "import asyncio\n"
        "from rtkit import RabbitMQService\n"
        "asyncio.run(RabbitMQService.from_url('amqp://guest:guest@127.0.0.1/').start())\n",
        "aio_pika",
        "aiormq",
    )
    assert "pip install 'rtkit[rabbitmq]'" in done.stderr.strip().splitlines()[-1]


def test_the_command_without_the_realtime_extra() -> None:
    code = "from rtkit.cli import main\nraise SystemExit(main({}))\n"
    blocked = ("socketio", "engineio", "jwt", "uvicorn", "starlette")
    done = _python(code.format(["serve", "--demo"]), *blocked)
    assert done.returncode == 2
    assert "rtkit serve: needs the realtime extra" in done.stderr
    assert "pip install 'rtkit[realtime]'" in done.stderr
    version = _python(code.format(["--version"]), *blocked)
    assert (version.returncode, version.stdout.strip()) == (0, f"rtkit {rtkit.__version__}")


# ------------------------------------------------------------ the command


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"rtkit {rtkit.__version__}"


def test_help_shows_every_default() -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, command in commands.items():
        for action in command._actions:
            shown = action.default not in (None, False) and action.dest != "help"
            if action.option_strings and action.help and shown:
                assert "(default:" in action.help, f"rtkit {name} {action.option_strings}"
            if action.dest in {"redis", "upload_dir", "cors_origin", "client_js_url", "name"}:
                assert action.help is not None and "default:" in action.help
    serve_help = commands["serve"].format_help()
    assert "(default: 8000)" in serve_help and "(default: info)" in serve_help


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--log-level", "loud"],
        ["serve", "--port", "0"],
        ["serve", "--port", "70000"],
        ["serve", "--presence-ttl", "-1"],
        ["serve", "--max-disconnection-duration", "-1"],
        ["serve", "--max-disconnection-duration", "inf"],
        ["token", "42", "--ttl", "nan"],
        ["serve", "--nonsense"],
    ],
)
def test_bad_arguments_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    assert "error:" in capsys.readouterr().err
    assert set(LOG_LEVELS) == {"critical", "error", "warning", "info", "debug", "trace"}


# ------------------------------------------------------------ the wheel


@pytest.mark.slow
def test_the_wheel_holds_the_license_types_scripts_and_static_files(tmp_path: Path) -> None:
    require(None if importlib.util.find_spec("hatchling") else "hatchling (the dev extra)")
    built = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from hatchling.build import build_wheel; print(build_wheel(sys.argv[1]))",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        cwd=ROOT,
    )
    wheel = tmp_path / built.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = next(n.split("/")[0] for n in names if ".dist-info/" in n)
        metadata = archive.read(f"{dist_info}/METADATA").decode()
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    assert f"{dist_info}/licenses/LICENSE" in names
    tracked = subprocess.run(
        ["git", "ls-files", "src/rtkit"], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    data = [p.removeprefix("src/") for p in tracked if not p.endswith(".py")]
    assert {"rtkit/py.typed", "rtkit/realtime/static/index.html"} <= set(data)
    assert any(p.endswith(".lua") for p in data)
    assert [p for p in data if p not in names] == []
    assert "License-Expression: MIT" in metadata
    assert "Provides-Extra: gateway" in metadata and "Provides-Extra: realtime" in metadata
    assert "rtkit = rtkit.cli:main" in entry_points
    assert "[pytest11]\nrtkit = rtkit.testing.plugin" in entry_points
