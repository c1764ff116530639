"""Loading the shared bench data (never copied into the repository)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.decision_quality.config import REPO_ROOT


class DataMissing(FileNotFoundError):
    pass


def data_root(cfg: dict[str, Any]) -> Path:
    p = Path(cfg["data_dir"])
    return p if p.is_absolute() else (REPO_ROOT / p).resolve()


def _need(path: Path) -> Path:
    if not path.exists():
        raise DataMissing(
            f"bench data not found: {path}. The decision-quality benchmark reads its data from "
            f"../shared/bench-data/ next to the repository (config key data_dir); it is not in "
            f"the repository. See that folder's README for sources and licences."
        )
    return path


def agentdojo_calls(
    cfg: dict[str, Any], suite: str, version: str = "v1_2_2"
) -> list[dict[str, Any]]:
    path = _need(
        data_root(cfg) / "agentdojo-gt-calls" / version / f"{suite}_calls.jsonl"
    )
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def retail(cfg: dict[str, Any], split: str = "train") -> dict[str, Any]:
    """tau-bench retail: the tasks of ``split`` (``train``, ``dev`` or ``all``), orders, users."""
    root = data_root(cfg) / "tau-bench" / "retail"
    tasks = []
    for split in ("train", "dev") if split == "all" else (split,):
        path = _need(root / f"tasks_{split}.jsonl")
        tasks += [
            json.loads(line) for line in path.read_text().splitlines() if line.strip()
        ]
    return {
        "tasks": tasks,
        "orders": json.loads(_need(root / "orders.json").read_text()),
        "users": json.loads(_need(root / "users.json").read_text()),
    }
