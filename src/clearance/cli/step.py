"""``clearance step run`` and ``clearance step stream``: a ChatStep in batch and stream modes.

Stream mode reads newline-delimited JSON messages and writes exactly one line per message, in
order: the step's output, or an error for that message (the stream goes on). A message is
``{"inputs": {...}, "metadata": {...}}`` (``payload`` is accepted for ``inputs``, as in the
engram), or the inputs object itself. ``metadata`` is copied to the output line, enriched with
``type``, ``provider`` and ``model``. End of input ends the process cleanly; so does SIGTERM,
after the message in hand is answered.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

step_app = typer.Typer(help="Run a configured, governed model call (openai-chat-engram's step) in batch or stream mode.",
                       no_args_is_help=True)  # fmt: skip

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The step's YAML configuration.", exists=True, dir_okay=False)]


def _step(config: Path) -> Any:
    from clearance.cli import _engine
    from clearance.step import ChatStep

    return ChatStep.from_yaml(config, engine=_engine(quiet=True))


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))


@step_app.command("run")
def step_run(
    config: ConfigOption,
    input: Annotated[str, typer.Option("--input", "-i", help="A JSON file with the step's inputs, or - for stdin.")] = "-",
) -> None:
    """Read one JSON input, run the step once, print one JSON output."""
    from clearance.cli.failures import Refusal

    try:
        text = sys.stdin.read() if input == "-" else Path(input).read_text(encoding="utf-8")
    except OSError as exc:
        raise Refusal(f"cannot read the input {input}: {exc.strerror or exc}; give a JSON file with --input, or - for stdin") from None
    try:
        inputs = json.loads(text)
    except ValueError as exc:
        raise Refusal(f"the input {'on stdin' if input == '-' else input} is not JSON: {exc}") from None
    step = _step(config)
    try:
        print(_dumps(step.run(inputs)))
    finally:
        step.close()


def _split(message: Any) -> tuple[Any, dict[str, Any]]:
    if not isinstance(message, dict):
        return message, {}
    metadata = message.get("metadata") if isinstance(message.get("metadata"), dict) else {}
    for key in ("inputs", "payload"):
        if key in message:
            return message[key], metadata
    return message, {}


def serve_lines(step: Any, lines: TextIO, out: TextIO, should_stop: Any = lambda: False) -> int:
    """Answer each line of ``lines`` on ``out``; returns how many were answered."""
    count = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        metadata: dict[str, Any] = {}
        try:
            inputs, metadata = _split(json.loads(line))
            output = step.run(inputs)
            record = {"metadata": {**metadata, "type": "chat.step.result", "provider": output["provider"],
                                   "model": output["model"]}, "output": output}  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - a bad message or a failed call answers that message only
            record = {"metadata": {**metadata, "type": "chat.step.error", "provider": None, "model": None},
                      "error": {"type": type(exc).__name__, "message": str(exc), "line": number}}  # fmt: skip
        out.write(_dumps(record) + "\n")
        out.flush()
        count += 1
        if should_stop():
            break
    return count


@step_app.command("stream")
def step_stream(config: ConfigOption) -> None:
    """Answer newline-delimited JSON messages from stdin, one output line each, in order."""
    busy = {"now": False, "stop": False}

    def on_term(signum: int, frame: Any) -> None:
        if busy["now"]:
            busy["stop"] = True  # finish the message in hand, then stop
        else:
            raise SystemExit(0)

    previous = signal.signal(signal.SIGTERM, on_term)
    step = _step(config)
    print("clearance step stream: ready", file=sys.stderr, flush=True)

    class _Lines:
        """stdin, marking when a message is in hand."""

        def __iter__(self) -> Any:
            for line in sys.stdin:
                busy["now"] = True
                yield line
                busy["now"] = False
                if busy["stop"]:
                    return

    try:
        serve_lines(step, _Lines(), sys.stdout, should_stop=lambda: busy["stop"])  # type: ignore[arg-type]
    finally:
        signal.signal(signal.SIGTERM, previous)
        step.close()


__all__ = ["serve_lines", "step_app"]
