/** Raw disk images in: non-zero blocks only, or only what differs from a base stack. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { openStack } from '../../src/image/open.ts';
import { ChainError, InvalidArgumentError } from '../../src/io/errors.ts';
import { MemorySink, MemorySource } from '../../src/io/memory.ts';
import { importRaw } from '../../src/lsmt/import.ts';
import { openSealedLayer } from '../../src/lsmt/sealed.ts';
import { Stack } from '../../src/lsmt/stack.ts';
import { DIGESTS } from '../helpers/recipes.ts';
import { LSMT, deviceDigest, inDir, prng, readAll } from './helpers.ts';
import { withTempDir } from '../helpers/temp.ts';

async function layerFrom(sink: MemorySink, name: string) {
  return openSealedLayer(new MemorySource(sink.bytes(), name));
}

test('import keeps only non-zero blocks and reads back as the image (odd size padded)', async () => {
  const size = 3 * 1024 * 1024 + 777;
  const raw = new Uint8Array(size);
  const rnd = prng(5);
  let nonZero = 0;
  for (let b = 0; b < Math.ceil(size / 4096); b++) {
    if (rnd(4) !== 0) continue;
    nonZero++;
    const at = b * 4096;
    // Sometimes a single non-zero byte at the end of the block: still a data block.
    if (rnd(3) === 0) raw[Math.min(size, at + 4096) - 1] = 1;
    else for (let i = at; i < Math.min(size, at + 4096); i++) raw[i] = rnd(256);
  }
  await withTempDir(async (dir) => {
    const t = inDir(dir);
    await writeFile(t.file('disk.raw'), raw);
    const sink = new MemorySink();
    const s = await importRaw(t.file('disk.raw'), sink);
    assert.equal(s.virtualSize, Math.ceil(size / 512) * 512);
    assert.equal(s.dataBlocks, nonZero);
    assert.equal(s.zeroedBlocks, 0);
    assert.equal(s.parentUuid, '00000000-0000-0000-0000-000000000000');
    assert.notEqual(s.uuid, '00000000-0000-0000-0000-000000000000');
    assert.ok(s.dataBytes <= nonZero * 4096);
    const stack = new Stack([await layerFrom(sink, 'imported')]);
    const got = await readAll(stack);
    assert.ok(Buffer.from(got.subarray(0, size)).equals(Buffer.from(raw)));
    assert.ok(got.subarray(size).every((x) => x === 0));
    // A coarser granularity stores more, reads the same.
    const coarse = new MemorySink();
    const c = await importRaw(new MemorySource(raw, 'mem.raw'), coarse, { blockSize: 65536 });
    assert.ok(c.dataBytes >= s.dataBytes);
    assert.ok(Buffer.from((await readAll(new Stack([await layerFrom(coarse, 'c')]))).subarray(0, size)).equals(Buffer.from(raw)));
  }, 'obd-snap-');
});

test('import over a base stores only differing blocks, and zeroes what the image cleared', async () => {
  const full = await openStack(['layer1.lsmt', 'layer2.lsmt', 'layer3.lsmt'].map(LSMT));
  const base = await openStack(['layer1.lsmt', 'layer2.lsmt'].map(LSMT));
  try {
    const image = await readAll(full);
    const baseBytes = await readAll(base);
    const sink = new MemorySink();
    const s = await importRaw(new MemorySource(image, 'disk.raw'), sink, { base });
    assert.equal(s.parentUuid, 'A2A2A2A2-0000-4000-8000-000000000002');
    let differ = 0;
    let cleared = 0;
    for (let at = 0; at < image.length; at += 4096) {
      const a = Buffer.from(image.subarray(at, at + 4096));
      if (a.equals(Buffer.from(baseBytes.subarray(at, at + 4096)))) continue;
      if (a.every((x) => x === 0)) cleared++;
      else differ++;
    }
    assert.equal(s.dataBlocks, differ);
    assert.equal(s.zeroedBlocks, cleared);
    assert.ok(cleared > 0 && differ > 0);
    const delta = await layerFrom(sink, 'delta');
    const stacked = new Stack([...base.layers, delta], { verifyChain: true, ownsSources: false });
    assert.equal(await deviceDigest(stacked), DIGESTS.layer123);
    // The delta is much smaller than the disk's data.
    assert.ok(s.dataBytes < 2 * 1024 * 1024);
  } finally {
    await full.close();
    await base.close();
  }
});

test('import refuses a size mismatch with the base and a bad granularity', async () => {
  const base = await openStack([LSMT('layer1.lsmt')]);
  try {
    await assert.rejects(importRaw(new MemorySource(new Uint8Array(1 << 20), 'small.raw'), new MemorySink(), { base }), (e: Error) => e instanceof ChainError && /differs/.test(e.message));
    await assert.rejects(importRaw(new MemorySource(new Uint8Array(4096), 'x'), new MemorySink(), { blockSize: 1000 }), InvalidArgumentError);
  } finally {
    await base.close();
  }
});
