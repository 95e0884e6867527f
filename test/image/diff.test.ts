/** `obd diff`: a layer that, stacked on image A, reads as image B — checked on exported bytes. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, readFile } from 'node:fs/promises';
import { openStack } from '../../src/image/open.ts';
import { diffImages } from '../../src/image/diff.ts';
import { WritableLayer } from '../../src/lsmt/writable.ts';
import { commitLayer } from '../../src/lsmt/commit.ts';
import { obd } from '../helpers/cli.ts';
import { DIGESTS, R } from '../helpers/recipes.ts';
import { tempDir } from '../helpers/temp.ts';
import { LSMT, deviceDigest, inDir } from '../snapshots/helpers.ts';

const L1 = LSMT('layer1.lsmt');
const L2 = LSMT('layer2.lsmt');
const L3 = LSMT('layer3.lsmt');

/** Exports a stack with the CLI and returns the raw bytes (the flattened image). */
async function exported(dir: string, name: string, layers: string[]): Promise<Buffer> {
  const out = `${dir}/${name}.raw`;
  const r = await obd(['export', '--no-verify-chain', ...layers, out]);
  assert.equal(r.code, 0, r.stderr);
  return readFile(out);
}

test('B = A plus a layer: the diff is that layer merged, and A + diff exports as B', async (t) => {
  const d = inDir(await tempDir(t, 'obd-diff-'));
  const r = await obd(['diff', '--from', `${L1},${L2}`, '--to', L1, '--to', `${L2},${L3}`, d.file('delta.lsmt'), '--json']);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.mode, 'layers');
  assert.equal(j.extraLayers, 1);
  assert.equal(j.comparedBytes, 0);
  assert.equal(j.parentUuid, 'A2A2A2A2-0000-4000-8000-000000000002');
  assert.deepEqual(await exported(d.dir, 'a-diff', [L1, L2, d.file('delta.lsmt')]), await exported(d.dir, 'b', [L1, L2, L3]));
  // The chain holds: the diff's parent is A's top layer.
  const s = await openStack([L1, L2, d.file('delta.lsmt')], { verifyChain: true });
  assert.equal(await deviceDigest(s), DIGESTS.layer123);
  await s.close();
});

test('unrelated images are compared only where either maps data; zeros in B hide A', async (t) => {
  const d = inDir(await tempDir(t, 'obd-diff-'));
  const a = await openStack([L1, L2]);
  const b = await openStack([L3]);
  try {
    const s = await diffImages(a, b, d.file('delta.lsmt'));
    assert.equal(s.mode, 'compare');
    // Ranges mapped in neither image are never looked at.
    const mapped = async (dev: typeof a) => (await dev.extents(0, dev.size)).filter((e) => e.kind === 'data');
    const union = new Uint8Array(a.size / 512);
    for (const e of [...(await mapped(a)), ...(await mapped(b))]) union.fill(1, e.offset / 512, (e.offset + e.length) / 512);
    assert.equal(s.comparedBytes, union.reduce((n, x) => n + x, 0) * 512);
    assert.ok(s.comparedBytes < a.size / 8);
  } finally {
    await a.close();
    await b.close();
  }
  assert.deepEqual(await exported(d.dir, 'a-diff', [L1, L2, d.file('delta.lsmt')]), await exported(d.dir, 'b', [L3]));
});

test('a copy of a layer is not taken for the same layer, yet the compared diff is right; -z gives a zfile', async (t) => {
  const d = inDir(await tempDir(t, 'obd-diff-'));
  await copyFile(L2, d.file('l2-copy.lsmt'));
  const r = await obd(['diff', '--from', `${L1},${L2}`, '--to', `${L1},${d.file('l2-copy.lsmt')},${L3}`, d.file('delta.zfile'), '-z', 'lz4', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.mode, 'compare');
  assert.ok(j.compressed.outputSize > 0);
  assert.deepEqual(await exported(d.dir, 'a-diff', [L1, L2, d.file('delta.zfile')]), await exported(d.dir, 'b', [L1, L2, L3]));
  // The same images give no data at all when compared with themselves.
  const same = await obd(['diff', '--from', `${L1},${L2}`, '--to', `${L1},${d.file('l2-copy.lsmt')}`, d.file('none.lsmt'), '--json']);
  assert.equal(same.code, 0, same.stderr);
  assert.equal(JSON.parse(same.stdout).dataBytes, 0);
  assert.equal(JSON.parse(same.stdout).entries, 0);
});

test('a grown disk diffs against a smaller one; a smaller B is refused', async (t) => {
  const d = inDir(await tempDir(t, 'obd-diff-'));
  const small = await WritableLayer.create(d.file('s.data'), d.file('s.index'), { virtualSize: 4 << 20 });
  await small.write(R('diff-s', 1 << 20), 1 << 20);
  await small.close();
  await commitLayer(d.file('s.data'), d.file('s.index'), d.file('small.lsmt'), { uuid: 'd1d1d1d1-0000-4000-8000-000000000001' });
  const big = await WritableLayer.create(d.file('b.data'), d.file('b.index'), { virtualSize: 8 << 20 });
  await big.write(R('diff-b', 512 * 1024), 1 << 20);
  await big.write(R('diff-c', 64 * 1024), 6 << 20);
  await big.close();
  await commitLayer(d.file('b.data'), d.file('b.index'), d.file('big.lsmt'));
  const r = await obd(['diff', '--from', d.file('small.lsmt'), '--to', d.file('big.lsmt'), d.file('delta.lsmt'), '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).virtualSize, 8 << 20);
  assert.deepEqual(await exported(d.dir, 'a-diff', [d.file('small.lsmt'), d.file('delta.lsmt')]), await exported(d.dir, 'b', [d.file('big.lsmt')]));
  const bad = await obd(['diff', '--from', d.file('big.lsmt'), '--to', d.file('small.lsmt'), d.file('bad.lsmt'), '--json']);
  assert.notEqual(bad.code, 0);
  assert.match(JSON.parse(bad.stdout).error.message, /cannot shrink/);
  const missing = await obd(['diff', '--to', d.file('small.lsmt'), d.file('bad.lsmt')]);
  assert.notEqual(missing.code, 0);
  assert.match(missing.stderr, /--from IMAGE_A --to IMAGE_B/);
});
