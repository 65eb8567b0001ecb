"""A few hundred malformed requests (hypothesis) against a live controller: never a 5xx, and the
controller stays healthy and keeps serving real work afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.farm.conftest import TINY

ENDPOINTS = [
    ("POST", "/v1/jobs", "client"), ("GET", "/v1/jobs", "client"), ("GET", "/v1/jobs/{id}", "client"),
    ("POST", "/v1/jobs/{id}/cancel", "client"), ("PUT", "/v1/blobs/{id}", "client"), ("HEAD", "/v1/blobs/{id}", "client"),
    ("POST", "/v1/agents/register", "agent"), ("POST", "/v1/agents/{id}/claim", "agent"),
    ("POST", "/v1/agents/{id}/heartbeat", "agent"), ("POST", "/v1/jobs/{id}/result", "agent"),
    ("GET", "/v1/blobs/{id}", "agent"), ("GET", "/v1/devices", "client"), ("GET", "/v1/queue", "client"),
]  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=12,
)  # fmt: skip
# Bodies shaped like the real ones, with fields replaced or dropped, plus arbitrary JSON and bytes.
job_like = st.fixed_dictionaries({}, optional={
    "model": st.fixed_dictionaries({}, optional={"sha256": st.text(max_size=70) | st.just("0" * 64),
                                                 "uri": json_values, "name": json_values, "bytes": json_values}),
    "device_class": st.text(max_size=40) | json_values, "settings": st.dictionaries(
        st.sampled_from(["threads", "min_runs", "warmup_runs", "min_duration_s", "providers", "graph_optimization",
                         "bogus"]), json_values, max_size=4),
    "timeout_s": json_values, "priority": json_values, "expires_in_s": json_values, "extra": json_values,
    "agent_id": json_values, "lease_id": json_values, "status": st.sampled_from(["done", "failed", "x"]),
    "result": json_values, "error": json_values, "wait_s": json_values, "hostname": json_values, "facts": json_values,
})  # fmt: skip
path_ids = st.one_of(
    st.integers(min_value=-(2**65), max_value=2**65).map(str),
    st.text(alphabet=st.characters(codec="ascii", exclude_characters="/?#"), max_size=70),
    st.just("0" * 64),
)
bodies = st.one_of(
    job_like.map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=300),
)


def test_malformed_requests_never_break_the_controller(farm_factory, tiny_model: Path) -> None:
    farm = farm_factory("--lease-s", "5")
    session = requests.Session()
    seen: dict[int, int] = {}

    @settings(
        max_examples=300,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(
        endpoint=st.sampled_from(ENDPOINTS),
        path_id=path_ids,
        body=bodies,
        query=st.dictionaries(
            st.sampled_from(["device_class", "state", "limit", "before_id", "x"]),
            st.text(max_size=20),
            max_size=3,
        ),
        role=st.sampled_from(["own", "client", "agent"]),
    )
    def one(endpoint, path_id, body, query, role) -> None:
        method, path, own = endpoint
        token = farm.client_token if (own if role == "own" else role) == "client" else farm.agent_token
        r = session.request(
            method,
            farm.url + path.replace("{id}", requests.utils.quote(path_id, safe="")),
            data=body if method not in ("GET", "HEAD") else None,
            params=query,
            timeout=30,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert r.status_code < 500, (method, path, path_id, body[:200], r.status_code, r.text[:300])

    one()
    assert sum(seen.values()) >= 300 and len(seen) >= 4  # a spread of answers: 2xx, 4xx of several kinds
    assert farm.healthy()
    # and it still does real work
    farm.agent()
    client = farm.client()
    job = client.submit(client.upload(tiny_model), "rpi4-emulated", TINY, timeout_s=60)
    assert client.wait([job["id"]], 60)[job["id"]]["state"] == "done"


def test_ids_beyond_the_id_column_are_refused_not_a_server_error(farm_factory) -> None:
    """PostgreSQL's `integer` ids end at 2**31 - 1; a larger id in a request is a 4xx (the fuzz above
    once found a 500 for GET /v1/jobs/2147483648)."""
    farm = farm_factory()
    headers = {"Authorization": f"Bearer {farm.client_token}"}
    largest = 2**31 - 1
    assert requests.get(f"{farm.url}/v1/jobs/{largest}", headers=headers, timeout=30).status_code == 404
    for method, path in [("GET", f"/v1/jobs/{largest + 1}"), ("POST", f"/v1/jobs/{largest + 1}/cancel"),
                         ("GET", f"/v1/jobs?before_id={largest + 1}")]:  # fmt: skip
        r = requests.request(method, farm.url + path, headers=headers, timeout=30)
        assert r.status_code == 422, (method, path, r.status_code, r.text[:300])
    assert farm.healthy()
