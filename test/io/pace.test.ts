import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MemorySource } from '../../src/io/memory.ts';
import { PacedSource, Pacer } from '../../src/io/pace.ts';

test('a pacer holds a stream to its rate past the first burst, and 0 means unlimited', async () => {
  const rate = 64 << 20;
  const p = new Pacer(rate);
  const t0 = performance.now();
  for (let i = 0; i < 16; i++) await p.take(1 << 20);
  const ms = performance.now() - t0;
  // 16 MiB at 64 MiB/s, less the burst of max(1 MiB, 50 ms at the rate = 3.2 MiB): ~200 ms.
  assert.ok(ms >= 150 && ms < 2000, `16 MiB at 64 MiB/s took ${ms.toFixed(0)} ms`);
  const free = new Pacer(0);
  const t1 = performance.now();
  for (let i = 0; i < 1024; i++) await free.take(1 << 20);
  assert.ok(performance.now() - t1 < 100);
});

test('an aborted pacer throws the abort reason, also from inside a wait', async () => {
  const ac = new AbortController();
  const p = new Pacer(1 << 20, ac.signal);
  await p.take(1 << 20);
  const why = new Error('stopping');
  const waiting = p.take(8 << 20);
  setTimeout(() => ac.abort(why), 20);
  const t0 = performance.now();
  await assert.rejects(waiting, (e) => e === why);
  assert.ok(performance.now() - t0 < 1000, 'the wait ends at the abort, not after 8 s');
  await assert.rejects(p.take(1), (e) => e === why);
});

test('a paced source reads the same bytes and offers no synchronous path around the pacer', async () => {
  const bytes = new Uint8Array(4096).map((_, i) => i * 7);
  const src = new PacedSource(new MemorySource(bytes, 'm'), new Pacer(1 << 20));
  assert.equal(src.tryReadSync(), undefined);
  const buf = new Uint8Array(100);
  assert.equal(await src.read(buf, 4000), 96);
  assert.deepEqual(buf.subarray(0, 96), bytes.subarray(4000));
});
