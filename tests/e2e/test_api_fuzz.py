"""Property-based fuzzing of the API from its own OpenAPI document (schemathesis), against
a real server process: no 500s, no undocumented status, no answer that breaks its schema.

schemathesis' pytest plugin does not load under pytest 9, so each operation's strategy is
driven by hypothesis directly."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from tests.e2e.conftest import AUTH, Server

#: Examples per operation: bounded, so the suite stays fast.
EXAMPLES = 12


@pytest.fixture
def server(dsn: str) -> Server:
    return Server("--database-url", dsn, "--no-scheduler")


def test_every_operation_keeps_its_promises(server: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/api/v1/openapi.json")
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.endswith("/logs/ws"):
            continue  # a WebSocket: its handshake is tested in tests/api/test_logs_api.py

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            response = case.call(headers=AUTH)
            # Schema-valid is not always acceptable: an opaque cursor or a random job id is
            # rightly refused (400/404). Every other check stays: no 5xx, only documented
            # statuses and content types, answers that fit their schemas.
            case.validate_response(response, excluded_checks=[positive_data_acceptance])

        try:
            check()
        except BaseException:
            print(server.output()[-8000:])  # the server's own account, shown with the failure
            raise
        checked.append(f"{operation.method.upper()} {operation.path}")
    server.stop()
    assert len(checked) >= 17, checked
