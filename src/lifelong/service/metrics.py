"""Prometheus metrics, in the text format at GET /metrics.

This process's own: requests by method, route and status; request latency by route; inputs predicted
and feedback examples accepted. From the store, at scrape time (so they agree across processes
sharing it): feedback stored and pending, updates by outcome, the current version and the version
this process serves.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATUSES = ("queued", "training", "evaluating", "promoted", "rejected", "failed")


class _StoreCollector(Collector):
    def __init__(self, service: Any):
        self.service = service

    def collect(self) -> Iterator[Metric]:
        counts = self.service.store.counts()
        stored = CounterMetricFamily("lifelong_feedback_stored", "feedback examples in the store")
        stored.add_metric([], counts["feedback"])
        yield stored
        pending = GaugeMetricFamily("lifelong_feedback_pending", "feedback examples no update has taken yet")
        pending.add_metric([], counts["pending"])
        yield pending
        updates = CounterMetricFamily("lifelong_updates", "updates by status (outcome)", labels=["status"])
        for status in STATUSES:
            updates.add_metric([status], counts["updates"].get(status, 0))
        yield updates
        current = GaugeMetricFamily("lifelong_current_version", "the version the store points to")
        current.add_metric([], counts["current_version"] or 0)
        yield current
        served = GaugeMetricFamily("lifelong_served_version", "the version this process answers with")
        served.add_metric([], self.service.current.version)
        yield served


class Metrics:
    def __init__(self, service: Any):
        self.registry = CollectorRegistry()
        self.requests = Counter("lifelong_http_requests", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("lifelong_http_request_seconds", "HTTP request latency", ["route"],
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                                 registry=self.registry)
        self.predictions = Counter("lifelong_predictions", "inputs predicted", registry=self.registry)
        self.feedback = Counter("lifelong_feedback_accepted", "feedback examples accepted by this process",
                                registry=self.registry)
        self.registry.register(_StoreCollector(service))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
