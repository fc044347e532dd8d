"""A bounded schemathesis run against the live OpenAPI schema of a real uvicorn: whatever it
generates (valid or not), the answer is documented, matches its schema, is never a 5xx and
discloses nothing. `make fuzz` runs the long version (tests/support/fuzz.py)."""

from __future__ import annotations

import re

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.live import API_KEY, LiveServer, add_clip, live_settings, make_clip

pytestmark = pytest.mark.e2e

LEAKS = re.compile(r"0x[0-9a-fA-F]{6,}|Traceback|File \"|/tmp/|\.py\b|site-packages")


@pytest.fixture(scope="module")
def live(tmp_path_factory, random_checkpoint):
    with LiveServer(live_settings(tmp_path_factory, random_checkpoint)) as srv:
        with srv.client() as client:
            add_clip(client, make_clip(tmp_path_factory.mktemp("c"), 0, "mono", 0))
        yield srv


@pytest.fixture(scope="module")
def api_schema(live):
    return schemathesis.openapi.from_url(f"{live.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_fuzzed_requests_get_documented_answers(case, live):
    response = case.call(base_url=live.url, headers={"X-API-Key": API_KEY}, timeout=60)
    case.validate_response(
        response,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
    if response.status_code >= 400:
        assert not LEAKS.search(response.text), response.text
