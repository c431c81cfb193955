"""An OTLP/HTTP receiver for tests, on 127.0.0.1: decodes the protobuf payloads with the
``opentelemetry-proto`` package and keeps every span it got, and every raw byte."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from openai_server import read_body


@dataclass
class Span:
    """A received span, in plain values."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    start: int
    end: int
    attributes: dict[str, Any]
    #: (name, attributes, time in ns)
    events: list[tuple[str, dict[str, Any], int]]
    status: int
    message: str
    resource: dict[str, Any] = field(default_factory=dict)


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def _attrs(items: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in items}


class OTLPReceiver:
    """The app. ``status``: what it answers (e.g. 503 to play a backend that is down)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.spans: list[Span] = []
        #: (metric name, data point attributes, value: a histogram's sum and count, or
        #: a counter's value)
        self.points: list[tuple[str, dict[str, Any], Any]] = []
        self.bodies: list[bytes] = []
        self.status = 200
        self.delay = 0.0
        self.requests = 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        self.requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if scope["path"] == "/v1/traces" and self.status == 200:
            self.bodies.append(body)
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource_spans in request.resource_spans:
                resource = _attrs(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for s in scope_spans.spans:
                        self.spans.append(Span(
                            name=s.name, trace_id=s.trace_id.hex(), span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(), kind=s.kind,
                            start=s.start_time_unix_nano, end=s.end_time_unix_nano,
                            attributes=_attrs(s.attributes),
                            events=[(e.name, _attrs(e.attributes), e.time_unix_nano)
                                    for e in s.events],
                            status=s.status.code, message=s.status.message, resource=resource,
                        ))  # fmt: skip
        if scope["path"] == "/v1/metrics" and self.status == 200:
            self.bodies.append(body)
            request = ExportMetricsServiceRequest()
            request.ParseFromString(body)
            for resource_metrics in request.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    for m in scope_metrics.metrics:
                        if m.HasField("histogram"):
                            for p in m.histogram.data_points:
                                self.points.append((m.name, _attrs(p.attributes),
                                                    (p.sum, p.count)))  # fmt: skip
                        elif m.HasField("sum"):
                            for p in m.sum.data_points:
                                self.points.append((m.name, _attrs(p.attributes), p.as_int))
        known = scope["path"] in ("/v1/traces", "/v1/metrics")
        status = self.status if known else 404
        headers = [(b"content-type", b"application/x-protobuf")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
