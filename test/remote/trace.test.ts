import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import fc from 'fast-check';
import { crc32c } from '@node-rs/crc32';
import { FormatError } from '../../src/io/errors.ts';
import { decodeTrace, encodeTrace, replayTrace, TRACE_MAGIC, TraceRecorder, TracingSource, traceMode, type TraceRecord } from '../../src/remote/trace.ts';
import { MemorySource } from '../../src/io/memory.ts';
import { tempDir } from '../helpers/temp.ts';

test('trace layout: 24-byte header and records, raw CRC32C over the records', () => {
  const recs: TraceRecord[] = [
    { op: 'R', layer: 2, offset: 4096, count: 65536 },
    { op: 'W', layer: 0, offset: 0, count: 512 },
  ];
  const b = encodeTrace(recs);
  assert.equal(b.length, 24 + 48);
  assert.equal(b.readUInt32LE(0), TRACE_MAGIC);
  assert.equal(b.readBigUInt64LE(8), 48n);
  assert.equal(String.fromCharCode(b[24]!), 'R');
  assert.equal(b.readUInt32LE(28), 2);
  assert.equal(b.readBigUInt64LE(32), 65536n);
  assert.equal(b.readBigInt64LE(40), 4096n);
  // raw CRC (no inversion), seed 0, over the whole record area = standard CRC with ~seed, inverted
  assert.equal(b.readUInt32LE(16), ~crc32c(b.subarray(24), 0xffffffff) >>> 0);
});

test('encode/decode round trip; any damage is detected', () => {
  const rec = fc.record({ op: fc.constantFrom<'R' | 'W'>('R', 'W'), layer: fc.nat(255), offset: fc.nat(2 ** 40), count: fc.nat(2 ** 24) });
  fc.assert(
    fc.property(fc.array(rec, { minLength: 1, maxLength: 20 }), fc.nat(), (recs, at) => {
      const b = encodeTrace(recs);
      assert.deepEqual(decodeTrace(b, 't'), recs.map((r) => ({ ...r })));
      const bad = Buffer.from(b);
      const i = 24 + (at % (bad.length - 24));
      bad[i] ^= 0x01;
      assert.throws(() => decodeTrace(bad, 't'), FormatError);
    }),
  );
  assert.throws(() => decodeTrace(encodeTrace([]).subarray(0, 20), 't'), FormatError);
});

test('trace path modes: missing → off, empty → record, trace → replay', async (t) => {
  const dir = await tempDir(t);
  assert.deepEqual(await traceMode(path.join(dir, 'none')), { mode: 'off' });
  await writeFile(path.join(dir, 'empty'), '');
  assert.deepEqual(await traceMode(path.join(dir, 'empty')), { mode: 'record' });
  await writeFile(path.join(dir, 'tr'), encodeTrace([{ op: 'R', layer: 1, offset: 0, count: 10 }]));
  const m = await traceMode(path.join(dir, 'tr'));
  assert.equal(m.mode, 'replay');
  await writeFile(path.join(dir, 'list'), '/usr/bin/\n');
  await assert.rejects(traceMode(path.join(dir, 'list')), /file-list prefetch/);
});

test('a tracing wrapper keeps the synchronous fast path and eviction of what it wraps, and records both kinds of read', async () => {
  const evicted: number[] = [];
  const inner = new MemorySource(new Uint8Array(8192).fill(5), 'blob');
  const withEvict = Object.assign(inner, { evict: async (o: number) => void evicted.push(o) });
  const rec = new TraceRecorder();
  const t = new TracingSource(withEvict, 3, rec);
  const buf = new Uint8Array(100);
  assert.equal(t.tryReadSync(buf, 10), 100);
  assert.equal(await t.read(buf, 200), 100);
  await t.evict(4096, 4096);
  assert.deepEqual(evicted, [4096]);
  assert.deepEqual(rec.records, [
    { op: 'R', layer: 3, offset: 10, count: 100 },
    { op: 'R', layer: 3, offset: 200, count: 100 },
  ]);
  assert.equal(t.name, 'blob');
  assert.equal(t.size, 8192);
});

test('replaying a record with a huge count reads only what the layer holds, at once (found by the fuzzer)', async () => {
  const layer = new MemorySource(new Uint8Array(3 << 20), 'l0');
  const t0 = performance.now();
  const r = await replayTrace([{ op: 'R', layer: 0, offset: 1 << 20, count: 2 ** 52 }, { op: 'R', layer: 0, offset: 2 ** 40, count: 4096 }], [layer]);
  assert.ok(performance.now() - t0 < 2000, 'replay ends promptly');
  assert.deepEqual(r, { records: 2, bytes: 2 << 20, failed: 0 });
});
