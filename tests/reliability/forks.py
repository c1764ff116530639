"""Fast separate processes for the reliability suite: a launcher that imports clearance once and
forks a child per job, running a function of ``workers.py`` with its output in a file.

A new Python process per kill would spend a second on imports each time; a fork starts at once
with nothing shared (no open database, no thread). The test kills a child itself
(``os.kill(pid, SIGKILL)``, its pid stays reserved until the launcher reaps it) and asks
:meth:`Forks.wait` for its end. At end of input the launcher kills whatever still runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from server_support import free_port

_LAUNCHER = r"""
import json, os, signal, sys, time, traceback
sys.path[:0] = json.loads(sys.argv[1])
import clearance, clearance.cli, clearance.server.app, clearance.server.runner, uvicorn, fastapi, sqlalchemy  # once
import workers

signal.signal(signal.SIGINT, signal.SIG_IGN)
children = set()


def run(job):
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        out = os.open(job["out"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        err = os.open(job["out"] + ".err", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        getattr(workers, job["func"])(**job["args"])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


ended = {}


def reap(pid):
    if pid not in ended:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            children.discard(pid)
            ended[pid] = os.waitstatus_to_exitcode(status)
    return pid in ended


def wait(pid, seconds):
    deadline = time.monotonic() + seconds
    while not reap(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = float("inf")
        time.sleep(0.005)
    return ended.pop(pid)


for line in sys.stdin:
    job = json.loads(line)
    if job["op"] == "fork":
        pid = os.fork()
        if pid == 0:
            run(job)
        children.add(pid)
        answer = pid
    elif job["op"] == "alive":
        answer = job["pid"] in children and not reap(job["pid"])
    else:  # wait
        answer = wait(job["pid"], job["seconds"])
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()

for pid in list(children):
    os.kill(pid, signal.SIGKILL)
    wait(pid, 10)
"""


class Forks:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, json.dumps(sys.path)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, bufsize=1)  # fmt: skip

    def _ask(self, **command: Any) -> Any:
        assert self._proc.stdin and self._proc.stdout
        with self._lock:
            self._proc.stdin.write(json.dumps(command) + "\n")
            answer = self._proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"the fork launcher exited with {self._proc.wait()}")
        return json.loads(answer)

    def start(self, func: str, out: Path, **args: Any) -> int:
        """Fork a child running ``workers.func(**args)``, its stdout in ``out`` (stderr in ``out.err``)."""
        return int(self._ask(op="fork", func=func, out=str(out), args=args))

    def alive(self, pid: int) -> bool:
        return bool(self._ask(op="alive", pid=pid))

    def wait(self, pid: int, seconds: float = 60) -> int:
        """The child's exit code once it ends (negative: the signal that ended it); killed past ``seconds``."""
        return int(self._ask(op="wait", pid=pid, seconds=seconds))

    def kill(self, pid: int) -> int:
        """SIGKILL the child (unless it has ended already) and its exit code."""
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # already reaped by an ``alive`` question
            pass
        return self.wait(pid)

    def serve(self, db: str, out: Path) -> tuple[int, str]:
        """``clearance serve`` on ``db`` (a SQLite path or a database URL) and its URL once it answers."""
        return self.serve_many(db, out, 1)[0]

    def serve_many(self, db: str, out: Path, n: int) -> list[tuple[int, str]]:
        """``n`` servers on one store, started together; each one's pid and URL once all answer."""
        ready: list[tuple[int, str]] = []
        for _ in range(3):  # a port found free may be taken before the child binds it
            started = []
            for _ in range(n - len(ready)):
                port = free_port()
                started.append((self.start("serve", out, db=db, port=port), f"http://127.0.0.1:{port}"))
            for pid, url in started:
                if self._healthy(pid, url):
                    ready.append((pid, url))
                else:
                    self.kill(pid)
            if len(ready) == n:
                return ready
        for pid, _ in ready:
            self.kill(pid)
        err = Path(f"{out}.err")
        raise RuntimeError(f"clearance serve did not start: {err.read_text() if err.exists() else ''}")

    def _healthy(self, pid: int, url: str) -> bool:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.alive(pid):
            try:
                if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                    return True
            except httpx.TransportError:
                time.sleep(0.02)
        return False

    def close(self) -> None:
        assert self._proc.stdin
        self._proc.stdin.close()
        self._proc.wait(timeout=30)
