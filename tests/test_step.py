"""ChatStep and `clearance step run|stream`: the engram's workflow step, governed.

Real SDK -> ScriptedOpenAI on loopback -> real SQLite; the CLI runs as a real subprocess (forked
from a launcher that has paid for the imports, cli_support.run_cli, or for the SIGTERM tests a
fresh interpreter).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from adapter_support import declared
from cli_support import run_cli
from openai_spec import assert_valid

from clearance import Engine, parse_rules
from clearance.step import SETTINGS, ChatStep, StepConfigError
from clearance.testing import ScriptedOpenAI, turn

Serve = Callable[..., ScriptedOpenAI]

#: The engram README's example configuration and payload, as documented.
ENGRAM_CONFIG = """
defaultModel: gpt-4o-mini
defaultTemperature: 0.2
tools:
- name: run_story
  description: Trigger a follow-up story with inputs
  parameters:
    type: object
    properties:
      storyName: { type: string }
      inputs: { type: object }
structuredToolName: extract_fields
dispatchTools:
  run_story: create-ticket-story
"""
ENGRAM_PAYLOAD = {
    "history": [{"role": "user", "content": "Create a ticket for server outage."}],
    "systemPrompt": "Be concise.",
    "userPrompt": "Priority should be high and tags: ops, urgent",
    "temperature": 0.1,
    "model": "gpt-4o-mini",
}
STORY_CALL = turn.function_call("run_story", {"storyName": "create-ticket-story", "inputs": {"priority": "high", "tags": ["ops", "urgent"]}})
EXTRACT = turn.text("I've extracted the relevant fields from the conversation.") + turn.function_call(
    "extract_fields", {"customer_name": "Alice", "issue_type": "billing", "priority": "high"})


def step_for(server: ScriptedOpenAI, engine: Engine, config: str | dict = ENGRAM_CONFIG, **kw: Any) -> ChatStep:
    data = yaml.safe_load(config) if isinstance(config, str) else config
    kw.setdefault("base_url", server.base_url)
    kw.setdefault("openai_api_key", "test")
    return ChatStep(data, engine=engine, **kw)


def body(server: ScriptedOpenAI, i: int = 0) -> dict[str, Any]:
    return server.requests[i].json  # type: ignore[no-any-return]


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_the_engram_example_dispatches_its_story(serve: Serve, engine: Engine, api: str) -> None:
    server = serve(STORY_CALL)
    config = yaml.safe_load(ENGRAM_CONFIG) | {"useResponsesAPI": api == "responses"}
    out = step_for(server, engine, config).run(ENGRAM_PAYLOAD)
    assert out["action_request"] == {"tool": "run_story", "target": "create-ticket-story",
                                     "inputs": {"priority": "high", "tags": ["ops", "urgent"]}}  # fmt: skip
    assert out["status"] == "completed" and out["api"] == api and out["provider"] == "openai"
    assert out["execution"]["last"]["decision"]["result"] == "allowed", "the dispatch was governed"
    sent = body(server)
    assert sent["model"] == "gpt-4o-mini" and sent["temperature"] == 0.1 and sent["top_p"] == 0.9
    if api == "chat":
        assert server.requests[0].path == "/v1/chat/completions"
        assert [(m["role"], m["content"]) for m in sent["messages"]] == [
            ("system", "Be concise."), ("user", "Create a ticket for server outage."),
            ("user", "Priority should be high and tags: ops, urgent")]  # fmt: skip
        assert sent["tools"][0]["function"]["name"] == "run_story" and sent["tools"][0]["function"]["strict"] is False
    else:
        assert server.requests[0].path == "/v1/responses"
        assert [m["role"] for m in sent["input"]] == ["system", "user", "user"]
    assert len(server.requests) == 1, "a step is one model call"


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_the_engram_example_extracts_structured_fields(serve: Serve, engine: Engine, api: str) -> None:
    server = serve(EXTRACT)
    config = yaml.safe_load(ENGRAM_CONFIG) | {"useResponsesAPI": api == "responses"}
    out = step_for(server, engine, config).run(ENGRAM_PAYLOAD)
    assert out["structured"] == {"customer_name": "Alice", "issue_type": "billing", "priority": "high"}
    assert out["text"] == "I've extracted the relevant fields from the conversation." and out["action_request"] is None


def test_a_blocked_dispatch_is_not_requested(serve: Serve, engine: Engine) -> None:
    engine.apply_rules(parse_rules("version: 1\nrules:\n  - id: no-stories\n    tool: run_story\n    effect: block\n"))
    server = serve(STORY_CALL)
    out = step_for(server, engine).run(ENGRAM_PAYLOAD)
    assert out["action_request"] is None and out["execution"]["last"]["status"] == "blocked"


def test_declared_tools_come_back_as_tool_calls(serve: Serve, engine: Engine) -> None:
    server = serve(turn.function_call("lookup", {"q": "outage"}))
    config = {"tools": [{"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}},
                                                          "required": ["q"], "additionalProperties": False}}]}  # fmt: skip
    out = step_for(server, engine, config).run({"userPrompt": "look it up"})
    [call] = out["tool_calls"]
    assert call["name"] == "lookup" and call["arguments"] == {"q": "outage"} and call["request_id"]


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_the_engram_example_on_azure_urls(serve: Serve, engine: Engine, api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    server = serve(STORY_CALL)
    monkeypatch.setenv("AZURE_ENDPOINT", server.azure_endpoint)
    monkeypatch.setenv("AZURE_API_KEY", "azure-key")
    config = yaml.safe_load(ENGRAM_CONFIG) | {"useResponsesAPI": api == "responses"}
    out = ChatStep(config, engine=engine).run(ENGRAM_PAYLOAD)
    assert out["provider"] == "azure" and out["action_request"]["target"] == "create-ticket-story"
    [rec] = server.requests
    assert rec.path == ("/openai/deployments/gpt-4o-mini/chat/completions" if api == "chat" else "/openai/responses")
    assert rec.query == {"api-version": "2024-06-01"} and rec.headers.get("api-key") == "azure-key"


#: A value for each setting; where each API puts it is SETTINGS' business, checked on the wire.
SAMPLES: dict[str, Any] = {
    "temperature": 0.3, "top_p": 0.5, "max_output_tokens": 77, "max_completion_tokens": 66, "max_tokens": 55,
    "presence_penalty": 0.4, "frequency_penalty": -0.2, "reasoning_effort": "low", "service_tier": "flex",
    "verbosity": "high", "stop": ["END"], "store": True, "parallel_tool_calls": False, "logprobs": True,
    "top_logprobs": 3, "n": 2, "seed": 42, "prompt_cache_key": "pck", "safety_identifier": "sid", "user": "u-1",
    "metadata": {"team": "ops"}, "logit_bias": {"50256": -100}, "tool_choice": "none",
    "audio": {"format": "mp3", "voice": "alloy"}, "prediction": "the file as it was",
}  # fmt: skip
WIRE_VALUE = {"logit_bias": {"50256": -100}, "prediction": {"type": "content", "content": "the file as it was"}}


def _at(body: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        body = body[part]
    return body


@pytest.mark.parametrize("name", sorted(SETTINGS))
@pytest.mark.parametrize("api", ["chat", "responses"])
def test_every_override_reaches_the_wire_under_its_name_or_is_refused(serve: Serve, engine: Engine, api: str, name: str) -> None:
    assert set(SAMPLES) == set(SETTINGS)
    responses_name, chat_name = SETTINGS[name]
    wire_name = chat_name if api == "chat" else responses_name
    wire_path = {"reasoning.effort": "reasoning.effort", "text.verbosity": "text.verbosity"}.get(wire_name or "", wire_name)
    server = serve(turn.text("ok"))
    step = step_for(server, engine, {"api": api, "temperature": None, "top_p": None})
    if wire_name is None:
        with pytest.raises(StepConfigError, match=f"{name} is not a setting of the"):
            step.run({"userPrompt": "hi", name: SAMPLES[name]})
        assert server.requests == [], "nothing is sent when a setting cannot be"
        return
    step.run({"userPrompt": "hi", name: SAMPLES[name]})
    sent = body(server)
    assert _at(sent, wire_path) == WIRE_VALUE.get(name, SAMPLES[name])  # type: ignore[arg-type]
    schema = "CreateChatCompletionRequest" if api == "chat" else "CreateResponse"
    assert set(sent) <= declared(schema), set(sent) - declared(schema)
    assert_valid(schema, sent, nullable=True) if api == "chat" else assert_valid(schema, sent)


def test_config_defaults_are_the_engrams_and_requests_override_them(serve: Serve, engine: Engine) -> None:
    server = serve(turn.text("a"), turn.text("b"))
    step = step_for(server, engine, {})
    step.run({"userPrompt": "hi"})
    step.run({"userPrompt": "hi", "model": "gpt-4.1", "topP": 0.1, "systemPrompt": "Terse."})
    first, second = body(server, 0), body(server, 1)
    assert (first["model"], first["temperature"], first["top_p"]) == ("gpt-3.5-turbo", 0.7, 0.9)
    assert first["messages"][0] == {"role": "system", "content": "You are a helpful assistant."}
    assert (second["model"], second["top_p"], second["messages"][0]["content"]) == ("gpt-4.1", 0.1, "Terse.")


def test_prompts_merge_in_order_after_history(serve: Serve, engine: Engine) -> None:
    server = serve(turn.text("ok"))
    step_for(server, engine, {}).run({
        "history": [{"role": "developer", "content": "d0"}, {"role": "user", "content": "u0"}, {"role": "assistant", "content": "a0"}],
        "developerPrompt": "d1", "userPrompt": "u1", "assistantPrompt": "a1"})  # fmt: skip
    # developer messages go as system ones, as the engram documents ("developer is mapped to system")
    assert [(m["role"], m["content"]) for m in body(server)["messages"]] == [
        ("system", "You are a helpful assistant."), ("system", "d0"), ("user", "u0"), ("assistant", "a0"),
        ("system", "d1"), ("user", "u1"), ("assistant", "a1")]  # fmt: skip


def test_response_format_in_the_config(serve: Serve, engine: Engine) -> None:
    server = serve(turn.text('{"priority": "high"}'))
    fmt = {"type": "json_schema", "jsonSchema": {"name": "triage", "strict": True, "schema": {
        "type": "object", "properties": {"priority": {"type": "string"}}, "required": ["priority"], "additionalProperties": False}}}
    out = step_for(server, engine, {"responseFormat": fmt}).run({"userPrompt": "triage"})
    assert out["structured"] == {"priority": "high"}
    assert body(server)["response_format"]["json_schema"]["name"] == "triage"


@pytest.mark.parametrize("bad, message", [
    ({"history": [{"role": "tool", "content": "x"}]}, "history: Value error, history\\[0\\].role must be"),
    ({"userPrompt": "x", "temperature": "hot"}, "temperature: Input should be a valid number"),
    ({"userPrompt": "x", "bogus": 1}, "bogus: Extra inputs are not permitted"),
    ({"systemPrompt": "only a system prompt"}, "nothing from the user"),
    (["not", "an", "object"], "must be a JSON object"),
])  # fmt: skip
def test_bad_inputs_are_clear_errors_and_send_nothing(serve: Serve, engine: Engine, bad: Any, message: str) -> None:
    server = serve()
    with pytest.raises(StepConfigError, match=message):
        step_for(server, engine, {}).run(bad)
    assert server.requests == []


def test_a_bad_configuration_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "step.yaml"
    path.write_text("defaultTemperature: warm\n")
    with pytest.raises(StepConfigError, match="temperature: Input should be a valid number"):
        ChatStep.from_yaml(path, openai_api_key="x")
    path.write_text("tools: [\n")
    with pytest.raises(StepConfigError, match="not valid YAML"):
        ChatStep.from_yaml(path, openai_api_key="x")


# -- the CLI -----------------------------------------------------------------------------------
def cli_env(server: ScriptedOpenAI, db: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "OPENAI_"))}
    return env | {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "test", "CLEARANCE_DB": str(db)}


def test_step_run_reads_one_input_and_writes_one_output(serve: Serve, tmp_path: Path) -> None:
    server = serve(STORY_CALL)
    (tmp_path / "step.yaml").write_text(ENGRAM_CONFIG)
    (tmp_path / "in.json").write_text(json.dumps(ENGRAM_PAYLOAD))
    done = run_cli(["step", "run", "--config", str(tmp_path / "step.yaml"), "--input", str(tmp_path / "in.json")],
                   env=cli_env(server, tmp_path / "c.db"), timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["action_request"]["target"] == "create-ticket-story" and out["model"] == "gpt-4o-mini"


def test_step_stream_answers_every_line_in_order_even_bad_ones(serve: Serve, tmp_path: Path) -> None:
    n = 1000
    bad = {i for i in range(n) if i % 37 == 5}  # malformed JSON, or a message the step refuses
    server = serve(*(turn.text(f"answer {i}") for i in range(n) if i not in bad))
    (tmp_path / "step.yaml").write_text("defaultModel: gpt-4o-mini\n")
    lines = []
    for i in range(n):
        if i in bad:
            lines.append("{not json" if i % 2 else json.dumps({"inputs": {"history": [{"role": "robot", "content": "x"}]},
                                                                  "metadata": {"seq": i}}))  # fmt: skip
        else:
            lines.append(json.dumps({"inputs": {"userPrompt": f"question {i}"}, "metadata": {"seq": i, "tenant": "t1"}}))
    done = run_cli(["step", "stream", "--config", str(tmp_path / "step.yaml")], input="\n".join(lines) + "\n",
                   env=cli_env(server, tmp_path / "c.db"), timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    out = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(out) == n, "one output line per input line"
    for i, record in enumerate(out):
        if i in bad:
            assert record["metadata"]["type"] == "chat.step.error" and record["error"]["line"] == i + 1
            if i % 2 == 0:
                assert record["metadata"]["seq"] == i
        else:
            assert record["metadata"] == {"seq": i, "tenant": "t1", "type": "chat.step.result", "provider": "openai",
                                          "model": "gpt-4o-mini"}  # fmt: skip
            assert record["output"]["text"] == f"answer {i}"
    assert [r.json["messages"][-1]["content"] for r in server.requests] == [f"question {i}" for i in range(n) if i not in bad]


def test_step_stream_finishes_the_message_in_hand_on_sigterm(serve: Serve, tmp_path: Path) -> None:
    server = serve(turn.text("slow answer", delay_seconds=1.5))
    (tmp_path / "step.yaml").write_text("defaultModel: gpt-4o-mini\n")
    proc = subprocess.Popen([sys.executable, "-m", "clearance", "step", "stream", "--config", str(tmp_path / "step.yaml")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env(server, tmp_path / "c.db"))  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write(json.dumps({"inputs": {"userPrompt": "q"}, "metadata": {"seq": 1}}) + "\n")
    proc.stdin.flush()
    deadline = time.monotonic() + 30
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # the model is still answering
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    [line] = stdout.splitlines()
    assert json.loads(line)["output"]["text"] == "slow answer"


def test_step_stream_exits_cleanly_on_sigterm_while_idle(serve: Serve, tmp_path: Path) -> None:
    server = serve()
    (tmp_path / "step.yaml").write_text("defaultModel: gpt-4o-mini\n")
    proc = subprocess.Popen([sys.executable, "-m", "clearance", "step", "stream", "--config", str(tmp_path / "step.yaml")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env(server, tmp_path / "c.db"))  # fmt: skip
    assert proc.stderr is not None
    assert proc.stderr.readline().strip() == "clearance step stream: ready"  # now blocked on stdin
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0 and stdout == "", stderr


def test_a_step_from_keyword_arguments(serve: Serve, engine: Engine) -> None:
    server = serve(turn.text("ok"))
    step = ChatStep(model="gpt-4.1-mini", temperature=0.0, defaultTopP=0.5, useResponsesAPI=True, system_prompt="Short.",
                    engine=engine, base_url=server.base_url, openai_api_key="test")  # fmt: skip
    out = step.run({"userPrompt": "hi"})
    sent = body(server)
    assert (out["api"], sent["model"], sent["temperature"], sent["top_p"]) == ("responses", "gpt-4.1-mini", 0.0, 0.5)
    assert sent["input"][0] == {"role": "system", "content": "Short."}


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_tools_and_allowed_tools_overrides_reach_the_wire(serve: Serve, engine: Engine, api: str) -> None:
    server = serve(turn.text("ok"))
    lookup = {"name": "lookup", "description": "Look up", "parameters": {"type": "object", "properties": {"q": {"type": "string"}},
                                                                         "required": ["q"], "additionalProperties": False}}  # fmt: skip
    other = {**lookup, "name": "other"}
    step = step_for(server, engine, {"api": api, "tools": [lookup]})
    step.run({"userPrompt": "hi", "tools": [lookup, other], "allowedTools": {"mode": "required", "tools": ["lookup"]}})
    sent = body(server)
    if api == "chat":
        assert [t["function"]["name"] for t in sent["tools"]] == ["lookup", "other"]
        assert sent["tool_choice"] == {"type": "allowed_tools", "allowed_tools": {
            "mode": "required", "tools": [{"type": "function", "function": {"name": "lookup"}}]}}
    else:
        assert [t["name"] for t in sent["tools"]] == ["lookup", "other"]
        assert sent["tool_choice"] == {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "lookup"}]}
    schema = "CreateChatCompletionRequest" if api == "chat" else "CreateResponse"
    assert set(sent) <= declared(schema)
    assert_valid(schema, sent, nullable=True) if api == "chat" else assert_valid(schema, sent)
