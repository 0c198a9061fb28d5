"""Clients cannot mint metric series: invented methods and unknown paths fold into one label
each (issue 14, item 5). Before, 3,000 requests with invented methods grew /metrics 300-fold."""

from __future__ import annotations

import uuid

from app.metrics import REQUESTS
from app.requestlog import KNOWN_METHODS, OTHER_METHOD, UNMATCHED_ENDPOINT


def _series() -> set[tuple[str, str]]:
    return {
        (sample.labels["method"], sample.labels["endpoint"])
        for metric in REQUESTS.collect()
        for sample in metric.samples
        if sample.name == "http_requests_total"
    }


def test_invented_methods_and_paths_add_no_metric_series(app, client):
    for _ in range(200):
        client.open(f"/{uuid.uuid4().hex}", method=f"X{uuid.uuid4().hex[:8].upper()}")
        client.open(f"/resource/{uuid.uuid4().hex}/{uuid.uuid4().hex}", method="GET")
    routes = {rule.rule for rule in app.url_map.iter_rules()} | {UNMATCHED_ENDPOINT}
    methods = {method for method, _ in _series()}
    endpoints = {endpoint for _, endpoint in _series()}
    assert methods <= KNOWN_METHODS | {OTHER_METHOD}
    assert OTHER_METHOD in methods
    assert endpoints <= routes
    assert len(_series()) <= len(routes) * (len(KNOWN_METHODS) + 1)
