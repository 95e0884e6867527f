/** The indirection device under a live disk: held writes, reads during the hold, swaps that drain. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MemoryDevice } from '../../src/io/memory.ts';
import type { BlockDevice } from '../../src/io/types.ts';
import { SwitchDevice } from '../../src/live/switch.ts';

/** A device whose writes finish only when released, to have requests in flight at will. */
function gated(dev: MemoryDevice): { dev: BlockDevice; open: () => void } {
  let release!: () => void;
  let gate = new Promise<void>((r) => (release = r));
  const wrapped: BlockDevice = {
    name: dev.name,
    size: dev.size,
    layerCount: 1,
    writable: true,
    read: (b, o) => dev.read(b, o),
    extents: (o, l) => dev.extents(o, l),
    write: async (b, o) => {
      await gate;
      await dev.write(b, o);
    },
    flush: () => dev.flush(),
    close: () => dev.close(),
  };
  return {
    dev: wrapped,
    open: () => {
      release();
      gate = Promise.resolve();
    },
  };
}

test('quiesce waits for running writes and holds new ones; reads go on; held writes go to the new target', async () => {
  const a = new MemoryDevice(1 << 20, 'a');
  const b = new MemoryDevice(1 << 20, 'b');
  const g = gated(a);
  const sw = new SwitchDevice(g.dev);
  const running = sw.write(new Uint8Array(512).fill(1), 0);
  let quiesced = false;
  const q = sw.quiesce().then(() => (quiesced = true));
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(quiesced, false, 'a running write keeps the switch waiting');
  g.open();
  await running;
  await q;
  let heldDone = false;
  const held = sw.write(new Uint8Array(512).fill(2), 512).then(() => (heldDone = true));
  const buf = new Uint8Array(512);
  await sw.read(buf, 0);
  assert.equal(buf[0], 1, 'reads are served while writes are held');
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(heldDone, false, 'a write issued during the hold waits');
  const { old, drained } = sw.swap(b);
  assert.equal(old, g.dev);
  await drained;
  sw.release();
  await held;
  assert.equal(b.bytes[512], 2, 'the held write went to the new target');
  assert.equal(a.bytes[512], 0);
  assert.equal(sw.target, b);
});

test('swap resolves drained only when requests started on the old target are done', async () => {
  const a = new MemoryDevice(1 << 20, 'a');
  const g = gated(a);
  const sw = new SwitchDevice(g.dev);
  const w = sw.write(new Uint8Array(512).fill(3), 0);
  let drained = false;
  const s = sw.swap(new MemoryDevice(1 << 20, 'b'));
  void s.drained.then(() => (drained = true));
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(drained, false);
  g.open();
  await w;
  await s.drained;
  assert.equal(drained, true);
  assert.equal(a.bytes[0], 3, 'the running write finished on the target it started on');
});
