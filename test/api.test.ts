/** The README's library example, through the package's public entry point. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { openImage, LayerPool, NbdServer, ObdError, zfile, remote, WritableLayer } from 'overlaybd-ts';
import { FIXTURES, TEXT } from './helpers/recipes.ts';
import { tempDir } from './helpers/temp.ts';

test('public API: open an image, read it, serve it over NBD', async (t) => {
  const dir = await tempDir(t, 'obd-api-');
  const disk = await openImage(['layer1.lsmt', 'layer2.lsmt'].map((n) => path.join(FIXTURES, 'lsmt', n)));
  const server = new NbdServer({ exports: { '': disk } });
  try {
    const buf = new Uint8Array(4096);
    await disk.read(buf, 32768); // layer1's TEXT(0, 65536) from byte 32768 (layer2 trims only [0, 32768))
    assert.ok(Buffer.from(buf).equals(TEXT(0, 65536).subarray(32768, 32768 + 4096)));
    const socket = path.join(dir, 'api.sock');
    await server.listen({ socket });
    const { stdout } = await promisify(execFile)('qemu-img', ['info', '--output=json', `nbd+unix:///?socket=${socket}`]);
    assert.equal(JSON.parse(stdout)['virtual-size'], disk.size);
  } finally {
    await server.close();
    await disk.close();
  }
  assert.equal(typeof zfile.ZFileWriter.create, 'function');
  assert.equal(typeof remote.pushImage, 'function');
  assert.equal(typeof WritableLayer.create, 'function');
  assert.ok(new LayerPool({ memory: 1 << 20 }).memory.capacity === 1 << 20);
  assert.ok(new ObdError('x') instanceof Error);
});
