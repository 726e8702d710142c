"""Bad input to the server: a fuzzer over its OpenAPI schema and hand-made tensor cases.

Every answer is a 2xx or a 4xx in OpenAI's error shape (``{"error": {message, type, param,
code}}``), never a 5xx, and the server answers a good request the same way afterwards.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings

from ._fuzz import bodies, check_answer, encode, reference, tensor_cases

pytestmark = pytest.mark.slow

FUZZ_CASES = 60  # the benchmark sends 500 and more


def _root(server: Any) -> str:
    return server.base_url.removesuffix("/v1")


def test_fuzzed_requests_get_no_5xx(local_server: Any) -> None:
    with httpx.Client(base_url=_root(local_server), timeout=120) as http:
        before = reference(http, local_server)
        openapi = http.get("/openapi.json").json()
        statuses: list[int] = []

        @settings(max_examples=FUZZ_CASES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(bodies(openapi, local_server.model_id))
        def one(case: tuple[str, Any]) -> None:
            route, body = case
            r = http.post(route, content=encode(body), headers={"content-type": "application/json"})
            statuses.append(r.status_code)
            check_answer(r, body)

        one()
        assert len(statuses) >= FUZZ_CASES and any(s == 200 for s in statuses) and any(s >= 400 for s in statuses)
        assert http.get("/health").status_code == 200
        assert reference(http, local_server) == pytest.approx(before, abs=1e-4)


@pytest.mark.parametrize("route", ["/v1/completions", "/v1/bbox/hidden_stats"])
def test_bad_tensors_are_4xx_naming_the_field(local_server: Any, route: str) -> None:
    with httpx.Client(base_url=_root(local_server), timeout=120) as http:
        before = reference(http, local_server)
        meta = next(m for m in http.get("/v1/models").json()["data"] if m["id"] == local_server.model_id)["metadata"]
        for name, soft, field in tensor_cases(int(meta["hidden_size"]), int(meta["context_length"])):
            body: dict[str, Any] = {"model": local_server.model_id, "soft_prompt": soft}
            body.update({"prompt": "It was", "max_tokens": 0} if "completions" in route else {"input": ["It was"]})
            r = http.post(route, content=json.dumps(body), headers={"content-type": "application/json"})
            assert 400 <= r.status_code < 500, (name, r.status_code, r.text[:300])
            check_answer(r, body)
            assert (r.json()["error"]["param"] or "").startswith(field), (name, r.json())
        assert reference(http, local_server) == pytest.approx(before, abs=1e-4)
