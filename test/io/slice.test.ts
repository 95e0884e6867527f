/**
 * Checkpointed work (src/io/slice.ts): run in slices it lets other callbacks in between
 * and gives the same result as run at once — for the builders a live snapshot runs on the
 * serving thread (level-0 table, overlay merge, lookup, sealed index decode), on tables
 * large enough to cross many checkpoints.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runSliced, runSync, STEP, type Steps } from '../../src/io/slice.ts';
import { overlayIndex, overlaySteps } from '../../src/live/overlay.ts';
import { Level0Index } from '../../src/lsmt/level0.ts';
import { IndexLookup } from '../../src/lsmt/lookup.ts';
import { mergeIndexes } from '../../src/lsmt/merged-index.ts';
import { MappingTable } from '../../src/lsmt/table.ts';

function* busy(checkpoints: number, msEach: number): Steps<number> {
  for (let i = 0; i < checkpoints; i++) {
    const until = performance.now() + msEach;
    while (performance.now() < until);
    yield;
  }
  return checkpoints;
}

/** Longest gap between turns of a setImmediate ticker (and their count) while `work` runs. */
async function turnsDuring<T>(work: () => Promise<T>): Promise<{ value: T; longest: number; turns: number }> {
  let last = performance.now();
  let longest = 0;
  let turns = 0;
  let on = true;
  const tick = (): void => {
    const now = performance.now();
    longest = Math.max(longest, now - last);
    last = now;
    turns++;
    if (on) setImmediate(tick);
  };
  setImmediate(tick);
  const value = await work();
  on = false;
  longest = Math.max(longest, performance.now() - last);
  return { value, longest, turns };
}

test('runSliced lets other callbacks run between slices of 100 ms of work; runSync does not', async () => {
  const sliced = await turnsDuring(() => runSliced(busy(200, 0.5)));
  assert.equal(sliced.value, 200);
  assert.ok(sliced.turns >= 20, `${sliced.turns} turns of the ticker during the sliced work`);
  assert.ok(sliced.longest < 50, `longest wait of the ticker ${sliced.longest.toFixed(1)} ms (budget 1 ms)`);
  const whole = await turnsDuring(async () => runSync(busy(200, 0.5)));
  assert.ok(whole.longest >= 100, `runSync held the thread ${whole.longest.toFixed(1)} ms`);
});

/** A random sorted, non-overlapping table of n entries over about 8n sectors. */
function randomTable(n: number, seed: number, layer = 0): MappingTable {
  let x = seed;
  const rnd = (k: number): number => {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    return x % k;
  };
  const t = new MappingTable();
  let at = rnd(8);
  for (let i = 0; i < n; i++) {
    const len = 1 + rnd(8);
    t.push(at, len, 1000 + at * 2, rnd(5) === 0, layer);
    at += len + rnd(8);
  }
  return t;
}

function sameTable(a: MappingTable, b: MappingTable): void {
  assert.equal(a.count, b.count);
  for (const k of ['offset', 'length', 'moffset', 'zeroed', 'layer'] as const) assert.deepEqual(a[k].subarray(0, a.count), b[k].subarray(0, b.count), k);
}

test('sliced overlay merge and lookup equal the whole-turn ones and a full merge, across many checkpoints', async () => {
  for (const [nLow, nTop, seed] of [[20 * STEP, 3 * STEP, 1], [STEP / 2, 10 * STEP, 2], [7 * STEP + 3, 1, 3], [0, 4 * STEP, 4]] as const) {
    const lower = randomTable(nLow, seed);
    const top = randomTable(nTop, seed * 7 + 1, 1);
    const whole = overlayIndex(lower, top, 1);
    const sliced = await runSliced(overlaySteps(lower, top, 1), 0);
    sameTable(sliced, whole);
    sameTable(whole, mergeIndexes([lower, top]));
    const a = new IndexLookup(whole);
    const b = await IndexLookup.sliced(whole);
    assert.deepEqual(b.ends, a.ends);
    assert.deepEqual(b.rec, a.rec);
    for (let s = 0; s < whole.offset[whole.count - 1]! + 20; s += 37) assert.equal(b.firstEndingAfter(s), a.firstEndingAfter(s), `sector ${s}`);
  }
});

test('a level-0 index gives the same table in slices as at once', async () => {
  const l0 = new Level0Index();
  const src = randomTable(10 * STEP, 9);
  for (let i = src.count - 1; i >= 0; i--) l0.insert(src.offset[i]!, src.length[i]!, src.moffset[i]!, src.zeroed[i] === 1);
  const whole = l0.toTable(2);
  sameTable(await runSliced(l0.tableSteps(2), 0), whole);
  sameTable(whole, (() => {
    const t = new MappingTable();
    for (let i = 0; i < src.count; i++) t.push(src.offset[i]!, src.length[i]!, src.moffset[i]!, src.zeroed[i] === 1, 2);
    return t;
  })());
});
