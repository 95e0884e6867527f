/** The incremental merged index of a live stack agrees with a full merge, sector by sector. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { overlayIndex } from '../../src/live/overlay.ts';
import { mergeIndexes } from '../../src/lsmt/merged-index.ts';
import { MappingTable } from '../../src/lsmt/table.ts';

const SPAN = 256;

/** A sorted, non-overlapping table from random (start, length, zeroed) picks. */
const table = fc.array(fc.tuple(fc.integer({ min: 0, max: SPAN - 1 }), fc.integer({ min: 1, max: 24 }), fc.boolean()), { maxLength: 20 }).map((picks) => {
  const t = new MappingTable();
  let at = 0;
  for (const [gap, len, z] of picks.sort((a, b) => a[0] - b[0])) {
    const start = Math.max(at, gap);
    if (start + len > SPAN) break;
    t.push(start, len, 1000 + start * 3, z, 0);
    at = start + len + (gap % 3);
  }
  return t;
});

/** What backs each sector: layer, moffset of that sector (or the zeroed entry's), zeroed. */
function sectors(t: MappingTable): string[] {
  const out: string[] = new Array(SPAN).fill('-');
  for (let i = 0; i < t.count; i++) {
    for (let s = 0; s < t.length[i]!; s++) {
      const z = t.zeroed[i] === 1;
      out[t.offset[i]! + s] = `${t.layer[i]}:${z ? `z${t.moffset[i]}` : t.moffset[i]! + s}`;
    }
  }
  return out;
}

test('overlayIndex(merge(L0..Lk), Lk+1) reads like merge(L0..Lk+1)', () => {
  fc.assert(
    fc.property(fc.array(table, { minLength: 1, maxLength: 6 }), (layers) => {
      let merged = mergeIndexes([layers[0]!]);
      for (let k = 1; k < layers.length; k++) {
        merged = overlayIndex(merged, layers[k]!, k);
        const full = mergeIndexes(layers.slice(0, k + 1));
        assert.deepEqual(sectors(merged), sectors(full));
        for (let i = 1; i < merged.count; i++) assert.ok(merged.offset[i]! >= merged.offset[i - 1]! + merged.length[i - 1]!, 'sorted, no overlap');
        for (let i = 0; i < merged.count; i++) assert.ok(merged.length[i]! > 0);
      }
    }),
    { numRuns: 500 },
  );
});
