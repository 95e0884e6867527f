/**
 * The 16-byte index entry (docs/format.md §2.2) is written and read by format.ts alone; the
 * sealed index loader and the writable log (its pending entries and its replay) use its field
 * functions on their hot paths. Every one of them is checked here against an independent
 * encoding of the layout with BigInt, on random entries over the whole range of each field.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, truncate } from 'node:fs/promises';
import fc from 'fast-check';
import {
  ENTRY_SIZE,
  HT_SPACE,
  INVALID_OFFSET,
  MAX_ENTRY_SECTORS,
  decodeEntry,
  encodeEntry,
  entryLength,
  entryMoffset,
  entryOffset,
  entryTag,
  entryZeroed,
  writeEntry,
  type Mapping,
} from '../../src/lsmt/format.ts';
import { IndexLog } from '../../src/lsmt/index-log.ts';
import { Level0Index } from '../../src/lsmt/level0.ts';
import { decodeSealedIndex } from '../../src/lsmt/sealed.ts';
import { WritableFiles } from '../../src/lsmt/writable-files.ts';
import { inDir } from '../snapshots/helpers.ts';
import { tempDir } from '../helpers/temp.ts';

/** The layout straight from the table: word 0 = offset | length << 50, word 1 = moffset | zeroed << 55 | tag << 56. */
function layout(m: Mapping): Uint8Array {
  const b = new Uint8Array(ENTRY_SIZE);
  const dv = new DataView(b.buffer);
  dv.setBigUint64(0, BigInt(m.offset) | (BigInt(m.length) << 50n), true);
  dv.setBigUint64(8, BigInt(m.moffset) | (m.zeroed ? 1n << 55n : 0n) | (BigInt(m.tag) << 56n), true);
  return b;
}

function layoutAll(list: readonly Mapping[]): Uint8Array {
  const out = new Uint8Array(list.length * ENTRY_SIZE);
  list.forEach((m, i) => out.set(layout(m), i * ENTRY_SIZE));
  return out;
}

/** Every moffset a JS number holds exactly below 2^55 (2^55 − 1 itself rounds up to 2^55). */
const moffsetArb = fc
  .bigInt({ min: 0n, max: 2n ** 55n - 1n })
  .map(Number)
  .filter((m) => m < 2 ** 55);
const entryArb = (moffset: fc.Arbitrary<number> = moffsetArb): fc.Arbitrary<Mapping> =>
  fc.record({
    offset: fc.bigInt({ min: 0n, max: BigInt(INVALID_OFFSET - 1) }).map(Number),
    length: fc.integer({ min: 1, max: MAX_ENTRY_SECTORS }),
    moffset,
    zeroed: fc.boolean(),
    tag: fc.integer({ min: 0, max: 255 }),
  }).map((m) => ({ ...m }));

test('format.ts writes the layout of docs/format.md §2.2 and reads it back, field by field and as a Mapping', () => {
  const example = { offset: 5, length: 10, moffset: 8, zeroed: true, tag: 3 };
  assert.equal(Buffer.from(layout(example)).toString('hex'), '05000000000028000800000000008003');
  assert.equal(Buffer.from(layout({ offset: INVALID_OFFSET, length: 0, moffset: 0, zeroed: false, tag: 0 })).toString('hex'), 'ffffffffffff03000000000000000000');
  fc.assert(
    fc.property(entryArb(), (m) => {
      const want = layout(m);
      const a = new Uint8Array(ENTRY_SIZE + 3);
      encodeEntry(new DataView(a.buffer), 3, m);
      assert.deepEqual(a.subarray(3), want);
      const b = new Uint8Array(ENTRY_SIZE);
      writeEntry(new DataView(b.buffer), 0, m.offset, m.length, m.moffset, m.zeroed, m.tag);
      assert.deepEqual(b, want);
      const dv = new DataView(want.buffer);
      assert.deepEqual(decodeEntry(dv, 0), m);
      const [lo0, hi0, lo1, hi1] = [0, 4, 8, 12].map((at) => dv.getUint32(at, true)) as [number, number, number, number];
      assert.deepEqual([entryOffset(lo0, hi0), entryLength(hi0), entryMoffset(lo1, hi1), entryZeroed(hi1), entryTag(hi1)], [m.offset, m.length, m.moffset, m.zeroed, m.tag]);
    }),
    { numRuns: 2000 },
  );
});

test('the sealed index loader reads what the layout says, skipping padding and empty entries and resetting tags', () => {
  const padding: Mapping = { offset: INVALID_OFFSET, length: 0, moffset: 0, zeroed: false, tag: 0 };
  const empty = entryArb().map((m) => ({ ...m, length: 0 }));
  const filler = fc.oneof(fc.constant(undefined), fc.constant(padding), empty);
  const data = entryArb(moffsetArb.filter((m) => m >= HT_SPACE / 512));
  fc.assert(
    fc.property(fc.array(fc.tuple(data, filler), { maxLength: 40 }), (items) => {
      // Sorted and non-overlapping, as a sealed index must be; padding and empty entries anywhere.
      const sorted = items.map(([m]) => m).sort((a, b) => a.offset - b.offset);
      const disk: Mapping[] = [];
      let end = 0;
      sorted.forEach((m, i) => {
        if (m.offset < end) return;
        end = m.offset + m.length;
        disk.push(m);
        const f = items[i]![1];
        if (f) disk.push(f);
      });
      const bytes = layoutAll(disk);
      const t = decodeSealedIndex(bytes, 'entries', 0, 2 ** 56);
      const dv = new DataView(bytes.buffer);
      const want = disk.map((_, i) => decodeEntry(dv, i * ENTRY_SIZE)).filter((m) => m.offset !== INVALID_OFFSET && m.length > 0);
      assert.deepEqual(t.toArray(), want.map((m) => ({ ...m, tag: 0 })));
    }),
    { numRuns: 500 },
  );
});

test('the writable log writes its pending entries in the layout and replays them as the canonical decoder reads them', async (ctx) => {
  const t = inDir(await tempDir(ctx));
  const data = t.file('d');
  const index = t.file('i');
  // A sparse data file of 2^40 bytes, so replay keeps entries with moffsets up to 2^31 sectors.
  const DATA_BYTES = 2 ** 40;
  const dataSectors = DATA_BYTES / 512;
  await (await WritableFiles.create(data, index, { virtualSize: 0 })).close();
  await truncate(data, DATA_BYTES);
  // Mostly entries replay keeps, some with a moffset anywhere (replay stops at the first).
  const inData = fc.integer({ min: HT_SPACE / 512, max: dataSectors - MAX_ENTRY_SECTORS });
  const moffset = fc.oneof({ arbitrary: inData, weight: 8 }, { arbitrary: moffsetArb, weight: 1 });
  await fc.assert(
    fc.asyncProperty(fc.array(entryArb(moffset), { minLength: 1, maxLength: 40 }), async (list) => {
      await truncate(index, HT_SPACE);
      const files = await WritableFiles.open(data, index);
      try {
        const log = await IndexLog.recover(files, true);
        for (const m of list) log.append(m.offset, m.length, m.moffset, m.zeroed);
        assert.equal(log.pendingCount, list.length);
        await log.flush();
        assert.equal(log.pendingCount, 0);
      } finally {
        await files.close();
      }
      const bytes = new Uint8Array(await readFile(index)).subarray(HT_SPACE);
      assert.deepEqual(bytes, layoutAll(list.map((m) => ({ ...m, tag: 0 }))));

      const model = new Level0Index();
      const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
      let good = 0;
      for (; good < list.length; good++) {
        const m = decodeEntry(dv, good * ENTRY_SIZE);
        if (m.moffset < HT_SPACE / 512 || (m.zeroed ? m.moffset > dataSectors : m.moffset + m.length > dataSectors)) break;
        model.insert(m.offset, m.length, m.moffset, m.zeroed);
      }
      const reopened = await WritableFiles.open(data, index, { readOnly: true });
      try {
        const replayed = await IndexLog.recover(reopened, false);
        assert.deepEqual(replayed.recovery, { entriesOnDisk: list.length, droppedEntries: list.length - good, droppedBytes: (list.length - good) * ENTRY_SIZE });
        assert.deepEqual(replayed.entries.toTable().toArray(), model.toTable().toArray());
      } finally {
        await reopened.close();
      }
    }),
    { numRuns: 60 },
  );
});
