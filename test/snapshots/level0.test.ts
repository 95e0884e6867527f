import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Level0Index } from '../../src/lsmt/level0.ts';
import { sortKeyScale } from '../../src/lsmt/sort-keys.ts';

const list = (ix: Level0Index) => ix.toTable().toArray().map((m) => [m.offset, m.length, m.moffset]);

test('level-0 insert matches the reference test vector (test.cpp Index0.insert)', () => {
  const ix = new Level0Index();
  for (const [o, l, m] of [[0, 20, 0], [10, 15, 50], [30, 100, 20], [5, 10, 3], [40, 10, 123], [200, 10, 2133], [150, 100, 21]]) {
    ix.insert(o!, l!, m!, false);
  }
  assert.deepEqual(list(ix), [[0, 5, 0], [5, 10, 3], [15, 10, 55], [30, 10, 20], [40, 10, 123], [50, 80, 40], [150, 100, 21]]);
  assert.equal(ix.count, 7);
});

test('level-0 keeps zeroed moffsets when trimming the front, and never joins neighbours', () => {
  const ix = new Level0Index();
  ix.insert(0, 100, 8, true);
  ix.insert(0, 10, 500, false);
  ix.insert(10, 10, 510, false);
  assert.deepEqual(ix.toTable().toArray().map((m) => [m.offset, m.length, m.moffset, m.zeroed]), [
    [0, 10, 500, false],
    [10, 10, 510, false],
    [20, 80, 8, true],
  ]);
});

/** Per-sector model: the moffset each sector maps to (or -1 / 'z'). */
function model(size: number, ops: [number, number, number, boolean][]): (number | string)[] {
  const m: (number | string)[] = new Array(size).fill(-1);
  for (const [o, l, mo, z] of ops) for (let s = o; s < o + l && s < size; s++) m[s] = z ? 'z' : mo + (s - o);
  return m;
}

function flatten(ix: Level0Index, size: number): (number | string)[] {
  const m: (number | string)[] = new Array(size).fill(-1);
  const t = ix.toTable();
  let prevEnd = 0;
  for (let i = 0; i < t.count; i++) {
    assert.ok(t.offset[i]! >= prevEnd, 'sorted and non-overlapping');
    assert.ok(t.length[i]! > 0);
    prevEnd = t.end(i);
    for (let s = t.offset[i]!; s < t.end(i); s++) m[s] = t.zeroed[i] ? 'z' : t.moffset[i]! + (s - t.offset[i]!);
  }
  return m;
}

test('level-0 equals a per-sector model for random inserts (crossing chunk splits)', () => {
  const size = 3000;
  const op = fc.tuple(fc.nat(size - 1), fc.integer({ min: 1, max: 200 }), fc.nat(1_000_000), fc.boolean());
  fc.assert(
    fc.property(fc.array(op, { minLength: 1, maxLength: 1500, size: 'max' }), (ops) => {
      const ix = new Level0Index();
      for (const [o, l, m, z] of ops) ix.insert(o, l, m, z);
      assert.deepEqual(flatten(ix, size + 200), model(size + 200, ops));
      // visit() over random windows agrees with the table.
      const t = ix.toTable();
      const seen: number[][] = [];
      ix.visit(100, 2000, (o, l, m, z) => seen.push([o, l, z ? -1 : m]));
      const want: number[][] = [];
      for (let i = 0; i < t.count; i++) {
        const a = Math.max(100, t.offset[i]!);
        const b = Math.min(2000, t.end(i));
        if (a < b) want.push([a, b - a, t.zeroed[i] ? -1 : t.moffset[i]! + (a - t.offset[i]!)]);
      }
      assert.deepEqual(seen, want);
    }),
    { numRuns: 60 },
  );
});

test('level-0 handles many small sequential and random writes', () => {
  const ix = new Level0Index();
  for (let i = 0; i < 5000; i++) ix.insert(i * 8, 8, 8 + i * 8, false);
  assert.equal(ix.count, 5000);
  // One write covering everything collapses the index.
  ix.insert(0, 40000, 123456, false);
  assert.deepEqual(list(ix), [[0, 40000, 123456]]);
  ix.insert(4, 8, 7, true);
  assert.deepEqual(ix.toTable().toArray().map((m) => [m.offset, m.length, m.moffset, m.zeroed]), [
    [0, 4, 123456, false],
    [4, 8, 7, true],
    [12, 39988, 123468, false],
  ]);
});

test('level-0 equals the model with thousands of entries over many chunks', async () => {
  const { prng } = await import('./helpers.ts');
  const rnd = prng(42);
  const size = 60000;
  const ops: [number, number, number, boolean][] = [];
  const ix = new Level0Index();
  for (let i = 0; i < 20000; i++) {
    // Mostly tiny writes (many entries), sometimes a wide one erasing entries across chunks.
    const wide = rnd(500) === 0;
    const o = rnd(size);
    const l = wide ? 1 + rnd(8000) : 1 + rnd(4);
    const op: [number, number, number, boolean] = [o, l, 8 + i * 10, rnd(7) === 0];
    ops.push(op);
    ix.insert(...op);
  }
  assert.ok(ix.count > 2000, `expected many entries, got ${ix.count}`);
  assert.deepEqual(flatten(ix, size + 8000), model(size + 8000, ops));
});

/** The log of `ops` as Level0Index.fromLog takes it. */
function entryLog(ops: [number, number, number, boolean][]) {
  const n = ops.length;
  const log = { n, offset: new Float64Array(n), length: new Uint32Array(n), moffset: new Float64Array(n), zeroed: new Uint8Array(n) };
  ops.forEach(([o, l, m, z], i) => {
    log.offset[i] = o;
    log.length[i] = l;
    log.moffset[i] = m;
    log.zeroed[i] = z ? 1 : 0;
  });
  return log;
}

const entries = (ix: Level0Index) => ix.toTable().toArray().map((m) => [m.offset, m.length, m.moffset, m.zeroed]);

/** entryLog(ops) with the sort keys packed as an index replay packs them, for `capacity` (>= n) entries. */
function keyedLog(ops: [number, number, number, boolean][], capacity: number) {
  const log = entryLog(ops);
  const scale = sortKeyScale(capacity);
  const keys = new Float64Array(capacity);
  ops.forEach(([o], i) => (keys[i] = o * scale + i));
  return { ...log, sortKeys: { keys, scale, maxOffset: Math.max(0, ...ops.map(([o]) => o)) } };
}

test('level-0 built from a log in one sweep equals inserting the log entry by entry', () => {
  const size = 3000;
  // Narrow ranges make equal offsets, nested and chained overlaps common.
  const op = fc.tuple(fc.nat(size - 1), fc.integer({ min: 1, max: 300 }), fc.nat(1_000_000), fc.boolean());
  fc.assert(
    fc.property(fc.array(op, { minLength: 0, maxLength: 1500, size: 'max' }), (ops) => {
      const ix = new Level0Index();
      for (const [o, l, m, z] of ops) ix.insert(o, l, m, z);
      const bulk = Level0Index.fromLog(entryLog(ops));
      assert.deepEqual(entries(bulk), entries(ix));
      assert.equal(bulk.count, ix.count);
      // Keys packed by the reader (room for padding entries it skipped: capacity > n) sort the same.
      assert.deepEqual(entries(Level0Index.fromLog(keyedLog(ops, ops.length + (ops.length % 7)))), entries(ix));
      // Inserts after a bulk build (a reopened writable layer taking writes) stay equal too.
      for (const [o, l, m, z] of ops.slice(0, 200)) {
        ix.insert(o + 7, l, m + 1, !z);
        bulk.insert(o + 7, l, m + 1, !z);
      }
      assert.deepEqual(entries(bulk), entries(ix));
    }),
    { numRuns: 80 },
  );
});

test('level-0 from a log: offsets too large to pack with the log position fall back to inserts', () => {
  // Sectors near the largest disk (2^44) times 1024 positions pass 2^53.
  const big = 2 ** 44 - 10_000;
  const ops: [number, number, number, boolean][] = [[big, 10, 8, false], [big + 5, 10, 100, false], [0, 4, 200, true]];
  for (let i = 0; i < 600; i++) ops.push([(i * 7919) % 5000, 1 + (i % 9), 300 + i, i % 5 === 0]);
  const ix = new Level0Index();
  for (const [o, l, m, z] of ops) ix.insert(o, l, m, z);
  assert.deepEqual(entries(Level0Index.fromLog(entryLog(ops))), entries(ix));
  assert.deepEqual(entries(Level0Index.fromLog(keyedLog(ops, ops.length))), entries(ix));
});
