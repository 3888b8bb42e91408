"""Prometheus metrics, one registry per hub so several hubs can live in one test process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["flow"]
        self.consumed = Counter("crmhub_consumed", "Messages a flow took from Kafka",
                                labels, registry=self.registry)
        self.succeeded = Counter("crmhub_succeeded", "Events a flow finished", labels,
                                 registry=self.registry)
        self.duplicates = Counter("crmhub_duplicates", "Redeliveries skipped by the ledger",
                                  labels, registry=self.registry)
        self.stale = Counter("crmhub_stale", "Updates older than the last one synced, dropped",
                             labels, registry=self.registry)
        self.retried = Counter("crmhub_retried", "Transient failures retried", labels,
                               registry=self.registry)
        self.parked = Counter("crmhub_parked", "Messages parked for a missing dependency",
                              labels, registry=self.registry)
        self.replayed = Counter("crmhub_replayed", "Parked or dead messages sent again",
                                ["flow", "kind"], registry=self.registry)
        self.dead_lettered = Counter("crmhub_dead_lettered", "Messages dead-lettered",
                                     ["flow", "error"], registry=self.registry)
        self.sink_latency = Histogram(
            "crmhub_sink_latency_seconds", "Duration of one successful connector call",
            ["flow", "system"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.target_up = Gauge("crmhub_target_up", "1 while the target system answers",
                               ["system"], registry=self.registry)
        self.target_down_since = Gauge(
            "crmhub_target_down_since_seconds", "Unix time the target system started failing "
            "(0 while it is up)", ["system"], registry=self.registry)
        self.feed_polls = Counter("crmhub_feed_polls", "Polls a change feed finished",
                                  labels, registry=self.registry)
        self.ingress = Counter("crmhub_ingress_requests",
                               "Webhook deliveries received, by system and outcome",
                               ["system", "outcome"], registry=self.registry)
        self.broker_restarts = Counter("crmhub_broker_restarts",
                                       "Embedded broker restarts (each one is a fresh broker)",
                                       registry=self.registry)
