"""A local HTTP server that speaks OpenAI's Responses and Chat Completions APIs and plays scripted turns.

Standard library only (``http.server.ThreadingHTTPServer`` on 127.0.0.1 in a daemon
thread), so ``clearance.testing`` adds no runtime dependency. Point the real ``openai``
SDK at it::

    from openai import OpenAI
    from clearance.testing import ScriptedOpenAI, turn

    with ScriptedOpenAI([turn.function_call("refund", {"order_id": "o1"}), turn.text("Done.")]) as server:
        client = OpenAI(base_url=server.base_url, api_key="test")
        resp = client.responses.create(model="gpt-5", input="refund o1", tools=[...])
        ...
    assert server.requests[0].json["model"] == "gpt-5"

Routes (any prefix, so ``/v1/responses``, Azure's ``/openai/responses``,
``/openai/deployments/{deployment}/responses`` and ``/openai/v1/responses`` all work, and
likewise for ``chat/completions``):

- ``POST .../responses`` plays the next turn; with ``"stream": true`` a model turn is
  streamed as server-sent events (see "Streaming" below).
- ``POST .../chat/completions`` plays the next turn of the same script, rendered as a
  ``chat.completion`` (or, with ``"stream": true``, as ``chat.completion.chunk`` SSE ending
  in ``data: [DONE]``); see "Chat Completions" below and :mod:`clearance.testing.chat`.
- ``GET .../responses/{id}`` returns a stored response; ``DELETE`` forgets it.
- anything else (including ``GET .../chat/completions/{id}``: chat completions are not
  stored): 404 with OpenAI's ``Invalid URL`` error envelope.

Every request is recorded (:class:`RecordedRequest`) with ``api`` (``"responses"``,
``"chat"`` or ``None``), the Azure ``deployment`` of a classic deployment path, the
``query`` (``rec.api_version``) and the headers (``rec.api_key`` for Azure's ``api-key``,
``rec.bearer_token`` for ``Authorization: Bearer``), so tests can assert exactly what an
SDK client sent.

Requests rejected before a turn is played do NOT consume a turn: a body that is not a
JSON object, a missing ``model``, or an unknown ``previous_response_id`` (400
``Previous response with id '...' not found.``).
When the script is exhausted, or a callable turn raises, the reply is a 500 envelope
with ``x-should-retry: false`` (so the SDK fails at once instead of retrying), and the
problem is listed in :attr:`ScriptedOpenAI.problems`.

Streaming: to a request with ``"stream": true`` a :class:`ModelTurn` is answered with
``200``, ``Content-Type: text/event-stream`` and a chunked body of SSE frames
(``event: <type>\\ndata: <json>\\n\\n``), from ``response.created`` to the terminal
``response.completed`` / ``response.failed`` / ``response.incomplete`` (see
:mod:`clearance.testing.stream` for the order). Each frame is written and flushed on its
own (Nagle is off), so deltas reach the client as they are written. The turn's
``delay_seconds`` is slept before the first byte and its ``stream.event_delay`` between
events. A stream ended on purpose (``ModelTurn.cut_after`` / ``error_after``) gets no
terminal event. :class:`ErrorTurn` and :class:`RawTurn` are replied as usual (an HTTP
error before any event; a verbatim body, e.g. hand-written SSE with
``content_type="text/event-stream"``). A streamed response is stored for
``previous_response_id`` / ``GET`` (unless ``store: false``) just before its terminal event
is written; a cut or errored stream stores nothing. A fault-injecting turn (``cut_after``
/ ``error_after``) played to a request without ``stream: true`` is a script problem
(500, ``x-should-retry: false``).

Chat Completions: ``POST .../chat/completions`` is validated like a Responses request (a
JSON object with ``model`` — optional on a classic Azure deployment path, where the
deployment stands in — and a ``messages`` list, else 400 without consuming a turn), then
plays the next turn. :class:`ModelTurn` items map to ``choices[0].message`` (``content``,
``refusal``, ``tool_calls``; reasoning items render as nothing) with ``finish_reason``
``stop`` / ``tool_calls`` / ``length`` (incomplete turns) / ``content_filter``; ``usage`` is
``CompletionUsage``. Streamed (``"stream": true``): a role chunk, content/refusal deltas,
tool-call fragments keyed by ``index`` (first fragment: ``id``, ``type``, ``name``; then
argument pieces; ``.streamed(interleave_tool_calls=True)`` alternates parallel calls), a
finish chunk, with ``stream_options.include_usage`` a final ``choices: []`` usage chunk (and
``"usage": null`` on every other chunk), then ``data: [DONE]``. Faults: :class:`ErrorTurn`
is an HTTP error before any chunk; ``cut_after(n)`` writes at most the chunks before the
first finish chunk and never ``[DONE]`` (``mode`` ``abort``/``eof`` as for Responses);
``error_after(n)`` writes ``n`` chunks, then ``data: {"error": {"message", "type",
"param", "code"}}`` (the SDK raises ``openai.APIError``) and ends the body. A failed turn
(``turn.failed()``) has no chat completion rendering: it is answered with HTTP 500 and the
error envelope (``message``/``code`` from the turn), before any chunk, streamed or not —
so the SDK retries it under its default policy, like a real 500. A turn holding items chat
cannot carry (anything but messages, function calls and reasoning) is a script problem
(500, ``x-should-retry: false``). ``rec.events`` lists the chunk payloads written,
``rec.response`` the full ``chat.completion`` the stream delivers, ``rec.done`` whether
``data: [DONE]`` was written.

Azure OpenAI: pass :attr:`ScriptedOpenAI.azure_endpoint` as ``AzureOpenAI(azure_endpoint=...)``
(the SDK builds ``/openai/deployments/{model}/chat/completions?api-version=...`` for chat and
``/openai/responses?api-version=...`` for Responses, on openai 2.x and 3.x alike, with or
without ``azure_deployment=``), :meth:`ScriptedOpenAI.azure_deployment_url` as a classic
deployment ``base_url``, or :attr:`ScriptedOpenAI.base_url_azure_v1`
(``/openai/v1``) as ``OpenAI(base_url=...)`` for Azure's v1 surface. ``api-version`` is
recorded, not enforced. :meth:`ScriptedOpenAI.azure_client` builds such a client::

    with ScriptedOpenAI([turn.text("hi")]) as server:
        azure = openai.AzureOpenAI(azure_endpoint=server.azure_endpoint, api_version="2024-10-21",
                                   api_key="azkey")
        azure.chat.completions.create(model="my-deployment", messages=[...])
        rec = server.requests[0]
        rec.path, rec.api_version, rec.deployment, rec.api_key
        # '/openai/deployments/my-deployment/chat/completions', '2024-10-21', 'my-deployment', 'azkey'
"""

from __future__ import annotations

import json as _json
import logging
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from clearance.testing.chat import (
    DONE_FRAME,
    ChatRenderError,
    chat_chunks,
    encode_chunk,
    failed_error,
    render_chat_completion,
)
from clearance.testing.responses import new_id, render_response
from clearance.testing.script import ErrorTurn, ModelTurn, RawTurn, ScriptItem, Turn
from clearance.testing.stream import TERMINAL_EVENTS, encode_event, response_events

__all__ = ["RecordedRequest", "ScriptedOpenAI"]

log = logging.getLogger("clearance.testing")

_RESPONSE_ID_PATH = re.compile(r"/responses/([^/]+)$")
_DEPLOYMENT_PATH = re.compile(r"/deployments/([^/]+)/")

#: Which API a request was for, from its path (``RecordedRequest.api``).
API_RESPONSES = "responses"
API_CHAT = "chat"


def _classify(path: str) -> tuple[str | None, str | None]:
    """``(api, deployment)`` for a request path: api ``"chat"``, ``"responses"`` or ``None``."""
    path = path.rstrip("/")
    match = _DEPLOYMENT_PATH.search(path + "/")
    deployment = match.group(1) if match else None
    if path.endswith("/chat/completions"):
        return API_CHAT, deployment
    if path.endswith("/responses") or _RESPONSE_ID_PATH.search(path):
        return API_RESPONSES, deployment
    return None, deployment


@dataclass
class RecordedRequest:
    """One HTTP request the server received, and what it replied.

    ``headers`` keys are lower-cased (repeated headers joined with ``", "``); ``query``
    maps each parameter to its last value; ``json`` is the parsed body (``None`` if the
    body was empty or not JSON). ``status``/``response`` are filled before the reply is
    written, so they are complete once the client has its answer.

    For a streamed reply, ``response`` is the full ``Response`` the stream delivers (for a
    stream cut off or ended by an ``error`` event on purpose: the one it would have
    delivered) and ``events`` lists the SSE event dicts in the order they were written;
    each is appended just before it is written, so every event a client has received is
    already there. ``events`` is ``None`` for non-streamed replies.

    For Chat Completions (``api == "chat"``) ``response`` is the ``chat.completion`` object
    and ``events`` the ``chat.completion.chunk`` payloads written (plus, for an errored
    stream, the ``{"error": {...}}`` payload); the ``data: [DONE]`` sentinel is not listed
    (``done`` says whether it was written).

    ``api`` is ``"responses"`` (``.../responses`` and ``.../responses/{id}``), ``"chat"``
    (``.../chat/completions``) or ``None`` (any other path); ``deployment`` is the Azure
    deployment named in a classic ``/openai/deployments/{deployment}/...`` path (else
    ``None``; also from ``/openai/v1/deployments/{deployment}/...``, which ``AzureOpenAI`` builds
for chat when given a v1 ``base_url``). See also :attr:`api_version`, :attr:`api_key`, :attr:`bearer_token`.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    json: Any
    received_at: float
    status: int | None = None
    response: Any = None
    turn: Turn | None = None
    problem: str | None = None
    events: list[dict[str, Any]] | None = None
    api: str | None = None
    deployment: str | None = None
    done: bool = False

    @property
    def api_version(self) -> str | None:
        """The ``api-version`` query parameter (Azure), or ``None``."""
        return self.query.get("api-version")

    @property
    def api_key(self) -> str | None:
        """The ``api-key`` header (Azure key auth), or ``None``."""
        return self.headers.get("api-key")

    @property
    def bearer_token(self) -> str | None:
        """The token of an ``Authorization: Bearer <token>`` header (OpenAI keys, Entra tokens), or ``None``."""
        value = self.headers.get("authorization")
        if value is None or not value.lower().startswith("bearer "):
            return None
        return value[7:]

    @property
    def streamed(self) -> bool:
        """Whether the reply was a server-sent event stream."""
        return self.events is not None

    @property
    def retry_count(self) -> int | None:
        """The SDK's ``x-stainless-retry-count`` header as an int (0 on the first attempt)."""
        value = self.headers.get("x-stainless-retry-count")
        return int(value) if value is not None and value.isdigit() else None


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _StreamReply:
    """A 200 event stream: ``events`` are written in order, then the body ends per ``ending``."""

    events: list[dict[str, Any]]
    event_delay: float = 0.0
    ending: str = "eof"  # "eof": terminating chunk, connection reusable; "abort": drop the connection
    store: dict[str, Any] | None = None  # stored just before the terminal event is written
    encode: Any = encode_event  # event dict -> SSE frame bytes
    trailer: bytes | None = None  # written after the events when the stream ends normally ([DONE])


def _error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class ScriptedOpenAI:
    """Scripted OpenAI Responses and Chat Completions APIs on ``127.0.0.1`` (see module docs).

    ``turns``: turns or callables ``(request_json) -> Turn``, played in order, one per
    ``POST .../responses`` or ``POST .../chat/completions`` (one script for both). ``port=0`` picks a free port. Use as a context manager or call
    :meth:`start` / :meth:`stop`.
    """

    def __init__(self, turns: Iterable[ScriptItem] = (), *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._script: deque[ScriptItem] = deque()
        self._requests: list[RecordedRequest] = []
        self._stored: dict[str, dict[str, Any]] = {}
        self._problems: list[str] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self.add(*turns)

    # -- script ---------------------------------------------------------------------

    def add(self, *turns: ScriptItem) -> None:
        """Append turns to the script (also while the server runs)."""
        for t in turns:
            if not (isinstance(t, Turn) or callable(t)):
                raise TypeError(f"a turn must be a Turn or a callable (request_json) -> Turn, not {t!r}")
        with self._lock:
            self._script.extend(turns)

    @property
    def remaining(self) -> list[ScriptItem]:
        """Turns not yet played."""
        with self._lock:
            return list(self._script)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order (a copy of the list)."""
        with self._lock:
            return list(self._requests)

    @property
    def problems(self) -> list[str]:
        """Script problems seen so far: exhaustion, callable turns that raised, server bugs."""
        with self._lock:
            return list(self._problems)

    @property
    def stored_responses(self) -> dict[str, dict[str, Any]]:
        """Responses kept for ``previous_response_id`` / ``GET`` (those created with ``store`` not false)."""
        with self._lock:
            return dict(self._stored)

    def assert_all_played(self) -> None:
        """Fail unless every turn was played and no script problem occurred."""
        remaining, problems = self.remaining, self.problems
        msgs = []
        if remaining:
            msgs.append(f"{len(remaining)} scripted turn(s) were never played: {remaining!r}")
        if problems:
            msgs.append("script problems: " + "; ".join(problems))
        if msgs:
            raise AssertionError("\n".join(msgs))

    # -- lifecycle ------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("ScriptedOpenAI is not running: call start() or use it as a context manager")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The server root, e.g. ``http://127.0.0.1:PORT`` (use as ``azure_endpoint``)."""
        return f"http://{self._host}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1`` — pass as ``OpenAI(base_url=...)``."""
        return self.url + "/v1"

    @property
    def azure_endpoint(self) -> str:
        """The server root, to pass as ``AzureOpenAI(azure_endpoint=...)`` (the SDK appends ``/openai``)."""
        return self.url

    @property
    def base_url_azure_v1(self) -> str:
        """``http://127.0.0.1:PORT/openai/v1`` — Azure's v1 surface, for ``OpenAI(base_url=...)``."""
        return self.url + "/openai/v1"

    def azure_deployment_url(self, deployment: str) -> str:
        """``http://127.0.0.1:PORT/openai/deployments/{deployment}`` — a classic deployment base URL
        (``AzureOpenAI(base_url=...)``; ``azure_endpoint=`` plus ``azure_deployment=`` builds the same)."""
        return f"{self.url}/openai/deployments/{deployment}"

    def start(self) -> ScriptedOpenAI:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = ThreadingHTTPServer((self._host, self._port), _make_handler(self))
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="ScriptedOpenAI", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        with self._lock:
            conns = list(self._connections)
        for conn in conns:  # end idle keep-alive connections so their threads exit
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> ScriptedOpenAI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base_url if self._httpd is not None else "stopped"
        return f"<ScriptedOpenAI {where} remaining={len(self._script)} requests={len(self._requests)}>"

    # -- SDK convenience (imports openai lazily; not a dependency of clearance) -------

    def client(self, **kwargs: Any) -> Any:
        """``openai.OpenAI(base_url=self.base_url, api_key="test", **kwargs)``."""
        import openai

        kwargs.setdefault("api_key", "test")
        return openai.OpenAI(base_url=self.base_url, **kwargs)

    def async_client(self, **kwargs: Any) -> Any:
        """``openai.AsyncOpenAI(base_url=self.base_url, api_key="test", **kwargs)``."""
        import openai

        kwargs.setdefault("api_key", "test")
        return openai.AsyncOpenAI(base_url=self.base_url, **kwargs)

    @staticmethod
    def _azure_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs.setdefault("api_version", "2024-10-21")
        if not any(k in kwargs for k in ("api_key", "azure_ad_token", "azure_ad_token_provider")):
            kwargs["api_key"] = "test"
        return kwargs

    def azure_client(self, **kwargs: Any) -> Any:
        """``openai.AzureOpenAI(azure_endpoint=self.azure_endpoint, api_version="2024-10-21",
        api_key="test", **kwargs)`` (no ``api_key`` default when an Entra token is given)."""
        import openai

        return openai.AzureOpenAI(azure_endpoint=self.azure_endpoint, **self._azure_kwargs(kwargs))

    def async_azure_client(self, **kwargs: Any) -> Any:
        """The :class:`openai.AsyncAzureOpenAI` twin of :meth:`azure_client`."""
        import openai

        return openai.AsyncAzureOpenAI(azure_endpoint=self.azure_endpoint, **self._azure_kwargs(kwargs))

    # -- request handling (called from handler threads) --------------------------------

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _record(self, rec: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(rec)

    def _problem(self, rec: RecordedRequest, message: str) -> None:
        rec.problem = message
        with self._lock:
            self._problems.append(message)
        log.warning("ScriptedOpenAI: %s", message)

    def _dispatch(self, rec: RecordedRequest) -> _Reply | _StreamReply:
        path = rec.path.rstrip("/")
        if rec.method == "POST" and path.endswith("/responses"):
            return self._create(rec)
        if rec.method == "POST" and path.endswith("/chat/completions"):
            return self._create(rec, chat=True)
        match = _RESPONSE_ID_PATH.search(path)
        if match and rec.method == "GET":
            return self._retrieve(rec, match.group(1))
        if match and rec.method == "DELETE":
            return self._delete(rec, match.group(1))
        return self._json(
            rec, 404, _error_body(f"Invalid URL ({rec.method} {rec.path})", "invalid_request_error")
        )

    def _json(
        self, rec: RecordedRequest, status: int, body: Any, headers: Mapping[str, str] | None = None
    ) -> _Reply:
        rec.status = status
        rec.response = body
        return _Reply(status, _json.dumps(body).encode(), headers=dict(headers or {}))

    def _create(self, rec: RecordedRequest, chat: bool = False) -> _Reply | _StreamReply:
        request = rec.json
        if not isinstance(request, dict):
            return self._json(
                rec,
                400,
                _error_body(
                    "We could not parse the JSON body of your request. The OpenAI API expects a JSON payload.",
                    "invalid_request_error",
                ),
            )
        if not request.get("model") and not (chat and rec.deployment):
            return self._json(
                rec,
                400,
                _error_body(
                    "Missing required parameter: 'model'.",
                    "invalid_request_error",
                    "model",
                    "missing_required_parameter",
                ),
            )
        if chat and request.get("messages") == []:
            return self._json(
                rec,
                400,
                _error_body(
                    "Invalid 'messages': empty array. Expected an array with minimum length 1, "
                    "but got an empty array instead.",
                    "invalid_request_error",
                    "messages",
                    "empty_array",
                ),
            )
        if chat and not isinstance(request.get("messages"), list):
            return self._json(
                rec,
                400,
                _error_body(
                    "Missing required parameter: 'messages'.",
                    "invalid_request_error",
                    "messages",
                    "missing_required_parameter",
                ),
            )
        previous = None if chat else request.get("previous_response_id")
        if previous is not None:
            with self._lock:
                known = previous in self._stored
            if not known:
                return self._json(
                    rec,
                    400,
                    _error_body(
                        f"Previous response with id '{previous}' not found.",
                        "invalid_request_error",
                        "previous_response_id",
                        "previous_response_not_found",
                    ),
                )

        with self._lock:
            item = self._script.popleft() if self._script else None
            played = sum(1 for r in self._requests if r.turn is not None)
        if item is None:
            self._problem(
                rec, f"script exhausted: no turn left for request #{len(self.requests)} ({rec.method} {rec.path})"
            )
            return self._script_failure(rec, f"clearance.testing: {rec.problem}", "script_exhausted")
        try:
            turn = item(request) if not isinstance(item, Turn) else item
            if not isinstance(turn, Turn):
                raise TypeError(f"callable turn returned {turn!r}, not a Turn")
        except Exception as exc:  # noqa: BLE001 - reported to the test through the reply
            self._problem(rec, f"callable turn #{played + 1} raised {exc!r}")
            return self._script_failure(rec, f"clearance.testing: {rec.problem}", "script_error")
        rec.turn = turn

        if turn.delay_seconds > 0 and self._stopping.wait(turn.delay_seconds):
            return self._script_failure(rec, "clearance.testing: server stopping", "server_stopping")
        return self._play(rec, turn, request)

    def _script_failure(self, rec: RecordedRequest, message: str, code: str) -> _Reply:
        return self._json(rec, 500, _error_body(message, "server_error", None, code), {"x-should-retry": "false"})

    def _store(self, body: dict[str, Any]) -> None:
        with self._lock:
            self._stored[body["id"]] = body

    def _play(self, rec: RecordedRequest, turn: Turn, request: dict[str, Any]) -> _Reply | _StreamReply:
        if isinstance(turn, ModelTurn):
            streaming = bool(request.get("stream"))
            if turn.stream.faulty and not streaming:
                self._problem(
                    rec,
                    "a turn that breaks its stream on purpose (cut_after/error_after) was played "
                    "to a request without stream: true",
                )
                return self._script_failure(rec, f"clearance.testing: {rec.problem}", "script_error")
            if rec.api == API_CHAT:
                return self._play_chat(rec, turn, request, streaming)
            now = int(time.time())
            body = render_response(turn, request, response_id=new_id("resp"), created_at=now)
            store = request.get("store") is not False
            if streaming:
                return self._stream_reply(rec, turn, body, store)
            if store:
                self._store(body)
            return self._json(rec, 200, body)
        if isinstance(turn, ErrorTurn):
            headers = dict(turn.headers)
            if turn.retry_after is not None:
                ra = turn.retry_after
                headers["retry-after"] = str(int(ra)) if float(ra).is_integer() else str(ra)
            if turn.retry_after_ms is not None:
                headers["retry-after-ms"] = str(turn.retry_after_ms)
            if turn.should_retry is not None:
                headers["x-should-retry"] = "true" if turn.should_retry else "false"
            return self._json(rec, turn.status, turn.envelope(), headers)
        if isinstance(turn, RawTurn):
            body_bytes = turn.body_bytes()
            rec.status = turn.status
            try:
                rec.response = _json.loads(body_bytes) if body_bytes else None
            except ValueError:
                rec.response = None
            return _Reply(turn.status, body_bytes, turn.content_type, dict(turn.headers))
        raise TypeError(f"unknown turn type {type(turn).__name__}")

    def _play_chat(
        self, rec: RecordedRequest, turn: ModelTurn, request: dict[str, Any], streaming: bool
    ) -> _Reply | _StreamReply:
        failure = failed_error(turn)
        if failure is not None:  # a failed turn: HTTP 500 before any chunk, streamed or not
            return self._json(rec, 500, failure)
        if not request.get("model"):
            request = {**request, "model": rec.deployment}
        try:
            body = render_chat_completion(
                turn, request, completion_id="chatcmpl-" + new_id("x")[2:31], created=int(time.time())
            )
        except ChatRenderError as exc:
            self._problem(rec, f"turn cannot be played to Chat Completions: {exc}")
            return self._script_failure(rec, f"clearance.testing: {rec.problem}", "script_error")
        if not streaming:
            return self._json(rec, 200, body)
        opts = turn.stream
        chunks, before_finish = chat_chunks(body, request, interleave_tool_calls=opts.interleave_tool_calls)
        reply = _StreamReply(chunks, event_delay=opts.event_delay, encode=encode_chunk, trailer=DONE_FRAME)
        error_at = min(opts.error_after or 0, before_finish) if opts.error is not None else None
        cut_at = min(opts.cut_after, before_finish) if opts.cut_after is not None else None
        if opts.error is not None and error_at is not None and (cut_at is None or error_at <= cut_at):
            error = opts.error
            payload = _error_body(error.message, error.type, error.param, error.code)
            reply.events = chunks[:error_at] + [payload]
            reply.trailer = None
        elif cut_at is not None:
            reply.events = chunks[:cut_at]
            reply.ending = opts.cut_mode
            reply.trailer = None
        rec.status = 200
        rec.response = body
        rec.events = []
        return reply

    def _stream_reply(
        self, rec: RecordedRequest, turn: ModelTurn, body: dict[str, Any], store: bool
    ) -> _StreamReply:
        events = response_events(body)
        opts = turn.stream
        before_terminal = len(events) - 1
        error_at = min(opts.error_after or 0, before_terminal) if opts.error is not None else None
        cut_at = min(opts.cut_after, before_terminal) if opts.cut_after is not None else None
        reply = _StreamReply(events, event_delay=opts.event_delay, store=body if store else None)
        if opts.error is not None and error_at is not None and (cut_at is None or error_at <= cut_at):
            reply.events = events[:error_at] + [opts.error.event(error_at)]
            reply.store = None
        elif cut_at is not None:
            reply.events = events[:cut_at]
            reply.ending = opts.cut_mode
            reply.store = None
        rec.status = 200
        rec.response = body
        rec.events = []
        return reply

    def _retrieve(self, rec: RecordedRequest, response_id: str) -> _Reply:
        with self._lock:
            body = self._stored.get(response_id)
        if body is None:
            return self._json(
                rec, 404, _error_body(f"Response with id '{response_id}' not found.", "invalid_request_error")
            )
        return self._json(rec, 200, body)

    def _delete(self, rec: RecordedRequest, response_id: str) -> _Reply:
        with self._lock:
            body = self._stored.pop(response_id, None)
        if body is None:
            return self._json(
                rec, 404, _error_body(f"Response with id '{response_id}' not found.", "invalid_request_error")
            )
        return self._json(rec, 200, {"id": response_id, "object": "response", "deleted": True})


def _make_handler(server: ScriptedOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body leave in two writes; with Nagle on, the second waits ~40 ms for the
        # client's delayed ACK, which would swamp every latency measured against this server.
        disable_nagle_algorithm = True
        server_version = "clearance-testing"
        sys_version = ""

        def setup(self) -> None:
            super().setup()
            server._track(self.connection, True)

        def finish(self) -> None:
            server._track(self.connection, False)
            try:
                super().finish()
            except OSError:
                pass

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug("ScriptedOpenAI: " + format, *args)

        def _read_body(self) -> bytes:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length > 0 else b""

        def _handle(self) -> None:
            body = self._read_body()
            split = urlsplit(self.path)
            headers: dict[str, str] = {}
            for key, value in self.headers.items():
                key = key.lower()
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
            try:
                parsed = _json.loads(body) if body else None
            except ValueError:
                parsed = None
            api, deployment = _classify(split.path)
            rec = RecordedRequest(
                api=api,
                deployment=deployment,
                method=self.command,
                path=split.path,
                query=dict(parse_qsl(split.query, keep_blank_values=True)),
                headers=headers,
                body=body,
                json=parsed,
                received_at=time.time(),
            )
            server._record(rec)
            try:
                reply = server._dispatch(rec)
            except Exception as exc:  # noqa: BLE001 - a bug here must reach the test, not hang it
                server._problem(rec, f"internal error in ScriptedOpenAI: {exc!r}")
                log.exception("ScriptedOpenAI failed to handle %s %s", self.command, self.path)
                reply = server._script_failure(rec, f"clearance.testing: {rec.problem}", "internal_error")
            if isinstance(reply, _StreamReply):
                self._write_stream(rec, reply)
                return
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                self.send_header("x-request-id", "req_" + new_id("x")[2:34])
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply.body)
                self.wfile.flush()
            except OSError:  # client went away (e.g. its timeout fired during a delay)
                self.close_connection = True

        def _write_stream(self, rec: RecordedRequest, reply: _StreamReply) -> None:
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("x-request-id", "req_" + new_id("x")[2:34])
                self.end_headers()
                for index, event in enumerate(reply.events):
                    if index and reply.event_delay > 0 and server._stopping.wait(reply.event_delay):
                        self.close_connection = True  # server stopping: drop the stream
                        return
                    if event.get("type") in TERMINAL_EVENTS and reply.store is not None:
                        server._store(reply.store)
                    assert rec.events is not None
                    rec.events.append(event)
                    frame = reply.encode(event)
                    # one write per event (chunk header, frame, CRLF): it leaves at once
                    self.wfile.write(b"%x\r\n%b\r\n" % (len(frame), frame))
                    self.wfile.flush()
                if reply.ending == "abort":
                    # No terminating chunk: the client sees the body end mid-stream.
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                if reply.trailer is not None:
                    if reply.events and reply.event_delay > 0 and server._stopping.wait(reply.event_delay):
                        self.close_connection = True
                        return
                    rec.done = True
                    self.wfile.write(b"%x\r\n%b\r\n" % (len(reply.trailer), reply.trailer))
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except OSError:  # client went away mid-stream
                self.close_connection = True

        do_POST = do_GET = do_DELETE = do_PUT = do_PATCH = do_HEAD = do_OPTIONS = _handle

    return Handler
