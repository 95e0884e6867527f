/**
 * Device import against a byte model: random devices whose extents are data, zero or hole at
 * any 512-byte alignment, imported alone, over a base, with a partial plan and with zeroed
 * extents kept; the result stacked on the base always reads as the device.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { MemoryDevice, MemorySink, MemorySource } from '../../src/io/memory.ts';
import type { Extent } from '../../src/io/types.ts';
import { importDevice } from '../../src/lsmt/import.ts';
import { openSealedLayer } from '../../src/lsmt/sealed.ts';
import { Stack } from '../../src/lsmt/stack.ts';
import { readAll } from './helpers.ts';

const SIZE = 96 * 1024;
const op = fc.record({
  kind: fc.constantFrom('data', 'zero-data', 'trim'),
  at: fc.integer({ min: 0, max: SIZE / 512 - 1 }),
  sectors: fc.integer({ min: 1, max: 40 }),
  fill: fc.integer({ min: 1, max: 255 }),
});

async function apply(dev: MemoryDevice, ops: { kind: string; at: number; sectors: number; fill: number }[]): Promise<void> {
  for (const o of ops) {
    const at = o.at * 512;
    const len = Math.min(o.sectors * 512, SIZE - at);
    if (o.kind === 'trim') await dev.trim(at, len);
    else await dev.write(new Uint8Array(len).fill(o.kind === 'data' ? o.fill : 0), at);
  }
}

async function layerOf(sink: MemorySink, name: string) {
  return openSealedLayer(new MemorySource(sink.bytes(), name));
}

test('imports read back as the device, alone, over a base, with a plan of the changes, and with zeros kept', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(op, { maxLength: 12 }), fc.array(op, { maxLength: 12 }), fc.constantFrom(512, 4096, 8192), async (baseOps, changeOps, bs) => {
      const baseDev = new MemoryDevice(SIZE, 'base');
      await apply(baseDev, baseOps);
      const baseSink = new MemorySink();
      await importDevice(baseDev, baseSink, { blockSize: bs });
      const baseLayer = await layerOf(baseSink, 'base.lsmt');
      assert.ok(Buffer.from(await readAll(new Stack([baseLayer], { ownsSources: false }))).equals(Buffer.from(baseDev.bytes)));

      // The device = the base's bytes, then the changes; a fresh device so its extents are
      // exactly what the changes touched (as a qcow2 overlay's are) over the base's.
      const dev = new MemoryDevice(SIZE, 'dev');
      await apply(dev, baseOps);
      await apply(dev, changeOps);
      const want = Buffer.from(dev.bytes);
      const base = new Stack([baseLayer], { ownsSources: false });

      const delta = new MemorySink();
      await importDevice(dev, delta, { base, blockSize: bs });
      assert.ok(Buffer.from(await readAll(new Stack([baseLayer, await layerOf(delta, 'delta')], { ownsSources: false }))).equals(want), 'full delta');

      // A plan of only the changed ranges (what a dirty bitmap gives).
      const touched = new MemoryDevice(SIZE, 'touched');
      await apply(touched, changeOps);
      const plan: Extent[] = [];
      for (const e of await touched.extents(0, SIZE)) if (e.kind !== 'hole') plan.push(...(await dev.extents(e.offset, e.length)));
      const partial = new MemorySink();
      await importDevice(dev, partial, { base, blockSize: bs, plan });
      assert.ok(Buffer.from(await readAll(new Stack([baseLayer, await layerOf(partial, 'partial')], { ownsSources: false }))).equals(want), 'planned delta');

      // keepZeros over the change plan, as a chain layer: zeros hide the base.
      const kept = new MemorySink();
      await importDevice(dev, kept, { blockSize: bs, keepZeros: true, plan });
      assert.ok(Buffer.from(await readAll(new Stack([baseLayer, await layerOf(kept, 'kept')], { ownsSources: false }))).equals(want), 'zeros kept');
    }),
    { numRuns: 60 },
  );
});
