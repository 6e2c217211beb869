// Node's jaeger-client (the Jaeger project's OpenTracing client for Node.js)
// reporting to the collector: over UDP to the agent's Thrift binary port, or
// over HTTP to /api/traces. Two spans, every tag type, a log, an error and a
// follows-from reference. Prints the Thrift spans and process the client
// built (its own conversion) for the test to compare with what was stored.
//
// Usage: node jaeger_client_node.js udp HOST PORT | http URL
'use strict';
const { initTracer, opentracing } = require('jaeger-client');
const ThriftUtils = require('jaeger-client/dist/src/thrift').default;

const [mode, a, b] = process.argv.slice(2);
const reporter =
  mode === 'udp'
    ? { agentHost: a, agentPort: Number(b), flushIntervalMs: 50 }
    : { collectorEndpoint: a, flushIntervalMs: 50 };
const errors = [];
const tracer = initTracer(
  {
    serviceName: 'node-jaeger-' + mode,
    sampler: { type: 'const', param: 1 },
    reporter,
  },
  {
    tags: { deployment: 'interop', 'node.int': 7 },
    logger: { info() {}, error(m) { errors.push(String(m)); } },
  },
);
const finished = [];
const report = tracer._reporter.report.bind(tracer._reporter);
tracer._reporter.report = (span) => {
  finished.push(span);
  report(span);
};

const parent = tracer.startSpan('parent', { tags: { 'span.kind': 'server', 'http.method': 'GET' } });
const other = tracer.startSpan('other');
const child = tracer.startSpan('child', {
  childOf: parent.context(),
  references: [opentracing.followsFrom(other.context())],
  tags: { i: -5, f: 2.5, b: true, s: 'text' },
});
child.log({ event: 'retry', attempt: 2 });
child.setTag('error', true);
child.finish();
other.finish();
parent.finish();

const hex = (v) => (Buffer.isBuffer(v) ? v.toString('hex') : v);
function dump(o) {
  if (Buffer.isBuffer(o)) return o.toString('hex');
  if (Array.isArray(o)) return o.map(dump);
  if (o && typeof o === 'object') {
    const out = {};
    for (const [k, v] of Object.entries(o)) if (v !== null && v !== undefined) out[k] = dump(v);
    return out;
  }
  return o;
}

setTimeout(() => {
  tracer.close(() => {
    const spans = finished.map((s) => dump(ThriftUtils.spanToThrift(s)));
    const process = tracer._process || tracer._reporter._process;
    console.log(JSON.stringify({ errors, process: dump(process), spans }));
  });
}, 500);
void hex;
