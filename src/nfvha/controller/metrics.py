"""Prometheus metrics at /metrics: what operators alert on (faults and host failures and
their timings, events, connected agents, webhook deliveries, guests' protocol errors)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# detection of a hang sits near interval × (threshold + 1); a crash in milliseconds
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self, agents_connected: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.faults = Counter("nfvha_faults", "Faults recorded", ["reason"], registry=r)
        self.detection = Histogram("nfvha_fault_detection_seconds", "Fault to detection", buckets=BUCKETS,
                                   registry=r)
        self.notification = Histogram("nfvha_fault_notification_seconds",
                                      "Detection to delivery to every subscriber", buckets=BUCKETS, registry=r)
        self.recovery = Histogram("nfvha_fault_recovery_seconds", "Detection to heartbeating again",
                                  buckets=BUCKETS, registry=r)
        self.deliveries = Counter("nfvha_webhook_deliveries", "Webhook delivery attempts", ["result"], registry=r)
        self.protocol_errors = Gauge("nfvha_guest_protocol_errors", "Frames dropped per instance, by reason",
                                     ["instance", "reason"], registry=r)
        self.group_messages = Counter("nfvha_group_messages", "Server-group messages routed or dropped",
                                      ["result"], registry=r)
        self.events = Counter("nfvha_events", "Events published, by type (nfvha.host.down, ...)", ["type"],
                              registry=r)
        self.host_detection = Histogram("nfvha_host_detection_seconds", "A host's last heartbeat to declared down",
                                        buckets=BUCKETS, registry=r)
        self.host_recovery = Histogram("nfvha_host_recovery_seconds",
                                       "A host declared down to every instance running elsewhere", buckets=BUCKETS,
                                       registry=r)
        Gauge("nfvha_agents_connected", "Agents connected to this controller",
              registry=r).set_function(agents_connected)

    def instance_errors(self, instance_id: str, errors: dict[str, int]) -> None:
        for reason, count in errors.items():
            self.protocol_errors.labels(instance_id, reason).set(count)

    def forget_instance(self, instance_id: str) -> None:
        for labels in [s.labels for m in self.protocol_errors.collect() for s in m.samples]:
            if labels.get("instance") == instance_id:
                self.protocol_errors.remove(instance_id, labels["reason"])
