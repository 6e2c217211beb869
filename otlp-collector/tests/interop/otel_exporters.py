"""The OpenTelemetry Python SDK's Jaeger and Zipkin exporters sending to the
collector: creates spans with every attribute type, an event, a link, status,
resource and scope; records them in memory too, and prints them with the
exporter's results for the test to compare with what the collector stored.

Usage: python otel_exporters.py MODE ENDPOINT
  MODE: jaeger-thrift-http (ENDPOINT http://host:port/api/traces),
        jaeger-grpc (host:port), zipkin-json or zipkin-proto (http://host:port/api/v2/spans)
"""
import json
import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

mode, endpoint = sys.argv[1], sys.argv[2]
if mode == "jaeger-thrift-http":
    from opentelemetry.exporter.jaeger.thrift import JaegerExporter

    exp = JaegerExporter(collector_endpoint=endpoint)
elif mode == "jaeger-grpc":
    from opentelemetry.exporter.jaeger.proto.grpc import JaegerExporter

    exp = JaegerExporter(collector_endpoint=endpoint, insecure=True)
elif mode == "zipkin-json":
    from opentelemetry.exporter.zipkin.json import ZipkinExporter

    exp = ZipkinExporter(endpoint=endpoint)
elif mode == "zipkin-proto":
    from opentelemetry.exporter.zipkin.proto.http import ZipkinExporter

    exp = ZipkinExporter(endpoint=endpoint)
else:
    raise SystemExit(f"unknown mode {mode}")

results = []


class Recording:
    def export(self, spans):
        r = exp.export(spans)
        results.append(r == SpanExportResult.SUCCESS)
        return r

    def shutdown(self):
        exp.shutdown()

    def force_flush(self, timeout_millis=30000):
        return True


mem = InMemorySpanExporter()
provider = TracerProvider(
    resource=Resource.create(
        {"service.name": "py-" + mode, "deployment.environment": "test", "py.int": 3}
    )
)
provider.add_span_processor(SimpleSpanProcessor(mem))
provider.add_span_processor(SimpleSpanProcessor(Recording()))
tracer = provider.get_tracer("py-scope", "1.2.3")
with tracer.start_as_current_span("parent", kind=SpanKind.SERVER) as parent:
    attrs = {"s": "text", "b": True, "i": -5, "f": 2.5}
    with tracer.start_as_current_span(
        "child",
        kind=SpanKind.CLIENT,
        attributes=attrs,
        links=[Link(parent.get_span_context(), {"l": "x"})],
    ) as child:
        child.add_event("evt", {"e": 1, "msg": "hi"})
        child.set_status(Status(StatusCode.ERROR, "bad thing"))
provider.shutdown()

out = []
for s in mem.get_finished_spans():
    out.append(
        {
            "trace_id": format(s.context.trace_id, "032x"),
            "span_id": format(s.context.span_id, "016x"),
            "parent": format(s.parent.span_id, "016x") if s.parent else None,
            "name": s.name,
            "kind": s.kind.name.lower(),
            "start": s.start_time,
            "end": s.end_time,
            "attributes": dict(s.attributes),
            "events": [
                {"name": e.name, "time": e.timestamp, "attributes": dict(e.attributes)}
                for e in s.events
            ],
            "links": [
                {
                    "trace_id": format(l.context.trace_id, "032x"),
                    "span_id": format(l.context.span_id, "016x"),
                }
                for l in s.links
            ],
            "status_code": s.status.status_code.name.lower(),
            "status_message": s.status.description or "",
            "resource": dict(s.resource.attributes),
            "scope": [s.instrumentation_scope.name, s.instrumentation_scope.version],
        }
    )
print(json.dumps({"ok": results, "spans": out}))
