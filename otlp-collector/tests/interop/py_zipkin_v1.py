"""py_zipkin (a Zipkin tracer for Python, not built on OpenTelemetry)
reporting Zipkin v1 JSON to /api/v1/spans: a server span with a child
client span, binary annotations (tags), an annotation and a remote endpoint.
Prints the spans as the test should find them.

Usage: python py_zipkin_v1.py URL   (e.g. http://127.0.0.1:9411/api/v1/spans)
"""
import json
import sys
import urllib.request

from py_zipkin import Encoding, Kind
from py_zipkin.transport import BaseTransportHandler
from py_zipkin.zipkin import zipkin_span

url = sys.argv[1]
sent = []


class Http(BaseTransportHandler):
    def get_max_payload_bytes(self):
        return None

    def send(self, payload):
        if isinstance(payload, str):
            payload = payload.encode()
        req = urllib.request.Request(
            url, data=payload, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(req) as r:
            sent.append({"status": r.status, "body": json.loads(payload)})


with zipkin_span(
    service_name="py-zipkin-v1",
    span_name="handle",
    transport_handler=Http(),
    sample_rate=100.0,
    encoding=Encoding.V1_JSON,
    kind=None,
    binary_annotations={"http.path": "/orders"},
) as server:
    server.update_binary_annotations({"tenant": "acme"})
    with zipkin_span(
        service_name="py-zipkin-v1",
        span_name="call backend",
        kind=Kind.CLIENT,
    ) as client:
        client.add_sa_binary_annotation(port=9000, service_name="backend", host="10.1.2.3")
        client.add_annotation("retry")

print(json.dumps(sent))
