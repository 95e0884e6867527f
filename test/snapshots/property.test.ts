/**
 * Model-based property tests: random writes and trims at random byte offsets (issued one by
 * one or many at once) against a plain byte array, with reopen, commit and stacking.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { MemorySink, MemorySource } from '../../src/io/memory.ts';
import { commitWritable } from '../../src/lsmt/commit.ts';
import { flattenStack } from '../../src/lsmt/flatten.ts';
import { openSealedLayer } from '../../src/lsmt/sealed.ts';
import { Stack } from '../../src/lsmt/stack.ts';
import { WritableLayer } from '../../src/lsmt/writable.ts';
import { buildLayer } from '../helpers/layers.ts';
import { inDir, readAll } from './helpers.ts';
import { tempDir, withTempDir } from '../helpers/temp.ts';

const SIZE = 192 * 1024;

type Op = { kind: 'write'; offset: number; length: number; seed: number } | { kind: 'trim'; offset: number; length: number } | { kind: 'flush' } | { kind: 'reopen' };

const range = fc.integer({ min: 0, max: SIZE - 1 }).chain((offset) =>
  fc.record({ offset: fc.constant(offset), length: fc.integer({ min: 1, max: Math.min(SIZE - offset, 40000) }) }),
);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 8, arbitrary: fc.record({ kind: fc.constant('write' as const), seed: fc.nat() }).chain((w) => range.map((r) => ({ ...w, ...r }))) },
  { weight: 2, arbitrary: range.map((r) => ({ kind: 'trim' as const, ...r })) },
  { weight: 1, arbitrary: fc.constant({ kind: 'flush' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'reopen' as const }) },
);

function bytes(seed: number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed | 1;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

/** A lower layer with data over part of the disk, and its bytes. */
async function lowerLayer(): Promise<{ stack: Stack; bytes: Uint8Array }> {
  const content = new Uint8Array(SIZE);
  const d1 = bytes(99, 64 * 1024);
  content.set(d1, 16 * 1024);
  const layer = await buildLayer({ virtualSize: SIZE, uuid: 'c0c0c0c0-0000-4000-8000-000000000001' }, [
    { offset: 16 * 1024, data: d1 },
    { offset: 120 * 1024, zeroLength: 8192 },
  ]);
  return { stack: new Stack([layer]), bytes: content };
}

function runScenario(ops: Op[], withLower: boolean, concurrent: boolean): Promise<void> {
  return withTempDir((dir) => scenarioIn(inDir(dir), ops, withLower, concurrent), 'obd-snap-');
}

async function scenarioIn(t: ReturnType<typeof inDir>, ops: Op[], withLower: boolean, concurrent: boolean): Promise<void> {
  const low = withLower ? await lowerLayer() : undefined;
  const model = low ? low.bytes.slice() : new Uint8Array(SIZE);
  const data = t.file('d');
  const index = t.file('i');
  let w = await WritableLayer.create(data, index, { virtualSize: SIZE, lower: low?.stack, ownsLower: false });
  try {
    let batch: Promise<void>[] = [];
    const settle = async () => {
      await Promise.all(batch);
      batch = [];
    };
    for (const op of ops) {
      if (op.kind === 'write') {
        const b = bytes(op.seed, op.length);
        model.set(b, op.offset);
        const p = w.write(b, op.offset);
        if (concurrent) batch.push(p);
        else await p;
      } else if (op.kind === 'trim') {
        model.fill(0, op.offset, op.offset + op.length);
        const p = w.trim(op.offset, op.length);
        if (concurrent) batch.push(p);
        else await p;
      } else if (op.kind === 'flush') {
        await settle();
        await w.flush();
      } else {
        await settle();
        await w.close();
        w = await WritableLayer.open(data, index, { lower: low?.stack, ownsLower: false });
        assert.equal(w.recovery.droppedEntries, 0);
      }
    }
    await settle();
    assert.ok(Buffer.from(await readAll(w)).equals(Buffer.from(model)), 'reads equal the model');
    // Every extent that claims zero or hole really reads as zero.
    for (const e of await w.extents(0, SIZE)) {
      if (e.kind !== 'data') assert.ok(model.subarray(e.offset, e.offset + e.length).every((x) => x === 0), `extent ${JSON.stringify(e)}`);
    }
    // Commit, then stack the committed layer on the lower: same bytes.
    const sink = new MemorySink();
    await commitWritable(w, sink, { uuid: 'c0c0c0c0-0000-4000-8000-000000000002', parentUuid: low ? 'c0c0c0c0-0000-4000-8000-000000000001' : '' });
    const committed = await openSealedLayer(new MemorySource(sink.bytes(), 'committed'));
    const stacked = new Stack(low ? [low.stack.layers[0]!, committed] : [committed], { verifyChain: true });
    assert.ok(Buffer.from(await readAll(stacked)).equals(Buffer.from(model)), 'committed layer equals the model');
    if (low) {
      const merged = new MemorySink();
      await flattenStack(stacked, merged);
      const flat = new Stack([await openSealedLayer(new MemorySource(merged.bytes(), 'merged'))]);
      assert.ok(Buffer.from(await readAll(flat)).equals(Buffer.from(model)), 'merged layer equals the model');
    }
    await w.close();
    // Reopened read-only after close: still the model.
    const ro = await WritableLayer.open(data, index, { lower: low?.stack, ownsLower: false, readOnly: true });
    assert.ok(Buffer.from(await readAll(ro)).equals(Buffer.from(model)), 'reopened equals the model');
    await ro.close();
  } finally {
    await w.close().catch(() => {});
    await low?.stack.close();
  }
}

test('random unaligned writes and trims equal a byte-array model (sequential)', async () => {
  await fc.assert(fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 40, size: 'max' }), fc.boolean(), (ops, withLower) => runScenario(ops, withLower, false)), {
    numRuns: 40,
  });
});

test('many writes and trims in flight at once apply in issue order', async () => {
  await fc.assert(fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 60, size: 'max' }), fc.boolean(), (ops, withLower) => runScenario(ops, withLower, true)), {
    numRuns: 40,
  });
});

test('concurrent sub-sector writes sharing sectors all land', async (ctx) => {
  const t = inDir(await tempDir(ctx, 'obd-snap-'));
  const w = await WritableLayer.create(t.file('d'), t.file('i'), { virtualSize: 1 << 20 });
  try {
    const model = new Uint8Array(1 << 20);
    const jobs: Promise<void>[] = [];
    // 3-byte writes tiling two sectors: each is a read-modify-write of a shared sector.
    for (let off = 0; off < 1024; off += 3) {
      const b = bytes(off + 1, Math.min(3, 1024 - off));
      model.set(b, off);
      jobs.push(w.write(b, off));
    }
    await Promise.all(jobs);
    assert.ok(Buffer.from(await readAll(w)).equals(Buffer.from(model)));
  } finally {
    await w.close();
  }
});
