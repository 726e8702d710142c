"""Request bodies for fuzzing the local server, drawn from its own OpenAPI schema (hypothesis).

The schema is read into hypothesis strategies here (the subset pydantic writes: ``$ref``,
``anyOf``, objects, arrays, strings, numbers, booleans, null, ``const``, bounds); the package
hypothesis-jsonschema fails inside hypothesis 6.170 ('many' object has no attribute 'more').

Two kinds, mixed: bodies that follow the schema (with ``model`` mostly the served one, so the
checks behind the schema are reached, and generation lengths kept small, so that a valid body
costs milliseconds), and bodies in which one field is replaced by arbitrary JSON, or the whole
body is arbitrary JSON. No import from the test package: benchmarks/reliability.py uses it too.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import httpx
import numpy as np
from hypothesis import strategies as st

ROUTES = ("/v1/completions", "/v1/chat/completions", "/v1/bbox/hidden_stats")

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_SMALL = {"max_tokens": 3, "max_completion_tokens": 3, "n": 3, "logprobs": 25, "top_logprobs": 25}


def _body_schema(openapi: dict[str, Any], route: str) -> dict[str, Any]:
    ref = openapi["paths"][route]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    name = ref.rsplit("/", 1)[1]
    schemas = copy.deepcopy(openapi["components"]["schemas"])
    return {**schemas[name], "components": {"schemas": schemas}}


def from_schema(schema: dict[str, Any], root: dict[str, Any] | None = None) -> st.SearchStrategy[Any]:
    """Values that follow ``schema`` (optional properties present or not)."""
    root = root if root is not None else schema
    if "$ref" in schema:
        return st.deferred(lambda: from_schema(root["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]], root))
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema or "oneOf" in schema:
        return st.one_of([from_schema(s, root) for s in schema.get("anyOf", schema.get("oneOf"))])
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        required = [k for k in schema.get("required", []) if k in props]
        optional = [k for k in props if k not in required]
        return st.fixed_dictionaries({k: from_schema(props[k], root) for k in required},
                                     optional={k: from_schema(props[k], root) for k in optional})
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), root), min_size=schema.get("minItems", 0),
                        max_size=schema.get("maxItems", 4))
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0), max_size=schema.get("maxLength", 30))
    if kind == "integer":
        return st.integers(min_value=schema.get("minimum"), max_value=schema.get("maximum"))
    if kind == "number":
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        return st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False,
                         exclude_min="exclusiveMinimum" in schema, exclude_max="exclusiveMaximum" in schema)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return _JSON  # no constraint: any JSON


def _bounded(schema: dict[str, Any], model_id: str) -> dict[str, Any]:
    """The schema with ``model`` mostly the served one and generation kept short."""
    props = schema.get("properties", {})
    props["model"] = {"anyOf": [{"const": model_id}, {"type": "string", "maxLength": 12}]}
    for name, top in _SMALL.items():
        if name in props:
            props[name] = {"anyOf": [{"type": "integer", "minimum": -3, "maximum": top}, {"type": "null"}]}
    for name in ("prompt", "input"):
        if name in props:
            text = {"type": "string", "maxLength": 40}
            props[name] = {"anyOf": [text, {"type": "array", "items": text, "maxItems": 3}]}
    if "messages" in props:
        props["messages"]["maxItems"] = 3
    return schema


def _replace(body: Any, i: int, new_key: str, value: Any) -> Any:
    """``body`` with its i-th field (modulo its size; a new one past the end) set to ``value``."""
    if not isinstance(body, dict):
        return value
    keys = list(body)
    key = keys[i % (len(keys) + 1)] if i % (len(keys) + 1) < len(keys) else new_key
    return {**body, key: value}


def bodies(openapi: dict[str, Any], model_id: str) -> st.SearchStrategy[tuple[str, Any]]:
    """(route, JSON body) pairs."""
    per_route = []
    for route in ROUTES:
        schema = _bounded(_body_schema(openapi, route), model_id)
        valid = from_schema(schema)
        one_field_wrong = st.tuples(valid, st.integers(0, 30), st.text(min_size=1, max_size=12), _JSON).map(
            lambda t: _replace(*t))
        per_route.append(st.tuples(st.just(route), st.one_of(valid, valid, one_field_wrong, _JSON)))
    return st.one_of(per_route)


def encode(body: Any) -> bytes:
    """JSON as a client would send it (big integers and all)."""
    return json.dumps(body).encode()


def reference(http: httpx.Client, server: Any) -> list[float]:
    """Label-word log-probabilities of two fixed prompts (compared before and after the abuse)."""
    r = http.post("/v1/completions", json={"model": server.model_id, "prompt": ["It was great", "It was bad"],
                                           "max_tokens": 0, "label_words": [" good", " bad"]})
    assert r.status_code == 200, r.text
    return [v for c in r.json()["choices"] for v in c["label_logprobs"]]


def check_answer(r: httpx.Response, body: Any) -> None:
    """2xx, or 4xx in OpenAI's error shape naming the field when one is at fault."""
    assert r.status_code < 500, (r.status_code, r.text[:300], body)
    if r.status_code >= 400:
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["message"], err
        if r.status_code == 422 and isinstance(body, dict):
            assert err["param"], err  # names the field


def _tensor(array: np.ndarray) -> dict[str, Any]:
    return {"shape": list(array.shape), "dtype": "float32",
            "data": base64.b64encode(array.astype("<f4").tobytes()).decode()}


def tensor_cases(hidden: int, context: int) -> list[tuple[str, dict[str, Any], str]]:
    """(name, soft_prompt, the field the error must name)."""
    good = np.zeros((2, hidden), dtype=np.float32)
    nan, inf = good.copy(), good.copy()
    nan[0, 0], inf[1, 3] = np.nan, -np.inf
    return [
        ("wrong width", _tensor(np.zeros((2, hidden + 1))), "soft_prompt.shape"),
        ("three dimensions", _tensor(np.zeros((1, 2, hidden))), "soft_prompt.shape"),
        ("zero rows", {**_tensor(good), "shape": [0, hidden]}, "soft_prompt.shape"),
        ("shape and data disagree", {**_tensor(good), "shape": [3, hidden]}, "soft_prompt.data"),
        ("NaN", _tensor(nan), "soft_prompt.data"),
        ("infinity", _tensor(inf), "soft_prompt.data"),
        ("float16", {**_tensor(good), "dtype": "float16"}, "soft_prompt.dtype"),
        ("not base64", {**_tensor(good), "data": "@@not base64@@"}, "soft_prompt.data"),
        ("base64 of a JSON list", {**_tensor(good), "data": base64.b64encode(b"[1, 2]").decode()},
         "soft_prompt.data"),
        ("huge shape", {**_tensor(good), "shape": [2**40, hidden]}, "soft_prompt"),
        ("longer than the context", _tensor(np.zeros((context + 5, hidden))), "soft_prompt"),
        ("unknown key", {**_tensor(good), "scale": 2}, "soft_prompt.scale"),
        ("base_ids out of range", {**_tensor(good), "base_ids": [0, 10**9]}, "soft_prompt.base_ids"),
    ]
