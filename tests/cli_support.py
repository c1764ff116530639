"""``python -m clearance ARGS`` as a shell runs it, without an interpreter start-up each time.

:func:`run_cli` answers what ``subprocess.run([sys.executable, "-m", "clearance", *args],
capture_output=True, text=True)`` answers: a separate process with its own argv, environment,
working directory, stdin, stdout and stderr, its exit code as Python gives it (``SystemExit``
codes, 1 with the traceback for an uncaught exception, ``-N`` when killed by signal N). The
process is forked from a launcher that has already imported the libraries the CLI needs
(SQLAlchemy, alembic, numpy, typer, rich, openai, the engine: most of a second each time, and a suite
runs the CLI dozens of times). ``clearance.cli`` itself is not imported beforehand, so the CLI
module, its consoles and everything it reads at import start fresh in each process, with that
process's environment; ``clearance/__main__.py`` runs as ``-m`` runs it (``runpy``).

Where ``fork`` is missing (Windows), it is ``subprocess.run`` itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["run_cli"]

#: Imported once by the launcher: what every CLI command pays for before it does anything.
PRELOAD = ("clearance", "clearance.engine", "clearance.store", "sqlalchemy.dialects.sqlite", "alembic.command",
           "alembic.config", "numpy", "usearch.index", "typer", "rich.console", "rich.table", "yaml", "openai")  # fmt: skip

_LAUNCHER = r"""
import importlib, io, json, os, runpy, signal, sys, time, traceback

for name in sys.argv[1:]:
    importlib.import_module(name)


def child(job):
    code = 1
    try:
        os.chdir(job["cwd"])
        os.environ.clear()
        os.environ.update(job["env"])
        for fd, path, flags in ((0, job["stdin"], os.O_RDONLY), (1, job["stdout"], os.O_WRONLY | os.O_TRUNC),
                                (2, job["stderr"], os.O_WRONLY | os.O_TRUNC)):
            opened = os.open(path, flags)
            os.dup2(opened, fd)
            os.close(opened)
        # the launcher's stdin object has read its commands: the CLI gets a fresh one on the new fd 0
        sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)),
                                     encoding=sys.stdin.encoding, errors=sys.stdin.errors)
        sys.argv = ["-m", *job["args"]]  # run_module puts the path of clearance/__main__.py first, as -m does
        try:
            runpy.run_module("clearance", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:  # as the interpreter treats it
            if exc.code is None:
                code = 0
            elif isinstance(exc.code, int):
                code = exc.code & 0xFF
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:  # noqa: BLE001 - an uncaught exception: traceback on stderr, exit 1
            traceback.print_exc()
            code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        child(job)
    deadline, pause = time.monotonic() + job["timeout"], 0.001
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            answer = {"returncode": os.waitstatus_to_exitcode(status)}
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            answer = {"timeout": True}
            break
        time.sleep(pause)
        pause = min(pause * 2, 0.02)
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
"""


class _Launcher:
    def __init__(self) -> None:
        self._log = tempfile.NamedTemporaryFile(prefix="clearance-cli-launcher-", suffix=".log", delete=False)  # noqa: SIM115
        self._proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, *PRELOAD], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1)  # fmt: skip
        self._lock = threading.Lock()

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        assert self._proc.stdin and self._proc.stdout
        with self._lock:
            self._proc.stdin.write(json.dumps(job) + "\n")
            answer = self._proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"the CLI launcher exited with {self._proc.wait()}: {Path(self._log.name).read_text()}")
        return json.loads(answer)  # type: ignore[no-any-return]

    def close(self) -> None:
        assert self._proc.stdin
        self._proc.stdin.close()
        self._proc.wait(timeout=30)
        self._log.close()
        os.unlink(self._log.name)


_launcher: _Launcher | None = None
_launcher_lock = threading.Lock()


def _shared() -> _Launcher:
    global _launcher
    with _launcher_lock:
        if _launcher is None:
            import atexit

            _launcher = _Launcher()
            atexit.register(_launcher.close)
        return _launcher


def run_cli(args: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
            input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``subprocess.run([sys.executable, "-m", "clearance", *args], capture_output=True, text=True,
    env=env, cwd=cwd, input=input, timeout=timeout)``, in a process forked from the launcher."""
    argv = [sys.executable, "-m", "clearance", *args]
    environ = dict(os.environ if env is None else env)
    if not hasattr(os, "fork"):
        return subprocess.run(argv, capture_output=True, text=True, env=environ, cwd=cwd, input=input, timeout=timeout)
    with tempfile.TemporaryDirectory(prefix="clearance-cli-") as tmp:
        files = {name: Path(tmp, name) for name in ("stdin", "stdout", "stderr")}
        files["stdin"].write_text(input or "")
        files["stdout"].touch()
        files["stderr"].touch()
        answer = _shared().run({"args": list(args), "env": environ, "cwd": str(cwd or os.getcwd()), "timeout": timeout,
                                **{name: str(path) for name, path in files.items()}})  # fmt: skip
        if answer.get("timeout"):
            raise subprocess.TimeoutExpired(argv, timeout)
        return subprocess.CompletedProcess(argv, answer["returncode"], files["stdout"].read_text(),
                                           files["stderr"].read_text())  # fmt: skip
