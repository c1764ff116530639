"""ChatStep: one governed model call as a workflow step (openai-chat-engram, in Python).

A step is configured once (YAML or keyword arguments, with the engram's defaults) and run per
request, each setting overridable per request. Tools are declared, not implemented: the model's
calls are decided by the engine and then handed back (``tool_calls``), extracted
(``structured_tool_name``) or dispatched (``dispatch_tools``). Batch and stream modes (the CLI's
``clearance step run`` / ``clearance step stream``) are thin loops over :meth:`ChatStep.run`.

Each setting is sent only to the API that has it, under that API's name; asking the chosen API
for a setting it does not have is a :class:`StepConfigError`, never silently dropped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml

from clearance.adapters.openai.dispatch import DispatchWebhook
from clearance.adapters.openai.guard import GuardedOpenAI
from clearance.errors import ClearanceError

__all__ = ["SETTINGS", "ChatStep", "StepConfig", "StepConfigError", "StepInput", "engram_fields"]

API = Literal["chat", "responses"]

#: setting -> (name in the Responses request the guard builds, or None if Responses lacks it;
#:             name on the Chat wire, or None if Chat lacks it).
#: The guard's requests are Responses-shaped; chat-only settings ride along under their chat
#: names and the chat wire passes them through.
SETTINGS: dict[str, tuple[str | None, str | None]] = {
    "temperature": ("temperature", "temperature"),
    "top_p": ("top_p", "top_p"),
    "max_output_tokens": ("max_output_tokens", "max_completion_tokens"),
    "max_completion_tokens": ("max_output_tokens", "max_completion_tokens"),
    "max_tokens": (None, "max_tokens"),
    "presence_penalty": (None, "presence_penalty"),
    "frequency_penalty": (None, "frequency_penalty"),
    "reasoning_effort": ("reasoning.effort", "reasoning_effort"),
    "service_tier": ("service_tier", "service_tier"),
    "verbosity": ("text.verbosity", "verbosity"),
    "stop": (None, "stop"),
    "store": ("store", "store"),
    "parallel_tool_calls": ("parallel_tool_calls", "parallel_tool_calls"),
    "logprobs": (None, "logprobs"),
    "top_logprobs": ("top_logprobs", "top_logprobs"),
    "n": (None, "n"),
    "seed": (None, "seed"),
    "prompt_cache_key": ("prompt_cache_key", "prompt_cache_key"),
    "safety_identifier": ("safety_identifier", "safety_identifier"),
    "user": ("user", "user"),
    "metadata": ("metadata", "metadata"),
    "logit_bias": (None, "logit_bias"),
    "tool_choice": ("tool_choice", "tool_choice"),
    "audio": (None, "audio"),
    "prediction": (None, "prediction"),
}
#: Handled in ``ChatStep.build`` because their shape differs between the APIs, not only their
#: name: ``modalities`` (Responses only ever answers in text) and ``web_search`` (Chat's
#: ``web_search_options``, the Responses API's ``web_search`` tool).
SHAPED = ("modalities", "web_search")

#: The engram's names (``spec.with`` and per-request inputs) for our settings.
_ALIASES = {
    "defaultModel": "model", "defaultTemperature": "temperature", "defaultSystemPrompt": "system_prompt",
    "defaultTopP": "top_p", "defaultMaxTokens": "max_tokens", "defaultMaxCompletionTokens": "max_completion_tokens",
    "defaultPresencePenalty": "presence_penalty", "defaultFrequencyPenalty": "frequency_penalty",
    "defaultReasoningEffort": "reasoning_effort", "defaultServiceTier": "service_tier", "defaultVerbosity": "verbosity",
    "defaultStopSequences": "stop", "defaultStore": "store", "defaultParallelToolCalls": "parallel_tool_calls",
    "defaultLogprobs": "logprobs", "defaultTopLogprobs": "top_logprobs", "defaultChoices": "n", "defaultSeed": "seed",
    "defaultPromptCacheKey": "prompt_cache_key", "defaultSafetyIdentifier": "safety_identifier", "defaultUser": "user",
    "defaultMetadata": "metadata", "defaultLogitBias": "logit_bias", "responseFormat": "response_format",
    "toolChoice": "tool_choice", "functionCall": "tool_choice", "allowedTools": "allowed_tools",
    "structuredToolName": "structured_tool_name", "dispatchTools": "dispatch_tools", "topP": "top_p",
    "maxTokens": "max_tokens", "maxCompletionTokens": "max_completion_tokens", "maxOutputTokens": "max_output_tokens",
    "presencePenalty": "presence_penalty", "frequencyPenalty": "frequency_penalty", "reasoningEffort": "reasoning_effort",
    "serviceTier": "service_tier", "parallelToolCalls": "parallel_tool_calls", "topLogprobs": "top_logprobs",
    "choices": "n", "promptCacheKey": "prompt_cache_key", "safetyIdentifier": "safety_identifier",
    "logitBias": "logit_bias", "systemPrompt": "system_prompt", "developerPrompt": "developer_prompt",
    "userPrompt": "user_prompt", "assistantPrompt": "assistant_prompt", "functions": "tools",
    "defaultModalities": "modalities", "webSearch": "web_search",
}  # fmt: skip


#: Roles sent under another name: the engram maps ``developer`` to ``system``.
_ROLE = {"developer": "system"}


class StepConfigError(ClearanceError, ValueError):
    """A step setting or input that cannot be sent as asked."""


def _snake(data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = _ALIASES.get(key, key)
        if key == "useResponsesAPI":
            name, value = "api", ("responses" if value else "chat")
        if name == "tools" and name in out:
            value = _merge_tools(out[name], value)
        out[name] = value
    return out


def _merge_tools(a: list[Any], b: list[Any]) -> list[Any]:
    """``tools`` and the legacy ``functions``, merged and deduplicated by name (first wins)."""
    seen, out = set(), []
    for tool in [*a, *b]:
        name = tool.get("name") or (tool.get("function") or {}).get("name")
        if name not in seen:
            seen.add(name)
            out.append(tool)
    return out


class ToolSpec(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    name: str
    description: str = ""
    parameters: dict[str, Any] = pydantic.Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class Audio(pydantic.BaseModel):
    """Spoken output (Chat Completions' ``audio``): the engram's ``audio.format`` and ``audio.voice``."""

    model_config = pydantic.ConfigDict(extra="forbid")
    format: Literal["wav", "aac", "mp3", "flac", "opus", "pcm16"]
    voice: str | dict[str, str]


class UserLocation(pydantic.BaseModel):
    """Where the user roughly is, for web search; the engram's flat form or Chat's ``approximate`` one."""

    model_config = pydantic.ConfigDict(extra="forbid")
    city: str | None = None
    country: str | None = None
    region: str | None = None
    timezone: str | None = None

    @pydantic.model_validator(mode="before")
    @classmethod
    def _unwrap(cls, value: Any) -> Any:
        # {"type": "approximate", "approximate": {...}} (Chat's shape) or {"type": "approximate", ...}
        if isinstance(value, Mapping):
            if value.get("type", "approximate") != "approximate":
                raise ValueError("type must be 'approximate', the only kind of location OpenAI takes")
            inner = value.get("approximate", value)
            return {k: v for k, v in dict(inner).items() if k != "type"}
        return value

    def fields(self) -> dict[str, str]:
        return self.model_dump(exclude_none=True)


class WebSearch(pydantic.BaseModel):
    """The engram's ``webSearch``: ``searchContextSize`` and ``userLocation``."""

    model_config = pydantic.ConfigDict(extra="forbid", populate_by_name=True)
    search_context_size: Literal["low", "medium", "high"] | None = pydantic.Field(default=None, alias="searchContextSize")
    user_location: UserLocation | None = pydantic.Field(default=None, alias="userLocation")

    def chat_options(self) -> dict[str, Any]:
        """Chat Completions' ``web_search_options``."""
        out: dict[str, Any] = {}
        if self.search_context_size:
            out["search_context_size"] = self.search_context_size
        if self.user_location is not None:
            out["user_location"] = {"type": "approximate", "approximate": self.user_location.fields()}
        return out

    def responses_tool(self) -> dict[str, Any]:
        """The Responses API's hosted ``web_search`` tool."""
        tool: dict[str, Any] = {"type": "web_search"}
        if self.search_context_size:
            tool["search_context_size"] = self.search_context_size
        if self.user_location is not None:
            tool["user_location"] = {"type": "approximate", **self.user_location.fields()}
        return tool


class _Settings(pydantic.BaseModel):
    """Every per-request setting; None means "not set" (not sent)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    model: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = pydantic.Field(default=None, ge=1)
    max_completion_tokens: int | None = pydantic.Field(default=None, ge=1)
    max_tokens: int | None = pydantic.Field(default=None, ge=1)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    stop: str | list[str] | None = None
    store: bool | None = None
    parallel_tool_calls: bool | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    n: int | None = pydantic.Field(default=None, ge=1)
    seed: int | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    logit_bias: dict[str, int] | None = None
    tools: list[ToolSpec] | None = None
    tool_choice: str | dict[str, Any] | None = None
    allowed_tools: dict[str, Any] | None = None
    system_prompt: str | None = None
    response_format: dict[str, Any] | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    audio: Audio | None = None
    web_search: WebSearch | None = None
    prediction: dict[str, Any] | None = None
    api: API | None = None

    @pydantic.field_validator("prediction", mode="before")
    @classmethod
    def _predicted_text(cls, value: Any) -> Any:
        # Plain text is the usual prediction (a file being regenerated): {"type": "content", ...}.
        return {"type": "content", "content": value} if isinstance(value, str) else value

    @pydantic.field_validator("tool_choice", mode="before")
    @classmethod
    def _function_choice(cls, value: Any) -> Any:
        # The engram's "function:<name>" form.
        if isinstance(value, str) and value.startswith("function:"):
            return {"type": "function", "name": value.split(":", 1)[1]}
        return value

    @pydantic.field_validator("logit_bias", mode="before")
    @classmethod
    def _token_ids_as_strings(cls, value: Any) -> Any:
        return {str(k): v for k, v in value.items()} if isinstance(value, Mapping) else value


class StepConfig(_Settings):
    """A step's configuration: the engram's defaults, plus governance and wiring."""

    model: str | None = "gpt-3.5-turbo"
    temperature: float | None = 0.7
    top_p: float | None = 0.9
    system_prompt: str | None = "You are a helpful assistant."
    tools: list[ToolSpec] | None = pydantic.Field(default_factory=list)
    tool_choice: str | dict[str, Any] | None = None
    structured_tool_name: str | None = None
    dispatch_tools: dict[str, str] = pydantic.Field(default_factory=dict)
    #: Where dispatches go when no dispatcher is passed in: a webhook, signed with the secret
    #: read from the environment variable named here.
    dispatch_webhook: str | None = None
    dispatch_secret_env: str = "CLEARANCE_DISPATCH_SECRET"
    api: API | None = "chat"
    actor: str = "chat-step"
    domain: str = "default"

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> StepConfig:
        try:
            return cls.model_validate(_snake(data))
        except pydantic.ValidationError as exc:
            raise StepConfigError(_describe(exc, "step configuration")) from None


class StepInput(_Settings):
    """One request: the conversation, and any setting to override for it."""

    history: list[dict[str, Any]] = pydantic.Field(default_factory=list)
    developer_prompt: str | None = None
    user_prompt: str | None = None
    assistant_prompt: str | None = None

    @pydantic.field_validator("history")
    @classmethod
    def _roles(cls, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, message in enumerate(history):
            if message.get("role") not in ("system", "developer", "user", "assistant"):
                raise ValueError(f"history[{i}].role must be system, developer, user or assistant, not {message.get('role')!r}")
            if not isinstance(message.get("content"), str | list):
                raise ValueError(f"history[{i}].content must be text or a list of content parts")
        return history

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> StepInput:
        if not isinstance(data, Mapping):
            raise StepConfigError(f"a step input must be a JSON object, not {type(data).__name__}")
        try:
            return cls.model_validate(_snake(data))
        except pydantic.ValidationError as exc:
            raise StepConfigError(_describe(exc, "step input")) from None


def engram_fields(action_request: Mapping[str, Any] | None, tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
    """The output under the engram's names, for workflows written against it: ``actionRequest``
    (``storyName``, ``inputs``) and ``toolCalls`` (``name``, ``arguments`` as a JSON string).

    Only governed calls appear, as in ``tool_calls``: a call the engine did not allow is never
    handed to a workflow that would act on it.
    """
    return {
        "actionRequest": None if action_request is None else {
            "storyName": action_request["target"], "inputs": action_request.get("inputs") or {}},
        "toolCalls": [{"name": c["name"], "arguments": json.dumps(c["arguments"], ensure_ascii=False, separators=(",", ":"))}
                      for c in tool_calls],
    }  # fmt: skip


def _audio(llm_response: Any, asked: Audio | None) -> dict[str, Any] | None:
    """Spoken output of a Chat Completions answer: ``transcript``, ``data`` (base64), ``format``, ``id``."""
    if not isinstance(llm_response, Mapping) or llm_response.get("object") != "chat.completion":
        return None
    choices = llm_response.get("choices") or [{}]
    audio = (choices[0].get("message") or {}).get("audio")
    if not isinstance(audio, Mapping):
        return None
    return {"transcript": audio.get("transcript"), "data": audio.get("data"),
            "format": asked.format if asked is not None else None, "id": audio.get("id"),
            "expires_at": audio.get("expires_at")}  # fmt: skip


def _requested(request: dict[str, Any]) -> dict[str, Any]:
    return {"status": "requested"}


def _describe(exc: pydantic.ValidationError, what: str) -> str:
    parts = [f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors()]
    return f"invalid {what}: " + "; ".join(parts)


def _lacks(name: str, api: str, why: str = "") -> StepConfigError:
    other = "chat" if api == "responses" else "responses"
    return StepConfigError(f"{name} is not a setting of the {'Responses' if api == 'responses' else 'Chat Completions'} "
                           f"API{why}; remove it or use api: {other}")  # fmt: skip


def _put(request: dict[str, Any], dotted: str, value: Any) -> None:
    head, _, tail = dotted.partition(".")
    if tail:
        request.setdefault(head, {})[tail] = value
    else:
        request[head] = value


class ChatStep:
    """A governed, configured model call: ``ChatStep.from_yaml("step.yaml").run({...})``.

    ``guard_options`` go to :class:`~clearance.GuardedOpenAI` (``engine``, ``client``,
    ``base_url``, ``openai_api_key``, Azure settings, resilience knobs, ...).
    """

    def __init__(self, config: StepConfig | Mapping[str, Any] | None = None, *,
                 dispatcher: Callable[[dict[str, Any]], Any] | None = None, **options: Any) -> None:  # fmt: skip
        # Keyword arguments are step settings (model=..., temperature=..., or the engram's names)
        # when StepConfig has them, and GuardedOpenAI options otherwise.
        settings = {k: v for k, v in options.items() if _ALIASES.get(k, k) in StepConfig.model_fields or k == "useResponsesAPI"}
        guard_options = {k: v for k, v in options.items() if k not in settings}
        if isinstance(config, StepConfig):
            config = config.model_dump(exclude_unset=True)
        self.config = StepConfig.load({**_snake(config or {}), **_snake(settings)})
        cfg = self.config
        if cfg.dispatch_tools and dispatcher is None:
            if cfg.dispatch_webhook:
                secret = os.environ.get(cfg.dispatch_secret_env)
                if not secret:
                    raise StepConfigError(f"dispatch_webhook is set but ${cfg.dispatch_secret_env} (the signing secret) is not")
                dispatcher = DispatchWebhook(cfg.dispatch_webhook, secret)
            else:
                # As in the engram: the step's output carries the action request, and whoever runs
                # the step acts on it.
                dispatcher = _requested
        self._guards: dict[str, GuardedOpenAI] = {}
        self._dispatcher = dispatcher
        self._guard_options = guard_options

    @classmethod
    def from_yaml(cls, path: str | Path, **kw: Any) -> ChatStep:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as exc:  # one line, as a rules file's: where and what
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise StepConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
        if not isinstance(data, Mapping):
            raise StepConfigError(f"{path}: the configuration must be a mapping")
        data = data.get("with", data)  # an Engram's spec.with block pasted as is
        return cls(StepConfig.load(data), **kw)

    def _guard(self, api: str, tools: list[ToolSpec]) -> GuardedOpenAI:
        key = api + "|" + ",".join(t.name for t in tools)
        guard = self._guards.get(key)
        if guard is None:
            cfg = self.config
            options = {"actor": cfg.actor, "domain": cfg.domain, **self._guard_options}
            guard = GuardedOpenAI(api=api, structured_tool_name=cfg.structured_tool_name,  # type: ignore[arg-type]
                                  dispatch_tools=cfg.dispatch_tools, dispatcher=self._dispatcher, **options)  # fmt: skip
            for tool in tools:
                guard.declare_tool(tool.name, tool.parameters, description=tool.description, strict=tool.strict)
            self._guards[key] = guard
        return guard

    def settings(self, request: StepInput) -> dict[str, Any]:
        """The settings for one request: the step's, overridden by the request's."""
        merged = {k: getattr(self.config, k) for k in _Settings.model_fields}
        merged.update({k: getattr(request, k) for k in request.model_fields_set if k in _Settings.model_fields})
        return merged

    def build(self, request: StepInput) -> tuple[str, dict[str, Any], list[dict[str, Any]], list[ToolSpec]]:
        """(api, create arguments for the guard, input messages, tools) for one request."""
        s = self.settings(request)
        api = s["api"] or "chat"
        create: dict[str, Any] = {}
        for name, (responses_name, chat_name) in SETTINGS.items():
            value = s.get(name)
            if value is None:
                continue
            target = responses_name if api == "responses" else chat_name
            if target is None:
                raise _lacks(name, api)
            if isinstance(value, pydantic.BaseModel):
                value = value.model_dump(exclude_none=True)
            # The guard's requests are Responses-shaped; chat-only settings keep their chat names.
            _put(create, responses_name or chat_name, value)  # type: ignore[arg-type]
        modalities, web_search = s.get("modalities"), s.get("web_search")
        if modalities is not None:
            if api == "chat":
                create["modalities"] = list(modalities)
            elif set(modalities) != {"text"}:
                # Text is all the Responses API answers in, so ["text"] asks for what it does anyway.
                raise _lacks("modalities", api, f" (it answers in text only, not {modalities})")
        if web_search is not None:
            if api == "chat":
                create["web_search_options"] = web_search.chat_options()
            else:
                create["tools"] = [web_search.responses_tool()]  # the guard adds the declared function tools
        if s.get("allowed_tools"):
            allowed = s["allowed_tools"]
            create["tool_choice"] = {"type": "allowed_tools", "mode": allowed.get("mode", "auto"),
                                     "tools": [{"type": "function", "name": n} for n in allowed.get("tools", [])]}  # fmt: skip
        messages: list[dict[str, Any]] = []
        if s.get("system_prompt"):
            messages.append({"role": "system", "content": s["system_prompt"]})
        # As in the engram, developer messages go as system ones: every API version and every
        # Azure deployment takes "system", not all of them take "developer".
        messages.extend({**m, "role": _ROLE.get(m["role"], m["role"])} for m in request.history)
        for role in ("developer", "user", "assistant"):
            text = getattr(request, f"{role}_prompt")
            if text:
                messages.append({"role": _ROLE.get(role, role), "content": text})
        if not any(m["role"] == "user" for m in messages):
            raise StepConfigError("the request has nothing from the user: give history or user_prompt")
        tools = request.tools if request.tools is not None else self.config.tools
        return api, create, messages, list(tools or [])

    def run(self, inputs: StepInput | Mapping[str, Any]) -> dict[str, Any]:
        """One request in, the step's output out: ``text``, ``structured``, ``action_request``,
        ``tool_calls`` and the governance ``execution``."""
        request = inputs if isinstance(inputs, StepInput) else StepInput.load(inputs)
        api, create, messages, tools = self.build(request)
        settings = self.settings(request)
        guard = self._guard(api, tools)
        # On Azure a configured deployment (AZURE_DEPLOYMENT, deployment=) is what gets called,
        # whatever model the step names: the model is the deployment's.
        model = guard.azure.deployment if guard.azure is not None and guard.azure.deployment else settings["model"]
        result = guard.run(messages, model=model, max_turns=1, response_format=settings.get("response_format"), **create)
        tool_calls = [{"name": c["name"], "arguments": c["arguments"], "call_id": c["call_id"],
                       "request_id": c["request_id"]} for c in result["tool_calls"]]  # fmt: skip
        audio = _audio(result["llm_response"], settings.get("audio"))
        text = result["output_text"] or (audio or {}).get("transcript") or ""
        return {
            "text": text,
            "structured": result["structured"],
            "action_request": result["action_request"],
            "tool_calls": tool_calls,
            "audio": audio,
            **engram_fields(result["action_request"], tool_calls),
            "execution": result["execution"],
            # One model call is the whole step: having acted on its calls is completion.
            "status": "completed" if result["status"] == "max_turns" else result["status"],
            "provider": "azure" if guard.azure is not None else "openai",
            "api": api,
            "model": model,
        }

    def close(self) -> None:
        for guard in self._guards.values():
            guard.close()
        close = getattr(self._dispatcher, "close", None)
        if callable(close):
            close()
