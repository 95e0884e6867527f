/** Layers sealed in place (close_seal, `overlaybd-commit --seal`, docs/format.md §2.11). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { openImage, openLayerFile, openStack } from '../../src/image/open.ts';
import { FormatError } from '../../src/io/errors.ts';
import { ENTRY_SIZE, encodeHeaderTrailer } from '../../src/lsmt/format.ts';
import { sealLayer } from '../../src/lsmt/seal.ts';
import { WritableLayer } from '../../src/lsmt/writable.ts';
import { obd } from '../helpers/cli.ts';
import { DIGESTS } from '../helpers/recipes.ts';
import { tempDir } from '../helpers/temp.ts';
import { LSMT, deviceDigest, inDir } from './helpers.ts';

test('a layer the reference sealed in place reads as layer 3, alone and on layers 1 and 2', async () => {
  const alone = await openStack([LSMT('layer3-rw.sealed')]);
  try {
    assert.equal(await deviceDigest(alone), DIGESTS.layer3alone);
    const l = alone.layers[0]!;
    assert.equal(l.uuid, 'A3A3A3A3-0000-4000-8000-000000000003');
  } finally {
    await alone.close();
  }
  const stack = await openStack([LSMT('layer1.lsmt'), LSMT('layer2.lsmt'), LSMT('layer3-rw.sealed')]);
  try {
    assert.equal(await deviceDigest(stack), DIGESTS.layer123);
  } finally {
    await stack.close();
  }
});

test('sealing layer3-rw in place gives the reference file, but for the uninitialised tail of its index sector', async (t) => {
  const d = inDir(await tempDir(t, 'obd-seal-'));
  await copyFile(LSMT('layer3-rw.data'), d.file('rw.data'));
  await copyFile(LSMT('layer3-rw.index'), d.file('rw.index'));
  const r = await sealLayer(d.file('rw.data'), d.file('rw.index'));
  const ours = await readFile(d.file('rw.data'));
  const ref = await readFile(LSMT('layer3-rw.sealed'));
  assert.equal(ours.length, ref.length);
  assert.equal(r.fileSize, ours.length);
  const garbageFrom = r.indexOffset + r.entries * ENTRY_SIZE;
  const garbageTo = r.indexOffset + Math.ceil((r.entries * ENTRY_SIZE) / 512) * 512;
  assert.ok(garbageTo > garbageFrom, 'the fixture has a partial index sector');
  assert.deepEqual(ours.subarray(0, garbageFrom), ref.subarray(0, garbageFrom));
  assert.deepEqual(ours.subarray(garbageTo), ref.subarray(garbageTo));
  assert.ok(ours.subarray(garbageFrom, garbageTo).every((b) => b === 0), 'we write zeros where the reference leaves memory');
  // The sealed data file now opens as a layer, and no longer as a writable one.
  const l = await openLayerFile(d.file('rw.data'));
  assert.equal(l.header.flags, 3);
  assert.equal(l.trailer.flags, 6);
  await l.source.close();
  await assert.rejects(WritableLayer.open(d.file('rw.data'), d.file('rw.index')), (e: unknown) => e instanceof FormatError && /sealed in place/.test(e.message));
  await assert.rejects(sealLayer(d.file('rw.data'), d.file('rw.index')), /sealed in place/);
});

test('a layer written here, sealed with obd commit --seal, reads the same as its commit', async (t) => {
  const d = inDir(await tempDir(t, 'obd-seal-'));
  const w = await WritableLayer.create(d.file('a.data'), d.file('a.index'), { virtualSize: 4 << 20 });
  const buf = Buffer.alloc(3 * 4096, 7);
  await w.write(buf, 4096);
  await w.write(Buffer.alloc(4096, 9), 8192);
  await w.trim(1 << 20, 8192);
  await w.write(Buffer.alloc(700, 3), 2 << 20);
  await w.close();
  const before = await WritableLayer.open(d.file('a.data'), d.file('a.index'), { readOnly: true });
  const want = await deviceDigest(before);
  await before.close();
  const r = await obd(['commit', '--seal', d.file('a.data'), d.file('a.index'), '--json']);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.sealed, true);
  assert.equal(j.fileSize, (await stat(d.file('a.data'))).size);
  const s = await openStack([d.file('a.data')]);
  try {
    assert.equal(await deviceDigest(s), want);
  } finally {
    await s.close();
  }
  // --seal takes no output and no identity options.
  const bad = await obd(['commit', '--seal', d.file('a.data'), d.file('a.index'), d.file('out.lsmt'), '--json']);
  assert.notEqual(bad.code, 0);
  assert.match(JSON.parse(bad.stdout).error.message, /drop the output/);
  const bad2 = await obd(['commit', '--seal', d.file('a.data'), d.file('a.index'), '-z', 'lz4']);
  assert.notEqual(bad2.code, 0);
  assert.match(bad2.stderr, /do not apply/);
});

test('a config.v1.json lower whose dir holds overlaybd.sealed opens it, as the reference convertor lays it out', async (t) => {
  const d = inDir(await tempDir(t, 'obd-seal-'));
  await mkdir(d.file('l3'));
  await copyFile(LSMT('layer3-rw.sealed'), d.file('l3/overlaybd.sealed'));
  await writeFile(d.file('config.v1.json'), JSON.stringify({ lowers: [{ file: LSMT('layer1.lsmt') }, { file: LSMT('layer2.lsmt') }, { dir: 'l3' }], resultFile: 'result' }));
  const dev = await openImage([d.file('config.v1.json')]);
  try {
    assert.equal(await deviceDigest(dev), DIGESTS.layer123);
  } finally {
    await dev.close();
  }
});

test('a guest block that looks like a sealed trailer, written last, does not make the layer look sealed', async (t) => {
  const d = inDir(await tempDir(t, 'obd-seal-'));
  const w = await WritableLayer.create(d.file('g.data'), d.file('g.index'), { virtualSize: 4 << 20 });
  await w.write(Buffer.alloc(8192, 5), 0);
  // What a guest storing an LSMT layer might write: a trailer block (flags 6) of another layer.
  const block = encodeHeaderTrailer({ flags: 6, indexOffset: 4096, indexSize: 0, virtualSize: 4 << 20, uuid: 'e0e0e0e0-0000-4000-8000-00000000000e', parentUuid: '', version: 1, subVersion: 1, userTag: '' });
  await w.write(block, 1 << 20);
  await w.close();
  const again = await WritableLayer.open(d.file('g.data'), d.file('g.index'));
  const b = new Uint8Array(4096);
  await again.read(b, 1 << 20);
  assert.deepEqual(b, block);
  await again.close();
});
