"""The engram's last knobs on ChatStep: modalities, audio, webSearch, prediction; audio output,
developer history, AZURE_DEPLOYMENT, the engram's output names and the README's full step.yaml.

Real SDK -> ScriptedOpenAI on loopback (every exchange checked against OpenAI's OpenAPI
description at teardown by ``serve``) -> real SQLite. Each knob is tried as a configuration key
and as a per-request input field, on both APIs: where the API has it, the request carries it
under that API's name and validates; where it does not, a StepConfigError names the knob and
the API, and nothing is sent.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from adapter_support import declared
from cli_support import run_cli
from openai_spec import assert_valid

from clearance import Engine
from clearance.step import ChatStep, StepConfig, StepConfigError
from clearance.testing import ScriptedOpenAI, turn

Serve = Callable[..., ScriptedOpenAI]
ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT.parent / "shared" / "seeds"

WEB_SEARCH = {"searchContextSize": "high", "userLocation": {"city": "Lyon", "country": "FR", "timezone": "Europe/Paris"}}
#: knob -> (config key, input field, value, {api: (wire path, wire value)}); an API missing is one that lacks it.
KNOBS: dict[str, tuple[str, str, Any, dict[str, tuple[str, Any]]]] = {
    "modalities": ("defaultModalities", "modalities", ["text", "audio"], {"chat": ("modalities", ["text", "audio"])}),
    "audio": ("audio", "audio", {"format": "wav", "voice": "alloy"}, {"chat": ("audio", {"format": "wav", "voice": "alloy"})}),
    "webSearch": ("webSearch", "webSearch", WEB_SEARCH, {
        "chat": ("web_search_options", {"search_context_size": "high", "user_location": {
            "type": "approximate", "approximate": {"city": "Lyon", "country": "FR", "timezone": "Europe/Paris"}}}),
        "responses": ("tools", [{"type": "web_search", "search_context_size": "high", "user_location": {
            "type": "approximate", "city": "Lyon", "country": "FR", "timezone": "Europe/Paris"}}]),
    }),
    "prediction": ("prediction", "prediction", {"type": "content", "content": "def f():\n    return 1\n"},
                   {"chat": ("prediction", {"type": "content", "content": "def f():\n    return 1\n"})}),
}  # fmt: skip
API_NAME = {"chat": "Chat Completions", "responses": "Responses"}


@pytest.fixture
def engine(db_path: Path) -> Any:
    """Embedded only: what is tested here is the request the step builds, which no engine changes
    (test_step.py runs the step on both engines)."""
    with Engine(db_path) as eng:
        yield eng


def step_for(server: ScriptedOpenAI, engine: Engine, config: dict[str, Any], **kw: Any) -> ChatStep:
    return ChatStep(config, engine=engine, base_url=server.base_url, openai_api_key="test", **kw)


def check_request(api: str, sent: dict[str, Any]) -> None:
    schema = "CreateChatCompletionRequest" if api == "chat" else "CreateResponse"
    assert set(sent) <= declared(schema), set(sent) - declared(schema)
    assert_valid(schema, sent, nullable=True) if api == "chat" else assert_valid(schema, sent)


@pytest.mark.parametrize("where", ["config", "input"])
@pytest.mark.parametrize("api", ["chat", "responses"])
@pytest.mark.parametrize("knob", sorted(KNOBS))
def test_each_knob_is_sent_under_the_apis_name_or_refused(serve: Serve, engine: Engine, knob: str, api: str,
                                                          where: str) -> None:  # fmt: skip
    config_key, input_field, value, wire = KNOBS[knob]
    server = serve(turn.text("ok"))
    config: dict[str, Any] = {"useResponsesAPI": api == "responses"}
    inputs: dict[str, Any] = {"userPrompt": "hi"}
    (config if where == "config" else inputs)[config_key if where == "config" else input_field] = value
    if api not in wire:
        with pytest.raises(StepConfigError) as refused:
            step_for(server, engine, config).run(inputs)
        snake = {"webSearch": "web_search"}.get(knob, knob)
        assert str(refused.value).startswith(f"{snake} is not a setting of the {API_NAME[api]} API")
        assert server.requests == [], "nothing is sent when a knob cannot be"
        return
    step_for(server, engine, config).run(inputs)
    [rec] = server.requests
    path, expected = wire[api]
    assert rec.json[path] == expected
    check_request(api, rec.json)


def test_text_only_modalities_are_what_the_responses_api_does(serve: Serve, engine: Engine) -> None:
    server = serve(turn.text("ok"))
    out = step_for(server, engine, {"useResponsesAPI": True, "defaultModalities": ["text"]}).run({"userPrompt": "hi"})
    assert out["text"] == "ok" and "modalities" not in server.requests[0].json


def test_web_search_rides_with_declared_tools_on_responses(serve: Serve, engine: Engine) -> None:
    lookup = {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}},
                                               "required": ["q"], "additionalProperties": False}}  # fmt: skip
    searched = turn.items(
        {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search", "query": "outage lyon"}},
        {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "No outage reported.", "annotations": [], "logprobs": []}]},
    )  # fmt: skip
    server = serve(searched)
    out = step_for(server, engine, {"useResponsesAPI": True, "tools": [lookup], "webSearch": {"searchContextSize": "low"}}).run(
        {"userPrompt": "any outage in Lyon?"})
    assert out["text"] == "No outage reported." and out["tool_calls"] == [] and out["status"] == "completed"
    assert [t["type"] for t in server.requests[0].json["tools"]] == ["function", "web_search"]
    check_request("responses", server.requests[0].json)


@pytest.mark.parametrize("bad, message", [
    ({"audio": {"format": "ogg", "voice": "alloy"}}, "audio.format: Input should be"),
    ({"webSearch": {"searchContextSize": "huge"}}, "web_search.searchContextSize: Input should be"),
    ({"webSearch": {"userLocation": {"type": "exact", "city": "Lyon"}}}, "type must be 'approximate'"),
    ({"modalities": ["video"]}, "modalities.0: Input should be 'text' or 'audio'"),
])  # fmt: skip
def test_bad_knob_values_are_clear_errors(serve: Serve, engine: Engine, bad: dict[str, Any], message: str) -> None:
    server = serve()
    with pytest.raises(StepConfigError, match=message):
        step_for(server, engine, {}).run({"userPrompt": "hi", **bad})
    assert server.requests == []


def test_audio_output_comes_back_in_the_step_output(serve: Serve, engine: Engine) -> None:
    wav = base64.b64encode(b"RIFF....WAVEfmt ").decode()
    spoken = {"id": "audio_1", "data": wav, "expires_at": 1_900_000_000, "transcript": "The servers are back."}
    server = serve(turn.text("placeholder").with_chat_fields(choices=[{
        "index": 0, "finish_reason": "stop", "logprobs": None,
        "message": {"role": "assistant", "content": None, "refusal": None, "annotations": [], "audio": spoken}}]))  # fmt: skip
    out = step_for(server, engine, {"defaultModalities": ["text", "audio"], "audio": {"format": "wav", "voice": "alloy"}}).run(
        {"userPrompt": "status?"})
    assert out["audio"] == {"transcript": "The servers are back.", "data": wav, "format": "wav", "id": "audio_1",
                            "expires_at": 1_900_000_000}  # fmt: skip
    assert out["text"] == "The servers are back.", "an audio answer's words are its transcript"
    sent = server.requests[0].json
    assert sent["modalities"] == ["text", "audio"] and sent["audio"] == {"format": "wav", "voice": "alloy"}


def test_text_answers_have_no_audio(serve: Serve, engine: Engine) -> None:
    server = serve(turn.text("plain"))
    assert step_for(server, engine, {}).run({"userPrompt": "hi"})["audio"] is None


# -- the engram's output names --------------------------------------------------------------------
STORY = {"storyName": "create-ticket-story", "inputs": {"priority": "high"}}


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_the_engrams_output_names_beside_ours(serve: Serve, engine: Engine, api: str) -> None:
    server = serve(turn.function_calls([("run_story", STORY), ("lookup", {"q": "outage"})]))
    lookup = {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}
    story = {"name": "run_story", "parameters": {"type": "object", "properties": {"storyName": {"type": "string"},
                                                                                  "inputs": {"type": "object"}}}}  # fmt: skip
    config = {"useResponsesAPI": api == "responses", "tools": [story, lookup],
              "dispatchTools": {"run_story": "create-ticket-story"}}
    out = step_for(server, engine, config).run({"userPrompt": "open a ticket"})
    assert out["action_request"] == {"tool": "run_story", "target": "create-ticket-story", "inputs": {"priority": "high"}}
    assert out["actionRequest"] == {"storyName": "create-ticket-story", "inputs": {"priority": "high"}}
    [call] = out["tool_calls"]
    assert out["toolCalls"] == [{"name": "lookup", "arguments": '{"q":"outage"}'}]
    assert json.loads(out["toolCalls"][0]["arguments"]) == call["arguments"] == {"q": "outage"}


def test_engram_names_are_empty_when_nothing_was_called(serve: Serve, engine: Engine) -> None:
    server = serve(turn.text("hello"))
    out = step_for(server, engine, {}).run({"userPrompt": "hi"})
    assert out["actionRequest"] is None and out["toolCalls"] == [] and out["text"] == "hello"


# -- AZURE_DEPLOYMENT --------------------------------------------------------------------------------
def azure_env(monkeypatch: pytest.MonkeyPatch, server: ScriptedOpenAI, deployment: str | None = "my-dep") -> None:
    for name in [n for n in os.environ if n.startswith(("AZURE_", "OPENAI_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AZURE_ENDPOINT", server.azure_endpoint)
    monkeypatch.setenv("AZURE_API_KEY", "azure-key")
    if deployment:
        monkeypatch.setenv("AZURE_DEPLOYMENT", deployment)


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_azure_deployment_is_what_chatstep_calls(serve: Serve, engine: Engine, api: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    server = serve(turn.text("ok"))
    azure_env(monkeypatch, server)
    # The engram's payload names a model per request; on Azure the deployment is what runs.
    out = ChatStep({"defaultModel": "gpt-4o-mini", "useResponsesAPI": api == "responses"}, engine=engine).run(
        {"userPrompt": "hi", "model": "gpt-4o-mini"})
    [rec] = server.requests
    if api == "chat":
        assert rec.path == "/openai/deployments/my-dep/chat/completions"
    else:
        assert rec.path == "/openai/responses" and rec.json["model"] == "my-dep"
    assert out["provider"] == "azure" and out["model"] == "my-dep" and rec.headers.get("api-key") == "azure-key"


def test_clearance_step_run_honours_azure_deployment(serve: Serve, tmp_path: Path) -> None:
    server = serve(turn.text("from my-dep"))
    (tmp_path / "step.yaml").write_text("defaultModel: gpt-4o-mini\n")
    (tmp_path / "in.json").write_text(json.dumps({"userPrompt": "hi"}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "OPENAI_"))}
    env |= {"AZURE_ENDPOINT": server.azure_endpoint, "AZURE_API_KEY": "azure-key", "AZURE_DEPLOYMENT": "my-dep",
            "CLEARANCE_DB": str(tmp_path / "c.db")}  # fmt: skip
    done = run_cli(["step", "run", "--config", str(tmp_path / "step.yaml"), "--input", str(tmp_path / "in.json")],
                   env=env, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["text"] == "from my-dep" and out["model"] == "my-dep"
    assert [r.path for r in server.requests] == ["/openai/deployments/my-dep/chat/completions"]


# -- the README's complete step.yaml -----------------------------------------------------------------
def readme_step_yaml() -> dict[str, Any]:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- step-yaml -->\s*```yaml\n(.*?)```", text, re.S)
    assert match, "the README's complete step.yaml example (marked <!-- step-yaml -->) is missing"
    return yaml.safe_load(match.group(1))  # type: ignore[no-any-return]


def engram_keys() -> list[str]:
    """The engram's configuration keys, from its README's table (``../shared/seeds/``)."""
    [seed] = SEEDS.glob("002_*.txt")
    table = seed.read_text().split("Configuration (`Engram.spec.with`)")[1].split("Example:")[0]
    return re.findall(r"^\| `(\w+)` \|", table, re.M)


def test_the_readme_step_yaml_has_every_engram_key_and_loads() -> None:
    config = readme_step_yaml()
    if SEEDS.is_dir():
        keys = engram_keys()
        assert len(keys) == 35 and set(keys) <= set(config), sorted(set(keys) - set(config))
    loaded = StepConfig.load(config)
    assert loaded.audio is not None and loaded.web_search is not None and loaded.modalities == ["text", "audio"]


def test_the_readme_step_yaml_runs(serve: Serve, engine: Engine) -> None:
    server = serve(turn.text('{"answer": "ok"}'))
    out = step_for(server, engine, readme_step_yaml()).run({"userPrompt": "hi"})
    assert out["status"] == "completed" and out["structured"] == {"answer": "ok"}
    sent = server.requests[0].json
    check_request("chat", sent)
    assert sent["modalities"] == ["text", "audio"] and sent["web_search_options"]["search_context_size"] == "medium"
    assert [t["function"]["name"] for t in sent["tools"]] == ["run_story", "extract_fields"]


def test_every_engram_input_field_is_a_step_input() -> None:
    """The engram's 38 input fields (its Inputs table and its list of request-time overrides;
    ``user`` is both a history role and a field)."""
    if not SEEDS.is_dir():
        pytest.skip(f"seeds not found at {SEEDS}")
    [seed] = SEEDS.glob("002_*.txt")
    inputs = seed.read_text().split("Supported fields:")[1].split("Example payload:")[0]
    fields = sorted({f for f in re.findall(r"`(\w+)`", inputs) if f not in ("role", "system", "developer", "assistant")})
    assert len(fields) == 38, fields
    from clearance.step import _ALIASES, StepInput

    unknown = [f for f in fields if _ALIASES.get(f, f) not in StepInput.model_fields and f != "useResponsesAPI"]
    assert unknown == []
