"""Schemathesis against /api/v1/openapi.json on a real server: whatever it sends, no 5xx, every
answer matches the documented schema and status codes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.integration.conftest import Hospital, make_hospital
from whiteboard.routes.openapi import document

schema = schemathesis.openapi.from_dict(document())


@pytest.fixture(scope="module")
def fuzz_hospital(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hospital]:
    h = make_hospital(tmp_path_factory.mktemp("fuzz"), wards=2)
    h.server.start()
    # Something to find: an admitted patient, so ids in paths sometimes hit real records.
    with httpx.Client(base_url=h.server.base_url, headers={"Authorization": f"Bearer {h.token}"}) as api:
        api.post(
            "/api/v1/stays",
            json={
                "bed": "W01-B1-1",
                "patient": {"mrn": "F1", "given_name": "A", "family_name": "B", "sex": "male"},
            },
        )
    try:
        yield h
    finally:
        h.server.stop()


def test_the_document_is_served_as_written(fuzz_hospital: Hospital) -> None:
    served = httpx.get(f"{fuzz_hospital.server.base_url}/api/v1/openapi.json").json()
    assert served["paths"].keys() == document()["paths"].keys()


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_answers_match_the_document(
    case: schemathesis.Case, fuzz_hospital: Hospital
) -> None:
    headers = {"Authorization": f"Bearer {fuzz_hospital.token}"}
    response = case.call(base_url=fuzz_hospital.server.base_url, headers=headers)
    if refused_by_http_parser(response.status_code, response.headers, response.content):
        return  # not HTTP at all (a control character in a header, say): the app never saw it
    case.validate_response(
        response,
        headers=headers,
        # The board refuses schema-valid requests on purpose (an NHS number failing its check
        # digit, a stale If-Match, an occupied bed): every other check stays on, including
        # that schema-violating input is refused and that no answer is a 5xx.
        excluded_checks=[positive_data_acceptance],
    )


def refused_by_http_parser(status: int, headers: Any, body: bytes) -> bool:
    """uvicorn's own answer to bytes its HTTP parser cannot read, before any app code runs."""
    content_type = str(headers.get("content-type", ""))
    return status == 400 and content_type.startswith("text/plain") and body == INVALID_HTTP


#: What uvicorn (httptools and h11 alike) answers to a request it cannot parse.
INVALID_HTTP = b"Invalid HTTP request received."
