"""Fuzzing the OpenAPI schema with schemathesis against a real server: whatever it sends, no 5xx.

Every operation of /openapi.json gets valid-looking cases (positive) and schema-breaking ones (negative),
sent with a maintainer's key so they reach the routes rather than stop at the key check.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from service_util import Server, add_key, model_copy

from lifelong.service.database import default_url

EXAMPLES = 25  # per operation and mode


def test_fuzzing_the_openapi_schema_finds_no_server_error(tmp_path):
    model = model_copy(tmp_path)
    key = add_key(default_url(model), "maintainer")
    with Server(model, None, "--max-body-bytes", "65536") as server:
        schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {(op.method.upper(), op.path) for op in operations} >= {
            ("GET", "/health"), ("POST", "/predict"), ("POST", "/feedback"), ("POST", "/updates"),
            ("GET", "/updates/{update_id}"), ("GET", "/versions"), ("GET", "/versions/{n}"),
            ("POST", "/versions/{n}/promote"), ("POST", "/rollback"), ("GET", "/metrics")}
        sent, statuses = 0, {}
        for op in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @given(case=op.as_strategy(generation_mode=mode))
                @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                          database=None)
                def call(case):
                    nonlocal sent
                    response = case.call_and_validate(base_url=server.url, headers={"X-API-Key": key},
                                                      checks=[not_a_server_error], timeout=60)
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    sent += 1

                try:
                    call()
                except Unsatisfiable:  # an operation without parameters or body has nothing to break
                    assert mode is GenerationMode.NEGATIVE and not op.path_parameters and not op.body
        assert sent >= len(operations) * EXAMPLES
        print(f"{sent} requests, replies by status: {dict(sorted(statuses.items()))}")
        assert max(statuses) < 500 and {200, 404, 422} <= set(statuses)
