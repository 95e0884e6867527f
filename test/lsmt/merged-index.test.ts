import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { MappingTable } from '../../src/lsmt/table.ts';
import { mergeIndexes, sortByStart } from '../../src/lsmt/merged-index.ts';
import { IndexLookup, firstEndingAfterBinary } from '../../src/lsmt/lookup.ts';

type T = [number, number, number, number?];
const table = (rows: T[]) => MappingTable.from(rows.map(([offset, length, moffset]) => ({ offset, length, moffset, zeroed: false, tag: 0 })));
const rows = (t: MappingTable) => t.toArray().map((m) => [m.offset, m.length, m.moffset, m.tag]);

// Reference test vector (docs/format.md §2.7). Its tags count top-first (0 = top read-only layer,
// the writable layer gets the number of read-only layers); ours count bottom-first.
const U: T[] = [[5, 5, 0], [10, 10, 50], [100, 10, 20]];
const R0: T[] = [[0, 1, 7], [2, 4, 5], [15, 10, 22], [30, 15, 89], [87, 50, 32], [150, 10, 84]];
const R1: T[] = [[1, 3, 134], [8, 4, 873], [18, 72, 320], [100, 100, 4893], [1000, 1000, 39823]];

test('painter merge: U over R0 (reference vector)', () => {
  const got = rows(mergeIndexes([table(R0), table(U)]));
  const want = [[0, 1, 7, 0], [2, 3, 5, 0], [5, 5, 0, 1], [10, 10, 50, 1], [20, 5, 27, 0], [30, 15, 89, 0], [87, 13, 32, 0], [100, 10, 20, 1], [110, 27, 55, 0], [150, 10, 84, 0]];
  assert.deepEqual(got, want);
});

test('painter merge: U over R0 over R1 (reference vector)', () => {
  const got = rows(mergeIndexes([table(R1), table(R0), table(U)]));
  // reference tags: R0 = 0, R1 = 1, U = 2  →  ours: R1 = 0, R0 = 1, U = 2
  const ref: T[] = [[0, 1, 7, 0], [1, 1, 134, 1], [2, 3, 5, 0], [5, 5, 0, 2], [10, 10, 50, 2], [20, 5, 27, 0], [25, 5, 327, 1], [30, 15, 89, 0], [45, 42, 347, 1], [87, 13, 32, 0], [100, 10, 20, 2], [110, 27, 55, 0], [137, 13, 4930, 1], [150, 10, 84, 0], [160, 40, 4953, 1], [1000, 1000, 39823, 1]];
  const want = ref.map(([o, l, m, t]) => [o, l, m, t === 2 ? 2 : 1 - t!]);
  assert.deepEqual(got, want);
});

/** Random sorted, disjoint tables with some zeroed entries. */
const arbTable = fc
  .array(fc.tuple(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 1, max: 30 }), fc.boolean()), { maxLength: 25 })
  .map((parts) => {
    const t = new MappingTable();
    let pos = 0;
    let m = 8;
    for (const [gap, len, z] of parts) {
      pos += gap;
      t.push(pos, len, m, z, 0);
      pos += len;
      m += len + 3;
    }
    return t;
  });

test('merged index equals a per-sector painter model (property)', () => {
  fc.assert(
    fc.property(fc.array(arbTable, { minLength: 1, maxLength: 7 }), (layers) => {
      const merged = mergeIndexes(layers);
      const size = 1200;
      // Model: for each sector, the top layer covering it and the moffset it maps to.
      const model: (string | null)[] = new Array(size).fill(null);
      layers.forEach((t, L) => {
        for (let i = 0; i < t.count; i++) {
          for (let s = t.offset[i]!; s < t.end(i); s++) model[s] = `${L}:${t.zeroed[i] ? 'z' : t.moffset[i]! + (s - t.offset[i]!)}`;
        }
      });
      const got: (string | null)[] = new Array(size).fill(null);
      let prevEnd = -1;
      for (let i = 0; i < merged.count; i++) {
        assert.ok(merged.offset[i]! >= prevEnd, 'sorted, disjoint');
        prevEnd = merged.end(i);
        for (let s = merged.offset[i]!; s < merged.end(i); s++) got[s] = `${merged.layer[i]}:${merged.zeroed[i] ? 'z' : merged.moffset[i]! + (s - merged.offset[i]!)}`;
      }
      assert.deepEqual(got, model);
    }),
    { numRuns: 300 },
  );
});

test('lookup equals binary search on uniform, skewed and huge-offset tables (property)', () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.integer({ min: 0, max: 2 ** 20 }), fc.integer({ min: 1, max: 16383 })), { minLength: 0, maxLength: 200 }),
      fc.integer({ min: 0, max: 2 ** 45 }),
      fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: 1, maxLength: 50 }),
      (parts, base, qs) => {
        const t = new MappingTable();
        let pos = base;
        for (const [gap, len] of parts) {
          pos += gap;
          t.push(pos, len, 8, false, 0);
          pos += len;
        }
        const lk = new IndexLookup(t);
        const span = pos + 100;
        for (const q of [...qs.map((x) => Math.floor(x * span)), 0, base, pos - 1, pos, span]) {
          assert.equal(lk.firstEndingAfter(q), firstEndingAfterBinary(lk, q), `query ${q}`);
        }
      },
    ),
    { numRuns: 500 },
  );
});

test('sortByStart orders like a stable comparator sort, packed or not (property)', () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 50 }), { maxLength: 300 }), fc.boolean(), (small, huge) => {
      // Huge keys (near 2^50 sectors) leave no room to pack an index: the comparator path.
      const keys = Float64Array.from(small, (k) => (huge ? 2 ** 50 + k : k));
      const want = [...keys.keys()].sort((a, b) => keys[a]! - keys[b]! || a - b);
      assert.deepEqual([...sortByStart(keys)], want);
    }),
  );
});

test('one layer merges to a copy of its table, and the copy is independent', () => {
  const src = new MappingTable();
  src.push(0, 8, 8, false, 0);
  src.push(16, 8, 0, true, 0);
  const merged = mergeIndexes([src]);
  assert.deepEqual(rows(merged), rows(src));
  assert.equal(merged.zeroed[1], 1);
  merged.push(100, 1, 9, false, 0);
  assert.equal(src.count, 2);
});
