"""A property-based fuzz of the server's API from its own OpenAPI schema (schemathesis):
whatever the generated request, with a good key or without, the answer is never a 5xx,
and the server still serves a normal request afterwards."""

from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings

EXAMPLES = 25  # per operation and key: bounded, so the whole fuzz takes well under a minute


@pytest.fixture(scope="module")
def fuzzed(start_server):
    """A server of its own: what the fuzz queues must not slow the other tests' server."""
    return start_server("--request-timeout", "5")


@pytest.fixture(scope="module")
def operations(fuzzed):
    served = fuzzed
    schema = schemathesis.openapi.from_url(served.url + "/openapi.json", timeout=10)
    found = [result.ok() for result in schema.get_all_operations()]
    assert len(found) >= 9, [f"{op.method} {op.path}" for op in found]
    return found


@pytest.mark.parametrize("keyed", [True, False], ids=["good key", "no key"])
def test_no_request_makes_the_server_fail(fuzzed, operations, keyed):
    served = fuzzed
    headers = served.headers() if keyed else {}
    failures: list[str] = []

    for operation in operations:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def fuzz(case) -> None:
            response = case.call(base_url=served.url, headers=headers, timeout=30)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code}")

        fuzz()
    assert not failures, failures[:10]
    assert requests.get(served.url + "/v1/health", timeout=10).status_code == 200
