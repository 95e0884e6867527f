/** Random stacks of in-memory layers against a plain byte-array model. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Stack } from '../../src/lsmt/stack.ts';
import type { ExtentSpec } from '../../src/lsmt/writer.ts';
import { buildLayer } from '../helpers/layers.ts';

const SIZE = 256 * 1024;
const SEC = 512;

/** A layer: disjoint extents in sectors; each either data (filled from a seed) or zeroed. */
const arbLayer = fc
  .array(fc.tuple(fc.integer({ min: 0, max: 64 }), fc.integer({ min: 1, max: 96 }), fc.boolean(), fc.integer({ min: 1, max: 255 })), { maxLength: 12 })
  .map((parts) => {
    const out: { sector: number; sectors: number; zero: boolean; seed: number }[] = [];
    let pos = 0;
    for (const [gap, len, zero, seed] of parts) {
      pos += gap;
      if (pos + len > SIZE / SEC) break;
      out.push({ sector: pos, sectors: len, zero, seed });
      pos += len;
    }
    return out;
  });

function pattern(seed: number, n: number, at: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (seed * 31 + ((at + i) >> 3) * 7) & 0xff || 1;
  return b;
}

test('stack reads equal the byte-array model (property)', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(arbLayer, { minLength: 1, maxLength: 6 }),
      fc.array(fc.tuple(fc.integer({ min: 0, max: SIZE - 1 }), fc.integer({ min: 1, max: 40000 })), { minLength: 1, maxLength: 12 }),
      async (layers, reads) => {
        const model = new Uint8Array(SIZE);
        const opened = [];
        for (const [L, exts] of layers.entries()) {
          const specs: ExtentSpec[] = [];
          for (const e of exts) {
            const off = e.sector * SEC;
            const len = e.sectors * SEC;
            if (e.zero) {
              specs.push({ offset: off, zeroLength: len });
              model.fill(0, off, off + len);
            } else {
              const data = pattern(e.seed + L, len, off);
              specs.push({ offset: off, data });
              model.set(data, off);
            }
          }
          opened.push(await buildLayer({ virtualSize: SIZE }, specs, `layer${L}`));
        }
        const stack = new Stack(opened);
        assert.equal(stack.size, SIZE);
        const whole = new Uint8Array(SIZE);
        await stack.read(whole, 0);
        assert.ok(Buffer.from(whole).equals(Buffer.from(model)), 'whole disk');
        for (const [off, len0] of reads) {
          const len = Math.min(len0, SIZE - off);
          const buf = new Uint8Array(len).fill(0xaa);
          await stack.read(buf, off);
          assert.ok(Buffer.from(buf).equals(Buffer.from(model.subarray(off, off + len))), `read [${off}, +${len})`);
        }
        // extents() covers the range exactly and agrees with the model where it says zero.
        const exts = await stack.extents(0, SIZE);
        let pos = 0;
        for (const e of exts) {
          assert.equal(e.offset, pos);
          pos += e.length;
          if (e.kind !== 'data') assert.ok(model.subarray(e.offset, e.offset + e.length).every((b) => b === 0));
        }
        assert.equal(pos, SIZE);
      },
    ),
    { numRuns: 150 },
  );
});

test('virtual size is the topmost non-zero one', async () => {
  const a = await buildLayer({ virtualSize: 1 << 20 }, []);
  const b = await buildLayer({ virtualSize: 2 << 20 }, []);
  const c = await buildLayer({ virtualSize: 0 }, []);
  assert.equal(new Stack([a, b, c]).size, 2 << 20);
  assert.equal(new Stack([b, a]).size, 1 << 20);
});

test('a failed read settles only after every piece has finished writing into the buffer', async () => {
  const a = await buildLayer({ virtualSize: SIZE }, [{ offset: 0, data: new Uint8Array(4096).fill(1) }], 'a');
  const b = await buildLayer({ virtualSize: SIZE }, [{ offset: 8192, data: new Uint8Array(4096).fill(2) }], 'b');
  let late = false;
  const slow = Object.assign(Object.create(Object.getPrototypeOf(a.source)), a.source, {
    tryReadSync: undefined,
    read: (buf: Uint8Array, off: number) =>
      new Promise<number>((resolve) =>
        setTimeout(() => {
          late = true;
          resolve(a.source.read(buf, off) as unknown as number);
        }, 30),
      ),
  });
  const failing = Object.assign(Object.create(Object.getPrototypeOf(b.source)), b.source, {
    tryReadSync: undefined,
    read: () => Promise.reject(new Error('boom')),
  });
  const stack = new Stack([{ ...a, source: slow }, { ...b, source: failing }]);
  await assert.rejects(stack.read(new Uint8Array(16384), 0), /boom/);
  assert.ok(late, 'the slow piece had finished before the read rejected');
});
