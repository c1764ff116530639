"""The control-plane server: the engine over HTTP (FastAPI), with API keys and roles.

``create_app(engine)`` builds the ASGI app; ``clearance serve`` runs it with uvicorn;
:class:`ServerThread` runs it on loopback inside a process (tests, examples, notebooks).
Needs the ``server`` extra (``pip install "clearance[server]"``); API keys are the engine's
(``engine.keys``), so ``clearance keys`` does not.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServerThread", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from clearance.server.app import create_app

        return create_app
    if name == "ServerThread":
        from clearance.server.runner import ServerThread

        return ServerThread
    raise AttributeError(f"module 'clearance.server' has no attribute {name!r}")
