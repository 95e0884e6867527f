/** Opening whole images: layer files, config.v1.json, OCI layouts; upper layers; traces. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { openImage } from '../../src/image/open.ts';
import { pushImage } from '../../src/image/push.ts';
import { decodeTrace } from '../../src/remote/trace.ts';
import { DIGESTS, FIXTURES } from '../helpers/recipes.ts';
import { deviceDigest } from '../helpers/layers.ts';
import { tempDir } from '../helpers/temp.ts';

const L = (n: string) => path.join(FIXTURES, 'lsmt', n);
const LAYERS = ['layer1.lsmt', 'layer2.lsmt', 'layer3.lsmt'].map(L);

test('layer files with a new upper: created over the stack, writes land on top, reopen read-only sees them', async (t) => {
  const dir = await tempDir(t, 'obd-image-');
  const upper = { data: path.join(dir, 'rw.data'), index: path.join(dir, 'rw.index') };
  const dev = await openImage(LAYERS, { upper });
  assert.equal(dev.writable, true);
  assert.equal(dev.layerCount, 4);
  const pattern = Buffer.alloc(12288, 0x5a);
  await dev.write!(pattern, 1000);
  await dev.close();

  const ro = await openImage(LAYERS, { upper, readOnly: true });
  assert.equal(ro.writable, false);
  const got = Buffer.alloc(12288);
  await ro.read(got, 1000);
  assert.ok(got.equals(pattern));
  const exts = await ro.extents(0, 16384);
  assert.ok(exts.some((e) => e.kind === 'data' && e.layer === 3), 'the upper is layer 3');
  await ro.close();
  // Untouched ranges still read as the stack.
  const plain = await openImage(LAYERS);
  assert.equal(await deviceDigest(plain), DIGESTS.layer123);
  await plain.close();
});

test('an upper that must exist for a read-only open, or is half present, is refused', async (t) => {
  const dir = await tempDir(t, 'obd-image-');
  await assert.rejects(openImage(LAYERS, { upper: { data: path.join(dir, 'd'), index: path.join(dir, 'i') }, readOnly: true }), { name: 'NotFoundError' });
  await writeFile(path.join(dir, 'd'), '');
  await assert.rejects(openImage(LAYERS, { upper: { data: path.join(dir, 'd'), index: path.join(dir, 'i') } }), /exists but .* does not/);
});

test('a mistyped layer path is a clear error, never a registry request', async () => {
  await assert.rejects(openImage(['layers/missing.lsmt']), { name: 'NotFoundError', message: /layers\/missing\.lsmt: no such layer file/ });
  await assert.rejects(openImage([]), { name: 'InvalidArgumentError' });
});

test('config.v1.json with local lowers, an upper and a resultFile', async (t) => {
  const dir = await tempDir(t, 'obd-image-');
  const cfg = path.join(dir, 'config.v1.json');
  await writeFile(
    cfg,
    JSON.stringify({
      lowers: LAYERS.map((file) => ({ file })),
      upper: { data: path.join(dir, 'upper.data'), index: path.join(dir, 'upper.index') },
      resultFile: path.join(dir, 'result'),
    }),
  );
  const dev = await openImage([cfg]);
  assert.equal(dev.layerCount, 4);
  assert.equal(dev.writable, true);
  assert.equal(await readFile(path.join(dir, 'result'), 'utf8'), 'success');
  assert.equal(await deviceDigest(dev), DIGESTS.layer123);
  await dev.close();
});

test('an OCI layout is an image: push the fixture layers, serve them lazily, record and replay a trace', async (t) => {
  const dir = await tempDir(t, 'obd-image-');
  const layout = `oci:${path.join(dir, 'layout')}:v1`;
  await pushImage(LAYERS, layout);
  const trace = path.join(dir, 'trace');
  await writeFile(trace, '');
  const dev = await openImage([layout], { trace });
  assert.equal(dev.layerCount, 3);
  assert.equal(await deviceDigest(dev), DIGESTS.layer123);
  await dev.close();
  const records = decodeTrace(await readFile(trace), trace);
  assert.ok(records.length > 10, `${records.length} records`);
  assert.ok(records.every((r) => r.layer >= 0 && r.layer < 3));
  const replayed = await new Promise<{ records: number; failed: number }>((resolve, reject) => {
    openImage([layout], { trace, onReplayDone: resolve }).then((d) => t.after(() => d.close()), reject);
  });
  assert.equal(replayed.failed, 0);
  assert.ok(replayed.records > 0);
});
