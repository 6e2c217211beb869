"""Python jaeger-client (the Jaeger project's OpenTracing client) reporting
to a Jaeger agent port over UDP (Thrift compact): two spans, every tag type,
a log, an error. Prints the Thrift Batch the client built from them (its own
conversion), for the test to compare with what the collector stored.

Usage: python jaeger_client_udp.py HOST PORT
"""
import json
import sys
import time

from jaeger_client import Config
from jaeger_client import thrift as jthrift

host, port = sys.argv[1], int(sys.argv[2])
config = Config(
    config={
        "sampler": {"type": "const", "param": 1},
        "local_agent": {"reporting_host": host, "reporting_port": port},
        "reporter_flush_interval": 0.05,
        "logging": False,
        "tags": {"deployment": "interop"},
    },
    service_name="py-jaeger-udp",
    validate=True,
)
tracer = config.initialize_tracer()
finished = []
send = tracer.reporter.report_span


def record(span):
    finished.append(span)
    send(span)


tracer.reporter.report_span = record

parent = tracer.start_span("parent", tags={"span.kind": "server", "http.method": "GET"})
child = tracer.start_span("child", child_of=parent, tags={"i": -5, "f": 2.5, "b": True, "s": "text"})
child.log_kv({"event": "retry", "attempt": 2, "why": "timeout"})
child.set_tag("error", True)
child.finish()
parent.finish()
time.sleep(1.0)
tracer.close()
time.sleep(0.3)


def dump(o):
    if isinstance(o, (list, tuple)):
        return [dump(x) for x in o]
    if isinstance(o, bytes):
        return o.hex()
    if hasattr(o, "__dict__"):
        return {k: dump(v) for k, v in vars(o).items() if v is not None}
    return o


batch = jthrift.make_jaeger_batch(finished, tracer.reporter._process)
print(json.dumps(dump(batch)))
