/**
 * A lazily served remote image through a faulty network: while blob requests fail, NBD
 * reads fail with EIO and the server stays up; once the network heals, the same server
 * serves the exact image, and a corrupting hop never poisons the cache: corrupt bodies are
 * fetched again, and what the copy through it delivers is compared with the image.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { openImage } from '../../src/image/open.ts';
import { NbdServer } from '../../src/nbd/index.ts';
import { pushImage } from '../../src/image/push.ts';
import { DIGESTS, FIXTURES, sha256 } from '../helpers/recipes.ts';
import { startRegistry } from '../remote/helpers/registry.ts';
import { startFaultProxy } from '../remote/helpers/fault-proxy.ts';
import { tempDir } from '../helpers/temp.ts';

const run = promisify(execFile);
const LAYERS = ['layer1.lsmt', 'layer2.lsmt', 'layer3.lsmt'].map((n) => path.join(FIXTURES, 'lsmt', n));
const isBlobGet = (r: { method: string; url: string }) => r.method === 'GET' && /\/blobs\/sha256:/.test(r.url);

test('NBD over a failing registry: EIO while it fails, exact data once it heals, the server stays up', async (t) => {
  const dir = await tempDir(t, 'obd-faults-');
  const registry = await startRegistry();
  const proxy = await startFaultProxy({ host: '127.0.0.1', port: Number(registry.host.split(':')[1]) });
  t.after(async () => {
    await proxy.stop();
    await registry.stop();
  });
  // Without verity trees: this is the zfile CRC path (test/verity covers verified reads).
  await pushImage(LAYERS, `${registry.host}/faults/img:v1`, { plainHttp: true, verity: false });
  const ref = `127.0.0.1:${proxy.port}/faults/img:v1`;
  // Layer headers and indexes load at open; the data ranges are fetched on demand, one range
  // per request: the proxy corrupts one byte per body, and a multi-range body carries several
  // units, so all but one would arrive intact and the phases below would not fail as counted.
  const dev = await openImage([ref], { plainHttp: true, retries: 1, idleTimeoutMs: 1000, cacheDir: path.join(dir, 'cache'), refill: 64 * 1024, multiRange: false });
  const server = new NbdServer({ exports: { '': dev } });
  const socket = path.join(dir, 'nbd.sock');
  await server.listen({ socket });
  const uri = `nbd+unix:///?socket=${socket}`;
  try {
    proxy.rule = (r) => (isBlobGet(r) ? { kind: 'status', status: 503 } : undefined);
    await assert.rejects(run('nbdcopy', [uri, path.join(dir, 'a.raw')]), /Input\/output error|EIO|error/i);
    proxy.rule = (r) => (isBlobGet(r) ? { kind: 'reset' } : undefined);
    await assert.rejects(run('qemu-io', ['-f', 'raw', '-c', 'read 4M 64k', uri]));
    // A hop that corrupts bodies: whatever is served must be right or an error.
    const copy = (name: string) => run('nbdcopy', [uri, path.join(dir, name)]).then(() => readFile(path.join(dir, name)), (e: Error) => e);
    // Every body corrupted: the block CRCs catch it and refetches cannot cure it, so the copy
    // fails with EIO (it could only succeed if every flip missed the data, and then be exact).
    proxy.rule = (r) => (isBlobGet(r) ? { kind: 'corrupt' } : undefined);
    const broken = await copy('b.raw');
    if (broken instanceof Error) assert.match(broken.message, /Input\/output error/);
    else assert.equal(sha256(broken), DIGESTS.layer123);
    // Two corrupted bodies fit in the reader's refetches (3 per read): the copy completes, exact.
    let corrupted = 0;
    proxy.rule = (r) => (isBlobGet(r) && r.n % 3 === 0 && corrupted < 2 ? (corrupted++, { kind: 'corrupt' }) : undefined);
    const healed = await copy('c.raw');
    assert.equal(corrupted, 2, 'the proxy corrupted two bodies');
    assert.ok(!(healed instanceof Error), `copy through two corrupted bodies failed: ${healed}`);
    assert.equal(sha256(healed), DIGESTS.layer123);
    proxy.rule = () => undefined;
    const { stdout } = await run('bash', ['-c', `nbdcopy '${uri}' - | sha256sum`]);
    assert.equal(stdout.split(' ')[0], DIGESTS.layer123);
    assert.equal(server.connectionCount, 0);
  } finally {
    await server.close();
    await dev.close();
  }
});
