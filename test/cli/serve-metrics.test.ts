/**
 * `obd serve --metrics`: Prometheus text at /metrics counts what the exports, the shared
 * layers and the registry did, in a format every line of which parses.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { DIGESTS, FIXTURES } from '../helpers/recipes.ts';
import { obd, serveJson } from '../helpers/cli.ts';
import { tempDir } from '../helpers/temp.ts';
import { startRegistry } from '../remote/helpers/registry.ts';

const run = promisify(execFile);
const LAYERS = ['layer1.lsmt', 'layer2.lsmt', 'layer3.lsmt'].map((n) => path.join(FIXTURES, 'lsmt', n));
const LINE = /^(# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+|[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? (-?[0-9.e+-]+|\+Inf|NaN))$/;

/** The value of the sample `name{labels}` (labels exactly as printed), or undefined. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(series + ' '));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

test('serve --metrics: per-export, layer, cache and registry figures at /metrics', async (t) => {
  const dir = await tempDir(t, 'obd-serve-metrics-');
  const registry = await startRegistry();
  t.after(() => registry.stop());
  const ref = `${registry.host}/metrics/img:v1`;
  const pushed = await obd(['push', ...LAYERS, ref]);
  assert.equal(pushed.code, 0, pushed.stderr);
  const s = await serveJson([ref, '--export', 'vm', '--export', `vm2=${ref}`, '--metrics', '0', '--socket', path.join(dir, 's.sock')]);
  try {
    const at = (s.ready as { metrics?: { host: string; port: number } }).metrics;
    assert.ok(at && at.port > 0, `the ready line names the metrics address: ${JSON.stringify(s.ready)}`);
    const uri = s.ready.exports.find((e) => e.uri.includes('/vm?'))!.uri;
    const { stdout } = await run('bash', ['-o', 'pipefail', '-c', `nbdcopy '${uri}' - | sha256sum`]);
    assert.equal(stdout.split(' ')[0], DIGESTS.layer123);

    const res = await fetch(`http://${at.host}:${at.port}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    for (const line of text.trimEnd().split('\n')) assert.match(line, LINE);
    const reads = sample(text, 'obd_export_requests_total{export="vm",op="read"}')!;
    assert.ok(reads > 0, 'reads of vm counted');
    assert.equal(sample(text, 'obd_export_requests_total{export="vm2",op="read"}'), 0, 'vm2 was not read');
    assert.equal(sample(text, 'obd_export_request_duration_seconds_count{export="vm",op="read"}'), reads);
    assert.equal(sample(text, 'obd_export_request_duration_seconds_bucket{export="vm",op="read",le="+Inf"}'), reads);
    assert.ok(sample(text, 'obd_export_bytes_total{export="vm",op="read"}')! > 0);
    assert.equal(sample(text, 'obd_export_errors_total{export="vm",op="read"}'), 0);
    assert.equal(sample(text, 'obd_exports'), 2);
    assert.equal(sample(text, 'obd_layers_open'), 3, 'three layers, opened once for both exports');
    assert.equal(sample(text, 'obd_layer_users'), 6);
    assert.ok(sample(text, 'obd_registry_requests_total')! > 0);
    assert.ok(sample(text, 'obd_registry_bytes_total')! > 0);
    assert.equal(sample(text, 'obd_registry_errors_total'), 0);
    assert.ok(sample(text, 'obd_remote_cache_misses_total')! > 0);
    assert.equal(sample(text, 'obd_verity_failures_total'), 0);
    assert.ok(sample(text, 'process_resident_memory_bytes')! > 10 << 20);
    assert.equal((await fetch(`http://${at.host}:${at.port}/other`)).status, 404);
  } finally {
    assert.equal(await s.stop(), 0);
  }
});
