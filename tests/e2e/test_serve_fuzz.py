"""Schemathesis fuzzes every operation of the app's own OpenAPI schema against a live server:
schema-valid and deliberately invalid requests, a bounded number per operation. No answer may be
a 5xx, and every answer must match the documented shapes and status codes."""
from __future__ import annotations

import pytest

from blinkgen.serve.schemas import Limits
from conftest_serve import live_server

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (content_type_conformance,  # noqa: E402
                                               response_schema_conformance, status_code_conformance)

MAX_EXAMPLES = 8  # per operation and generation mode: enough to hit edges, quick on 2 cores


@pytest.fixture(scope="module")
def fuzz_server():
    # small caps keep the valid requests cheap; a short grace drops leftovers at the end
    with live_server(limits=Limits(max_steps=1, max_n=2), max_queue=64, shutdown_grace_s=1.0) as live:
        yield live


def operations(base_url: str):
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json")
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) >= 8, [op.label for op in ops]
    return ops


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


# pytest-level parametrisation needs the schema at collection time, but it comes from the live
# server; so each mode is one test that drives hypothesis over every operation itself.
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_server_errors(fuzz_server, mode):
    gen_mode = schemathesis.GenerationMode(mode)
    fuzzed = 0
    for op in operations(fuzz_server.base_url):
        @given(case=op.as_strategy(generation_mode=gen_mode))
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case):
            case.call_and_validate(base_url=fuzz_server.base_url, checks=CHECKS, timeout=60)

        try:
            fuzz()
            fuzzed += 1
        except Unsatisfiable:  # nothing to make invalid (no parameters, no body): skip it
            assert mode == "negative", op.label
    assert fuzzed >= 4
