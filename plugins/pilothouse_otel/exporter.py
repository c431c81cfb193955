"""The exporter: each run's trace, built from its log when the run ends, sent over OTLP/HTTP.

Built from the log, not from live objects, so a run resumed by another process after a
crash is one trace with the spans of both processes, each step once. Sending happens
in the SDK's batch thread (bounded queue: when the backend is down, spans are dropped,
never the run's time), and a failure to send is logged once, not per batch.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import anyio.to_thread
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from pilothouse import EventObserver

from .endpoints import endpoint as signal_endpoint
from .endpoints import shown
from .metrics import RunMetrics
from .spans import run_spans

log = logging.getLogger("pilothouse.otel")

#: the run events after which a run's trace is sent
ENDINGS = frozenset({"run_finished", "run_failed", "run_cancelled"})
#: the conventions' switch for prompts, replies and tool arguments in spans
CAPTURE_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
#: seconds one send may take (the SDK retries within it); closing waits about this long
SEND_TIMEOUT_S = 5.0


def content_captured() -> bool:
    """Whether the conventions' content switch is on."""
    return os.environ.get(CAPTURE_CONTENT, "").strip().lower() in ("1", "true", "yes", "on")


class _ReportOnce(SpanExporter):
    """Sends through the OTLP exporter; the first failure is logged, later ones counted."""

    def __init__(self, inner: SpanExporter, where: str) -> None:
        self.inner = inner
        self.where = where
        self.failures = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception as exc:  # the SDK's exporter raises on some transport errors
            result = SpanExportResult.FAILURE
            detail = f"{type(exc).__name__}: {exc}"
        else:
            detail = "the receiver refused or could not be reached"
        if result is SpanExportResult.FAILURE:
            self.failures += 1
            if self.failures == 1:
                log.warning("otel: cannot send traces to %s (%s); runs go on, their spans are"
                            " dropped while it lasts", self.where, detail)  # fmt: skip
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _Quiet(logging.Filter):
    """Keeps the SDK's per-batch export errors out of the log (reported once above)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return False


#: the SDK's loggers that report each failed batch
_SDK_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http",
    "opentelemetry.sdk.metrics._internal.export",
    "opentelemetry.sdk.trace.export",
)
# once per process, not once per exporter (every runtime makes one)
for _name in _SDK_LOGGERS:
    logging.getLogger(_name).addFilter(_Quiet())


class OtelExporter(EventObserver):
    """Sends every run's trace to an OTLP/HTTP endpoint when the run ends."""

    name = "otlp"
    types = ENDINGS
    propagates = True

    def __init__(
        self,
        endpoint: str,
        *,
        content: bool = False,
        redact: Any = None,
        exporter: SpanExporter | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.content = content
        self.redact = redact or (lambda text: text)
        # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, else the service is pilothouse
        self.resource = Resource.create()
        if str(self.resource.attributes.get("service.name", "")).startswith("unknown_service"):
            self.resource = self.resource.merge(Resource({"service.name": "pilothouse"}))
        inner = exporter or OTLPSpanExporter(endpoint=endpoint, timeout=SEND_TIMEOUT_S)
        self.sender = _ReportOnce(inner, shown(endpoint))
        self.processor = BatchSpanProcessor(self.sender, max_queue_size=8192,
                                            schedule_delay_millis=500)  # fmt: skip
        metrics_to = signal_endpoint("metrics") if exporter is None else None
        self.metrics = RunMetrics(metrics_to, self.resource) if metrics_to else None
        self.store: Any = None
        #: runs that ended and whose trace is not handed over yet (sent at close if the
        #: runtime closes first)
        self.pending: set[str] = set()
        self._lock = threading.Lock()

    def open(self, store: Any) -> None:
        """Keep the run store: a run's whole log is read from it when the run ends; and
        count its outages."""
        self.store = store
        health = getattr(store, "health", None)
        if health is not None and self.metrics is not None:
            health.subscribe(self.metrics.store_health)

    def describe(self) -> str:
        """Where traces go, and whether prompts and replies go with them."""
        what = "with content (redacted)" if self.content else "without content"
        metrics = f", metrics to {shown(self.metrics.endpoint)}" if self.metrics else ""
        return f"traces to {shown(self.endpoint)}, {what}{metrics}"

    def __call__(self, event: Any) -> Any:
        if self.store is None:
            return None
        self.pending.add(event.run_id)
        return self.export_run(event.run_id)

    async def export_run(self, run_id: str) -> int:
        """Send ``run_id``'s trace, read from the log and built in a worker thread (off
        the event loop); return how many spans were handed to the batch thread."""
        with anyio.CancelScope(shield=True):  # a runtime closing now still sends it
            return await anyio.to_thread.run_sync(self._send_ended, run_id)

    def _send_ended(self, run_id: str) -> int:
        with self._lock:
            if run_id not in self.pending:  # sent by close meanwhile
                return 0
            self.pending.discard(run_id)
        return self._ended(self.store.events(run_id))

    def _ended(self, events: Sequence[Any]) -> int:
        """A run that ended in this runtime: its metrics, then its trace."""
        if self.metrics is not None:
            self.metrics.record(events)
        return self.export(events)

    def export(self, events: Sequence[Any]) -> int:
        """Hand a run's spans to the batch thread (it drops them when its queue is full);
        also what ``pilothouse export otlp`` calls for runs already in the log."""
        spans = run_spans(events, resource=self.resource, content=self.content,
                          redact=self.redact)  # fmt: skip
        for span in spans:
            self.processor.on_end(span)
        return len(spans)

    def flush(self, timeout_s: float = SEND_TIMEOUT_S) -> bool:
        """Wait until what was handed over is sent (or ``timeout_s`` passes)."""
        return self.processor.force_flush(int(timeout_s * 1000))

    async def aclose(self) -> None:
        """Send what is pending, within a bound, off the event loop."""

        def close() -> None:
            while True:
                with self._lock:
                    if not self.pending:
                        break
                    run_id = self.pending.pop()
                self._ended(self.store.events(run_id))
            self.processor.force_flush(int(SEND_TIMEOUT_S * 1000))
            self.processor.shutdown()
            if self.metrics is not None:
                self.metrics.close()

        await anyio.to_thread.run_sync(close)
