/**
 * Exports attached and detached while the server serves (src/image/served.ts): an attached
 * image shares the layers it has in common with the other exports; detaching a writable
 * export flushes it and disconnects its clients; the other exports go on.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { BusyError, NotFoundError } from '../../src/io/errors.ts';
import { LayerPool } from '../../src/image/layer-pool.ts';
import { openImage } from '../../src/image/open.ts';
import { ServedExports } from '../../src/image/served.ts';
import { NbdServer } from '../../src/nbd/index.ts';
import { RawClient } from '../nbd/helpers/client.ts';
import { deviceDigest } from '../helpers/layers.ts';
import { DIGESTS, FIXTURES } from '../helpers/recipes.ts';
import { tempDir } from '../helpers/temp.ts';

const run = promisify(execFile);
const [L1, L2, L3] = ['layer1.lsmt', 'layer2.lsmt', 'layer3.lsmt'].map((n) => path.join(FIXTURES, 'lsmt', n)) as [string, string, string];

async function nbdSha(uri: string): Promise<string> {
  const { stdout } = await run('bash', ['-o', 'pipefail', '-c', `nbdcopy '${uri}' - | sha256sum`]);
  return stdout.split(' ')[0]!;
}

test('attach and detach while serving: shared layers, a flushed writable export, clients disconnected', async (t) => {
  const dir = await tempDir(t, 'obd-served-');
  const pool = new LayerPool();
  const a = await openImage([L1, L2], { pool });
  const server = new NbdServer({ exports: { a } });
  const socket = path.join(dir, 'nbd.sock');
  await server.listen({ socket });
  const served = new ServedExports(server, { pool });
  served.adopt('a', a);
  const uri = (name: string) => `nbd+unix:///${name}?socket=${socket}`;
  const upper = { data: path.join(dir, 'rw.data'), index: path.join(dir, 'rw.index') };
  try {
    await served.attach('b', [L1, L2, L3]);
    assert.deepEqual(
      pool.held().filter((h) => h.key.startsWith('file:')).map((h) => h.refs).sort(),
      [1, 2, 2],
      'b opened only layer3; layers 1 and 2 are a\'s',
    );
    assert.equal(await nbdSha(uri('b')), DIGESTS.layer123);
    await assert.rejects(served.attach('b', [L1]), BusyError);
    await assert.rejects(served.attach('w', [L1, L2], { writable: true }), /writable needs an upper/);

    await served.attach('w', [L1, L2], { writable: true, upper });
    await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5c 1M 64k', uri('w')]);
    const client = await RawClient.connect({ socket });
    await client.handshake({ name: 'w' });
    const w = await client.write(2 << 20, Buffer.alloc(4096, 0x7e));
    assert.equal(w.error, 0);
    await served.detach('w');
    assert.equal(await client.closedByServer(), true, 'the detached export\'s client was disconnected');
    await assert.rejects(nbdSha(uri('w')), 'a detached export is no longer offered');
    await assert.rejects(served.detach('w'), NotFoundError);

    // The writes are in the upper, whoever opens it next.
    const again = await openImage([L1, L2], { upper, readOnly: true });
    try {
      const buf = new Uint8Array(65536);
      await again.read(buf, 1 << 20);
      assert.ok(buf.every((b) => b === 0x5c), 'qemu-io\'s write is in the upper');
      await again.read(buf.subarray(0, 4096), 2 << 20);
      assert.ok(buf.subarray(0, 4096).every((b) => b === 0x7e), 'the raw client\'s write is in the upper');
    } finally {
      await again.close();
    }
    await served.detach('b');
    assert.deepEqual(pool.held().filter((h) => h.key.startsWith('file:')).map((h) => h.refs), [1, 1], 'only a\'s layers are left');
    assert.equal(await deviceDigest(a), DIGESTS.layer12);
    assert.equal(await nbdSha(uri('a')), DIGESTS.layer12);
  } finally {
    await server.close();
    await served.close();
    await pool.close();
  }
  assert.deepEqual(pool.held(), []);
});
