"""A bounded schemathesis run against the live OpenAPI schema of a real uvicorn: whatever it
generates, valid (positive) or not (negative), the answer is documented, matches its
schema, is never a 5xx and discloses nothing. Half the uploads are decodable audio
(`tests.support.fuzz.flatmap_body`), so the decoding and embedding path is fuzzed too: the
positive run must have embedded some. `make fuzz` runs the long version (tests/support/fuzz.py,
at least 20k requests)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support import fuzz  # registers its flatmap_body hook: decodable uploads
from tests.support.corpus import LEAKS
from tests.support.live import API_KEY, LiveServer, add_clip, live_settings, make_clip

pytestmark = pytest.mark.e2e

EXAMPLES = 10  # per operation and mode: about 200 requests in all
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def live(tmp_path_factory, random_checkpoint):
    with LiveServer(live_settings(tmp_path_factory, random_checkpoint)) as srv:
        with srv.client() as client:
            add_clip(client, make_clip(tmp_path_factory.mktemp("c"), 0, "mono", 0))
        yield srv


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzzed_requests_get_documented_answers(live, mode):
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    n_without_input = 0
    uploads_answered: list[tuple[int, str]] = []  # (status, error code) of requests with a file
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def exchange(case):
            response = case.call(base_url=live.url, headers={"X-API-Key": API_KEY}, timeout=60)
            case.validate_response(response, checks=CHECKS)
            if response.status_code >= 400:
                assert not LEAKS.search(response.text), response.text
            if isinstance(case.body, dict) and "file" in case.body:
                code = response.json().get("code", "") if response.status_code >= 400 else ""
                uploads_answered.append((response.status_code, code))

        try:
            exchange()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # nothing to break: it takes no input
            n_without_input += 1
    assert n_without_input < len(operations)
    assert fuzz.flatmap_body  # (the hook is registered on import)
    if mode is GenerationMode.POSITIVE:  # some decodable uploads were embedded and answered
        assert any(200 <= s < 300 for s, _ in uploads_answered), uploads_answered
