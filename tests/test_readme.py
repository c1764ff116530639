"""The README's examples run as written."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_python_example_runs(tmp_path: Path, monkeypatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks, "the README has a Python example"
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "rules.yaml").write_text((ROOT / "examples" / "rules.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    assert (tmp_path / "demo.db").exists()


def test_quick_start_main_command_runs(tmp_path: Path) -> None:
    first = re.search(r"```bash\n(pip install \. && clearance [^\n]+)\n```", README)
    assert first, "the quick start begins with an install-and-run command"
    argv = shlex.split(first.group(1).split("&&", 1)[1])
    assert argv[0] == "clearance"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    res = subprocess.run([sys.executable, "-m", "clearance", *argv[1:]], cwd=tmp_path, capture_output=True, text=True,
                         env=dict(env, COLUMNS="160"), timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    for shown in ("executed", "blocked", "approval_required", "approved by", "Outcome", "hash chain intact"):
        assert shown in res.stdout, shown
    assert (tmp_path / "clearance-demo.db").exists()
