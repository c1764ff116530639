"""Test an OpenAI tool-calling agent without an API key.

:class:`ScriptedOpenAI` is a local HTTP server (127.0.0.1, standard library only) that
speaks OpenAI's Responses API and Chat Completions API and answers each
``POST .../responses`` or ``POST .../chat/completions`` with the next scripted turn (the
same turns render for either API); point the real ``openai`` SDK at it with ``base_url``::

    from openai import OpenAI
    from clearance.testing import ScriptedOpenAI, turn

    server = ScriptedOpenAI([
        turn.function_call("refund_payment", {"order_id": "ord_1", "amount": 10}),
        turn.text("Refunded."),
    ])
    with server:
        client = OpenAI(base_url=server.base_url, api_key="test")
        ...                                   # run the governed agent
    server.requests[0].json["tools"]          # what the agent sent
    server.assert_all_played()

Turn factories (module :mod:`clearance.testing.turn`): ``function_call``,
``function_calls``, ``raw_function_call``, ``text``, ``refusal``, ``reasoning``,
``items``, ``incomplete``, ``failed``, ``error``, ``raw``, and for streams ``stream_cut``,
``stream_error``; model turns combine with ``+``. A script entry may also be a callable
``(request_json) -> Turn``.

Streaming: a request with ``"stream": true`` gets the model turn as server-sent events
(``response.created`` ... ``response.completed``), each validating against the spec's
``ResponseStreamEvent``. ``ModelTurn.streamed(event_delay=)`` paces the events;
``ModelTurn.cut_after(n)`` / ``error_after(n)`` break the stream on purpose. The recorded
request keeps the emitted events (``server.requests[i].events``) and the final
``Response`` (``.response``)::

    with ScriptedOpenAI([turn.text("Hello there").streamed(event_delay=0.01)]) as server:
        client = OpenAI(base_url=server.base_url, api_key="test")
        with client.responses.stream(model="gpt-5", input="hi") as stream:
            for event in stream: ...
            final = stream.get_final_response()
        [e["type"] for e in server.requests[0].events]   # response.created, ...

Chat Completions (module :mod:`clearance.testing.chat` has the mapping): the same turns,
``server.requests[i].api == "chat"``::

    server = ScriptedOpenAI([
        turn.function_call("refund_payment", {"order_id": "ord_1", "amount": 10}),
        turn.text("Refunded.").streamed(),
    ])
    with server:
        client = OpenAI(base_url=server.base_url, api_key="test")
        c = client.chat.completions.create(model="gpt-4.1", messages=msgs, tools=tools)
        c.choices[0].message.tool_calls[0].function.name        # "refund_payment"
        for chunk in client.chat.completions.create(model="gpt-4.1", messages=msgs, stream=True,
                                                    stream_options={"include_usage": True}):
            ...                                  # role chunk, deltas, finish chunk, usage chunk
        server.requests[1].events[-1]["usage"]   # then data: [DONE] (server.requests[1].done)

Azure OpenAI: ``AzureOpenAI(azure_endpoint=server.azure_endpoint, api_version=..., api_key=...)``
(or ``azure_ad_token_provider=``), ``AzureOpenAI(base_url=server.azure_deployment_url("dep"), ...)``,
``OpenAI(base_url=server.base_url_azure_v1, ...)``; each request records ``path``,
``api_version``, ``deployment``, ``api_key`` / ``bearer_token``.
"""

from __future__ import annotations

from clearance.testing import turn
from clearance.testing.script import ErrorTurn, ModelTurn, RawTurn, ScriptItem, StreamError, StreamOptions, Turn
from clearance.testing.server import RecordedRequest, ScriptedOpenAI

__all__ = [
    "ErrorTurn",
    "ModelTurn",
    "RawTurn",
    "RecordedRequest",
    "ScriptItem",
    "ScriptedOpenAI",
    "StreamError",
    "StreamOptions",
    "Turn",
    "turn",
]
