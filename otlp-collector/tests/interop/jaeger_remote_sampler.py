"""Python jaeger-client with a `remote` sampler polling the collector's
sampling API (the agent path /sampling on the given port); samples N root
spans once the served strategy is in force and prints what it did as JSON."""
import json
import sys
import time

from jaeger_client import Config
from jaeger_client.sampler import ProbabilisticSampler

port, service, n, want = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
cfg = Config(
    config={
        "sampling_refresh_interval": 1,
        "local_agent": {
            "reporting_host": "127.0.0.1",
            "reporting_port": 9,
            "sampling_port": port,
        },
        "logging": False,
    },
    service_name=service,
    validate=True,
)
tracer = cfg.new_tracer()
remote = tracer.sampler
deadline = time.time() + 30
# No `sampler` section: the client's RemoteControlledSampler, which starts
# probabilistic at 0.001; wait for the served rate.
while time.time() < deadline:
    s = remote.sampler
    if isinstance(s, ProbabilisticSampler) and s.rate == want:
        break
    time.sleep(0.05)
s = remote.sampler
kept = 0
for _ in range(n):
    span = tracer.start_span("op")
    kept += 1 if span.is_sampled() else 0
print(json.dumps({"sampler": type(s).__name__, "rate": getattr(s, "rate", None), "kept": kept}))
sys.stdout.flush()
