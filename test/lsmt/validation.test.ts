/** Every open-time check of a sealed layer, each triggered by one corruption of a fixture copy. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { MemorySource } from '../../src/io/memory.ts';
import { ChainError, FormatError } from '../../src/io/errors.ts';
import { ENTRY_SIZE, encodeEntry } from '../../src/lsmt/format.ts';
import { openSealedLayer } from '../../src/lsmt/sealed.ts';
import { Stack } from '../../src/lsmt/stack.ts';
import { WritableLayer } from '../../src/lsmt/writable.ts';
import { buildLayer } from '../helpers/layers.ts';
import { openLayerFile } from '../../src/image/open.ts';
import { FIXTURES } from '../helpers/recipes.ts';
import { withTempDir } from '../helpers/temp.ts';

const ORIG = readFileSync(path.join(FIXTURES, 'lsmt', 'layer1.lsmt'));
const TRAILER = ORIG.length - 4096;
const INDEX = 1350144; // layer1's index_offset (headers.json)

function corrupt(edit: (b: Buffer, dv: DataView) => void | Buffer): MemorySource {
  const b = Buffer.from(ORIG);
  const out = edit(b, new DataView(b.buffer, b.byteOffset, b.length)) ?? b;
  return new MemorySource(out, 'bad.lsmt');
}

async function rejects(src: MemorySource, message: RegExp, offset?: number): Promise<void> {
  await assert.rejects(openSealedLayer(src), (e: unknown) => {
    assert.ok(e instanceof FormatError, `expected FormatError, got ${e}`);
    assert.match(e.message, message);
    assert.match(e.message, /^bad\.lsmt/);
    if (offset !== undefined) assert.equal(e.offset, offset);
    return true;
  });
}

test('the unmodified fixture opens (the corruptions below are the only difference)', async () => {
  const l = await openSealedLayer(new MemorySource(ORIG, 'ok.lsmt'));
  assert.equal(l.index.count, 25);
});

test('file too small', () => rejects(corrupt((b) => b.subarray(0, 100)), /too small/));
test('file holds a header but no room for a trailer', () => rejects(corrupt((b) => b.subarray(0, 6000)), /too small for a sealed LSMT layer/));
test('header magic0', () => rejects(corrupt((b) => void (b[0] = 0x4d)), /magic mismatch/, 0));
test('header magic1', () => rejects(corrupt((b) => void (b[20] ^= 0xff)), /magic mismatch/, 0));
test('header struct size', () => rejects(corrupt((_b, dv) => dv.setUint32(24, 391, true)), /struct size is 391, expected 390/, 24));
test('header without the header bit', () => rejects(corrupt((_b, dv) => dv.setUint32(28, 6, true)), /is-header bit/, 28));
test('header of an index file', () => rejects(corrupt((_b, dv) => dv.setUint32(28, 1, true)), /writable layer's index file/, 28));
test('trailer magic', () => rejects(corrupt((b) => void (b[TRAILER + 3] = 0)), /magic mismatch/, TRAILER));
test('unsealed data file without trailer', () =>
  rejects(
    corrupt((b, dv) => {
      dv.setUint32(28, 3, true);
      b[TRAILER] = 0;
    }),
    /unsealed writable layer/,
  ));
test('trailer with the header bit', () => rejects(corrupt((_b, dv) => dv.setUint32(TRAILER + 28, 7, true)), /is-header bit set/, TRAILER + 28));
test('trailer without the data bit', () => rejects(corrupt((_b, dv) => dv.setUint32(TRAILER + 28, 4, true)), /data-file bit/, TRAILER + 28));
test('trailer without the sealed bit', () => rejects(corrupt((_b, dv) => dv.setUint32(TRAILER + 28, 2, true)), /sealed bit/, TRAILER + 28));
test('index_size above the reference limit', () =>
  rejects(corrupt((_b, dv) => dv.setUint32(TRAILER + 40, 1_000_001, true)), /exceeds the limit of 1000000/, TRAILER + 40));
test('index_offset not sector aligned', () => rejects(corrupt((_b, dv) => dv.setUint32(TRAILER + 32, INDEX + 1, true)), /multiple of 512/));
test('index_offset inside the header', () => rejects(corrupt((_b, dv) => dv.setUint32(TRAILER + 32, 512, true)), /at least 4096/));
test('index running into the trailer', () => rejects(corrupt((_b, dv) => dv.setUint32(TRAILER + 40, 257, true)), /runs past the trailer/));
test('index entries out of order', () =>
  rejects(
    corrupt((_b, dv) => encodeEntry(dv, INDEX + 2 * ENTRY_SIZE, { offset: 10, length: 8, moffset: 8, zeroed: false, tag: 0 })),
    /entry 2 .*not sorted/,
    INDEX + 2 * ENTRY_SIZE,
  ));
test('data entry pointing past the data area', () =>
  rejects(
    corrupt((_b, dv) => encodeEntry(dv, INDEX, { offset: 0, length: 128, moffset: INDEX / 512 - 64, zeroed: false, tag: 0 })),
    /entry 0 points at sectors .* outside the data area/,
    INDEX,
  ));
test('data entry pointing into the header', () =>
  rejects(corrupt((_b, dv) => encodeEntry(dv, INDEX, { offset: 0, length: 128, moffset: 7, zeroed: false, tag: 0 })), /outside the data area \[8,/));
test('zeroed entry pointing past the data area', () =>
  rejects(
    corrupt((_b, dv) => encodeEntry(dv, INDEX, { offset: 0, length: 128, moffset: INDEX / 512 + 1, zeroed: true, tag: 0 })),
    /outside the data area/,
  ));

test('on-disk tags are ignored and padding entries skipped', async () => {
  const l = await openSealedLayer(
    corrupt((_b, dv) => {
      dv.setUint8(INDEX + 15, 9);
    }),
  );
  assert.equal(l.index.count, 25);
  assert.equal(l.index.layer[0], 0);
});

test('openLayerFile names a missing file and a non-layer file', async () => {
  await assert.rejects(openLayerFile('/nonexistent/x.lsmt'), { name: 'NotFoundError', message: /\/nonexistent\/x\.lsmt: no such file/ });
  await assert.rejects(openLayerFile(path.join(FIXTURES, 'MANIFEST.md')), { name: 'FormatError', message: /MANIFEST\.md.*not an LSMT layer/ });
});

for (const [what, vsize, message] of [
  ['2^63', 2n ** 63n, /virtual size \d+ exceeds the largest supported size/],
  ['2^53', 2n ** 53n, /exceeds the largest supported size/],
  ['not a multiple of 512', 64n * 1024n * 1024n + 100n, /is not a multiple of 512/],
  ['smaller than the mapped data', 4096n, /is smaller than the data its index maps/],
] as const) {
  test(`trailer virtual size ${what}`, () => rejects(corrupt((b) => void b.writeBigUInt64LE(vsize, TRAILER + 48)), message, TRAILER + 48));
}

test('a stack whose every layer has virtual size 0, or whose size hides data of a lower layer, is refused', async () => {
  const zero = await openSealedLayer(corrupt((b) => void b.writeBigUInt64LE(0n, TRAILER + 48)));
  assert.throws(() => new Stack([zero]), (e: unknown) => e instanceof ChainError && /no layer of the stack sets a virtual size/.test(e.message));
  const MiB = 1 << 20;
  const base = await buildLayer({ virtualSize: 2 * MiB }, [{ offset: MiB, data: new Uint8Array(4096).fill(7) }], 'base.lsmt');
  const top = await buildLayer({ virtualSize: MiB }, [{ offset: 0, data: new Uint8Array(4096).fill(8) }], 'top.lsmt');
  assert.throws(() => new Stack([base, top]), (e: unknown) => e instanceof ChainError && /base\.lsmt: maps data up to byte 1052672, past the stack's virtual size 1048576 \(set by top\.lsmt\)/.test(e.message));
  // A layer of size 0 takes its size from below, as the reference's convertor writes them.
  const inherit = await buildLayer({ virtualSize: 0 }, [{ offset: 0, data: new Uint8Array(4096).fill(9) }], 'inherit.lsmt');
  assert.equal(new Stack([base, inherit]).size, 2 * MiB);
});

test('a writable layer whose virtual size is zero (alone) or hides its own data is refused', async () => {
  await withTempDir(async (dir) => {
    const data = path.join(dir, 'rw.data');
    const index = path.join(dir, 'rw.index');
    const rw = await WritableLayer.create(data, index, { virtualSize: 1 << 20 });
    await rw.write(new Uint8Array(4096).fill(1), 512 * 1024);
    await rw.close();
    for (const [vsize, message] of [[0n, /virtual size 0 is zero/], [4096n, /is smaller than the data its index maps/], [2n ** 63n, /exceeds the largest supported size/]] as const) {
      for (const f of [data, index]) {
        const b = readFileSync(f);
        b.writeBigUInt64LE(vsize, 48);
        writeFileSync(f, b);
      }
      await assert.rejects(WritableLayer.open(data, index), (e: unknown) => e instanceof FormatError && message.test(e.message));
    }
  }, 'obd-vsize-');
});
