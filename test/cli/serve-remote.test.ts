/**
 * The whole remote chain through the CLI: push layers to a real registry (and to an OCI
 * layout), serve the image lazily over NBD, read it with nbdcopy.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { DIGESTS, FIXTURES } from '../helpers/recipes.ts';
import { obd, serveJson } from '../helpers/cli.ts';
import { startRegistry } from '../remote/helpers/registry.ts';
import { tempDir, withTempDir } from '../helpers/temp.ts';

const run = promisify(execFile);
const LAYERS = ['layer1.lsmt', 'layer2.lsmt', 'layer3.lsmt'].map((n) => path.join(FIXTURES, 'lsmt', n));

async function sha256Of(uri: string): Promise<string> {
  const { stdout } = await run('bash', ['-c', `nbdcopy '${uri}' - | sha256sum`]);
  return stdout.split(' ')[0]!;
}

test('push to a registry, serve it lazily through the cache; with the registry gone, serve fails cleanly', async (t) => {
  const dir = await tempDir(t, 'obd-serve-remote-');
  const registry = await startRegistry();
  try {
    const ref = `${registry.host}/disks/fixture:v1`;
    const pushed = await obd(['push', '--json', ...LAYERS, ref]);
    assert.equal(pushed.code, 0, pushed.stderr);
    const cache = path.join(dir, 'cache');

    const cold = await serveJson([ref, '--cache-dir', cache, '--socket', path.join(dir, 'a.sock')]);
    try {
      assert.equal(await sha256Of(cold.ready.exports[0]!.uri), DIGESTS.layer123);
    } finally {
      assert.equal(await cold.stop(), 0);
    }

    await registry.stop();
    // With the registry gone, serving must fail cleanly (typed error, exit 1), not hang.
    const down = await obd(['serve', ref, '--cache-dir', cache, '--socket', path.join(dir, 'b.sock'), '--retries', '1', '--timeout', '2000']);
    assert.equal(down.code, 1);
    assert.match(down.stderr, /obd: .*127\.0\.0\.1/);
  } finally {
    await registry.stop();
  }
});

test('an OCI layout is the default repo: push, append a snapshot, serve it with a writable upper', async () => {
  await withTempDir(async (dir) => {
    const ref = `oci:${path.join(dir, 'images')}:v1`;
    let r = await obd(['push', ...LAYERS.slice(0, 2), ref]);
    assert.equal(r.code, 0, r.stderr);
    r = await obd(['push', '--append', '--json', LAYERS[2]!, ref]);
    assert.equal(r.code, 0, r.stderr);
    const appended = JSON.parse(r.stdout);
    assert.equal(appended.layers.length, 3);
    assert.equal(appended.layers.filter((l: { result: string }) => l.result === 'exists').length, 2, 'only the new layer is uploaded');

    const s = await serveJson([ref, '--writable', '--upper', path.join(dir, 'rw.data'), path.join(dir, 'rw.index'), '--socket', path.join(dir, 's.sock')]);
    try {
      assert.equal(await sha256Of(s.ready.exports[0]!.uri), DIGESTS.layer123);
      await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x61 1M 64k', s.ready.exports[0]!.uri]);
      await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0x61 1M 64k', s.ready.exports[0]!.uri]);
      const { stdout } = await run('nbdinfo', ['--map=qemu:allocation-depth', '--json', s.ready.exports[0]!.uri]);
      const depth1 = JSON.parse(stdout).filter((e: { type: number }) => e.type === 1);
      assert.ok(depth1.some((e: { offset: number }) => e.offset <= 1048576), 'the write is backed by the top (upper) layer');
    } finally {
      assert.equal(await s.stop(), 0);
    }
  }, 'obd-serve-oci-');
});
