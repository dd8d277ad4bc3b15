"""The service's own metrics: a registry of its counters, and the queue depth read on scrape."""

from __future__ import annotations

import functools
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from workbooks.service.queue import RunQueue

REJECT_REASONS = ("unauthorized", "too_large", "bad_alert", "unknown_alertname", "unavailable")


class Metrics:
    """The service's own registry: nothing else in the process leaks into /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        counter = functools.partial(Counter, registry=self.registry)
        histogram = functools.partial(Histogram, registry=self.registry)
        self.received = counter("workbooks_deliveries_received", "Deliveries posted to /alerts.")
        self.rejected = counter("workbooks_deliveries_rejected", "Refused, by reason.", ["reason"])
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        self.deduplicated = counter(
            "workbooks_runs_deduplicated", "Runs not queued: those alerts ran within the window."
        )
        self.queued = counter("workbooks_runs_queued", "Runs queued.")
        self.requeued = counter(
            "workbooks_runs_requeued", "Runs queued again: worker died, or queue lost them."
        )
        self.resolved = counter("workbooks_incidents_resolved", "Resolution notices received.")
        self.running = Gauge("workbooks_runs_running", "Runs now.", registry=self.registry)
        self.succeeded = counter("workbooks_runs_succeeded", "Runs that succeeded.", ["runbook"])
        self.failed = counter("workbooks_runs_failed", "Runs that failed.", ["runbook"])
        self.duration = histogram(
            "workbooks_run_duration_seconds",
            "Time a run took, from claim to archive.",
            ["runbook"],
            buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200),
        )
        self.queue_wait = histogram(
            "workbooks_run_queue_wait_seconds",
            "Time from a run's acceptance to a worker taking it.",
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
        )
        self.notifications_sent = counter("workbooks_notifications_sent", "Summaries delivered.")
        self.notifications_failed = counter(
            "workbooks_notifications_failed", "Summaries not delivered (per target)."
        )


class QueueDepth(Collector):
    """``workbooks_queue_pending``, read from the queue when scraped."""

    def __init__(self, queue: RunQueue) -> None:
        self.queue = queue

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("workbooks_queue_pending", "Runs waiting in the queue.")
        try:
            family.add_metric([], self.queue.pending_count())
        except Exception:  # a queue that is down shows on /healthz; /metrics stays up
            return
        yield family
