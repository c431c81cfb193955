"""A run's figures as OpenTelemetry metrics: the GenAI client metrics (token usage and
operation duration histograms) and runs by status and escalations, recorded when the
run ends, and the run store's outages as they begin and end, sent over the same OTLP
endpoint."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExportResult, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

log = logging.getLogger("pilothouse.otel")

#: the conventions' bucket boundaries (token counts, seconds)
TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304]
DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92]  # fmt: skip
_STATUS = {"run_finished": "succeeded", "run_failed": "failed", "run_cancelled": "cancelled"}


class _Sender(OTLPMetricExporter):
    """The OTLP metric exporter, its first failure logged and the rest counted."""

    failures = 0

    def export(self, metrics_data: Any, timeout_millis: float | None = 10000, **kwargs: Any):
        try:
            result = super().export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception:  # the SDK raises on some transport errors
            result = MetricExportResult.FAILURE
        if result is MetricExportResult.FAILURE:
            self.failures += 1
            if self.failures == 1:
                log.warning("otel: cannot send metrics to %s; runs go on", self._endpoint)
        return result


class RunMetrics:
    """Records each ended run's figures; a reader thread sends them every ``interval_s``."""

    def __init__(self, endpoint: str, resource: Resource, *, interval_s: float = 10.0) -> None:
        #: where metrics go
        self.endpoint = endpoint
        self.sender = _Sender(endpoint=endpoint, timeout=5.0)
        self.reader = PeriodicExportingMetricReader(
            self.sender, export_interval_millis=interval_s * 1000, export_timeout_millis=5000
        )
        self.provider = MeterProvider([self.reader], resource=resource, shutdown_on_exit=False)
        meter = self.provider.get_meter("pilothouse")
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}",
            description="Tokens used by each model call, input and output apart",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )  # fmt: skip
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s",
            description="How long each model call took",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )  # fmt: skip
        self.runs = meter.create_counter("pilothouse.runs", unit="{run}",
                                         description="Runs that ended, by status")  # fmt: skip
        self.escalations = meter.create_counter(
            "pilothouse.escalations", unit="{escalation}",
            description="Steps that paused for a person, by kind",
        )  # fmt: skip

        self.outages = meter.create_counter(
            "pilothouse.store.outages", unit="{outage}",
            description="Times the run store could not be reached (server down or silent,"
            " file locked, disk full)",
        )  # fmt: skip
        self.outage_duration = meter.create_histogram(
            "pilothouse.store.outage.duration", unit="s",
            description="How long the run store could not be reached, each time",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )  # fmt: skip

    def store_health(self, down: bool, seconds: float | None) -> None:
        """Count an outage as it begins and record its length as it ends (a callback of
        the run store's health)."""
        if down:
            self.outages.add(1)
        elif seconds is not None:
            self.outage_duration.record(seconds)

    def record(self, events: Sequence[Any]) -> None:
        """Add one ended run's model calls, escalations and status."""
        crew = next((e.crew for e in events if e.type in ("run_started", "run_queued")), "")
        for e in events:
            if e.type == "model_call":
                provider, _, model = e.model.partition(":")
                base = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider,
                        "gen_ai.request.model": model or provider}  # fmt: skip
                if e.error:
                    base = {**base, "error.type": e.error.split(":", 1)[0]}
                else:
                    self.tokens.record(e.usage.input_tokens, {**base, "gen_ai.token.type": "input"})
                    self.tokens.record(e.usage.output_tokens,
                                       {**base, "gen_ai.token.type": "output"})  # fmt: skip
                self.duration.record(e.latency_ms / 1000, base)
            elif e.type == "escalation_raised":
                self.escalations.add(1, {"pilothouse.crew": crew, "pilothouse.kind": e.kind})
            elif e.type in _STATUS:
                self.runs.add(1, {"pilothouse.crew": crew, "pilothouse.status": _STATUS[e.type]})

    def close(self) -> None:
        """Send what was recorded (within the reader's timeout) and stop."""
        self.provider.shutdown()
