"""Schemathesis against ``clearance serve`` (its own process): generated requests for every
operation of the published OpenAPI document, with an admin key; no 500, and every response
conforms to the document (status code, content type, body schema)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from server_support import RULES, create_key_cli, start_process, stop_process

from clearance import Engine, parse_rules

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    db: Path = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
    with Engine(db) as eng:
        eng.apply_rules(parse_rules(RULES))
    token = create_key_cli(db, "fuzzer", "admin")
    proc, url = start_process(db)
    try:
        yield {"url": url, "token": token}
    finally:
        stop_process(proc)


def _document() -> dict[str, Any]:
    """The OpenAPI document as the app builds it (a throwaway store; nothing is served)."""
    import shutil
    import tempfile

    from clearance.server import create_app

    where = tempfile.mkdtemp(prefix="clearance-openapi-")
    app = create_app(Path(where) / "schema.db")
    try:
        return app.openapi()
    finally:
        app.state.engine.close()
        shutil.rmtree(where, ignore_errors=True)


DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(DOCUMENT)


def test_the_running_server_publishes_the_document_under_test(running: dict[str, Any]) -> None:
    import httpx

    assert httpx.get(f"{running['url']}/v1/openapi.json").json() == DOCUMENT


@schema.parametrize()
@settings(max_examples=int(os.environ.get("CLEARANCE_FUZZ_EXAMPLES", "15")), deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_api_conforms_to_its_openapi_document(case: Any, running: dict[str, Any]) -> None:
    if case.path.endswith("/wait"):
        case.query = {**(case.query or {}), "timeout_seconds": 0}
    if case.path == "/v1/runs/take" and isinstance(case.body, dict):
        case.body = {**case.body, "wait_seconds": 0}
    case.call_and_validate(base_url=running["url"], headers={"Authorization": f"Bearer {running['token']}"},
                           checks=CHECKS, timeout=30)  # fmt: skip
