/** Byte-exact checks against the reference fixtures: commit, replayed writes, merge. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, readFile } from 'node:fs/promises';
import { openLayerFile, openStack } from '../../src/image/open.ts';
import { MemorySink, MemorySource } from '../../src/io/memory.ts';
import { commitLayer, commitWritable } from '../../src/lsmt/commit.ts';
import { flattenStack } from '../../src/lsmt/flatten.ts';
import { ENTRY_SIZE, decodeEntry, INVALID_OFFSET } from '../../src/lsmt/format.ts';
import { openSealedLayer } from '../../src/lsmt/sealed.ts';
import { Stack } from '../../src/lsmt/stack.ts';
import { WritableLayer } from '../../src/lsmt/writable.ts';
import { ZFileWriter } from '../../src/zfile/writer.ts';
import { DIGESTS } from '../helpers/recipes.ts';
import { LSMT, deviceDigest, inDir, loadOps, replay } from './helpers.ts';
import { tempDir, withTempDir } from '../helpers/temp.ts';

const U3 = 'a3a3a3a3-0000-4000-8000-000000000003';
const U2 = 'a2a2a2a2-0000-4000-8000-000000000002';

test('committing layer3-rw with the fixture uuids gives a file identical to layer3.lsmt', async () => {
  await withTempDir(async (dir) => {
    const t = inDir(dir);
    const out = t.file('layer3.lsmt');
    const stats = await commitLayer(LSMT('layer3-rw.data'), LSMT('layer3-rw.index'), out, { uuid: U3, parentUuid: U2 });
    assert.deepEqual(await readFile(out), await readFile(LSMT('layer3.lsmt')));
    assert.equal(stats.fileSize, (await readFile(out)).length);
    // The sink form streams the same bytes.
    const sink = new MemorySink();
    await commitLayer(LSMT('layer3-rw.data'), LSMT('layer3-rw.index'), sink, { uuid: U3, parentUuid: U2 });
    assert.deepEqual(Buffer.from(sink.bytes()), await readFile(LSMT('layer3.lsmt')));
  }, 'obd-snap-');
});

test('commit defaults: null uuid and the data file parent; user tag recorded', async () => {
  const sink = new MemorySink();
  const s = await commitLayer(LSMT('layer3-rw.data'), LSMT('layer3-rw.index'), sink, { userTag: 'snapshot of monday' });
  assert.equal(s.uuid, '00000000-0000-0000-0000-000000000000');
  assert.equal(s.parentUuid, U2.toUpperCase());
  const l = await openSealedLayer(new MemorySource(sink.bytes(), 'c'));
  assert.equal(l.header.userTag, 'snapshot of monday');
  assert.equal(l.trailer.userTag, 'snapshot of monday');
  await assert.rejects(commitLayer(LSMT('layer3-rw.data'), LSMT('layer3-rw.index'), new MemorySink(), { userTag: 'x'.repeat(257) }), /at most 256/);
  await assert.rejects(commitLayer(LSMT('layer3-rw.data'), LSMT('layer3-rw.index'), new MemorySink(), { uuid: 'nope' }), /not a UUID/);
});

test('the writable pair on top of layer1+layer2 reads with the manifest digest', async () => {
  const lower = await openStack([LSMT('layer1.lsmt'), LSMT('layer2.lsmt')]);
  const w = await WritableLayer.open(LSMT('layer3-rw.data'), LSMT('layer3-rw.index'), { lower, readOnly: true });
  try {
    assert.equal(w.layerCount, 3);
    assert.equal(w.size, 67108864);
    assert.equal(await deviceDigest(w), DIGESTS.layer123);
    assert.equal(await deviceDigest(w, 3 * 4096 + 512), DIGESTS.layer123);
    // Extents: the upper's own ranges report layer 2, the rest comes from the lowers.
    const ex = await w.extents(0, w.size);
    assert.equal(ex.reduce((a, e) => a + e.length, 0), w.size);
    assert.ok(ex.some((e) => e.layer === 2 && e.kind === 'data'));
    assert.ok(ex.some((e) => e.layer === 2 && e.kind === 'zero'));
    assert.ok(ex.some((e) => e.layer === 0 && e.kind === 'data'));
    await assert.rejects(w.write(new Uint8Array(512), 0), /read-only/);
  } finally {
    await w.close();
  }
  const alone = await WritableLayer.open(LSMT('layer3-rw.data'), LSMT('layer3-rw.index'), { readOnly: true });
  try {
    assert.equal(alone.layerCount, 1);
    assert.equal(await deviceDigest(alone), DIGESTS.layer3alone);
  } finally {
    await alone.close();
  }
});

test('replaying ops.json into fresh writable layers reproduces every layer byte for byte', async () => {
  const ops = await loadOps();
  await withTempDir(async (dir) => {
    const t = inDir(dir);
    const stackDigest = { '1': DIGESTS.layer1, '2': DIGESTS.layer12, '3': DIGESTS.layer123 } as const;
    for (const n of ['1', '2', '3'] as const) {
      const L = ops.layers[n]!;
      const below = ['1', '2', '3'].slice(0, Number(n) - 1).map((k) => LSMT(`layer${k}.lsmt`));
      const lower = below.length ? await openStack(below) : undefined;
      const data = t.file(`l${n}.data`);
      const index = t.file(`l${n}.index`);
      const w = await WritableLayer.create(data, index, { virtualSize: ops.virtual_size, uuid: L.uuid, parentUuid: L.parent_uuid, lower });
      try {
        await replay(w, L.ops);
        await w.flush();
        assert.equal(await deviceDigest(w), stackDigest[n], `stack up to layer ${n}`);
      } finally {
        await w.close();
      }
      if (n === '3') {
        assert.deepEqual(await readFile(data), await readFile(LSMT('layer3-rw.data')), 'data file as the reference wrote it');
        assert.deepEqual(await readFile(index), await readFile(LSMT('layer3-rw.index')), 'index file as the reference wrote it');
      }
      // Reopened alone it reads as the layer alone; committed it is the reference's file.
      const again = await WritableLayer.open(data, index, { readOnly: true });
      try {
        assert.equal(await deviceDigest(again), L.sha256_this_layer_alone);
        const out = t.file(`l${n}.lsmt`);
        await commitWritable(again, out, { uuid: L.uuid, parentUuid: L.parent_uuid });
        assert.deepEqual(await readFile(out), await readFile(LSMT(`layer${n}.lsmt`)), `layer${n}.lsmt`);
        if (n === '1') {
          // Streamed through the ZFile writer as `overlaybd-commit -z` does: the reference's bytes.
          const zw = await ZFileWriter.create(t.file('l1.zfile'), { algorithm: 'lz4', blockSize: 4096, crc: true, overwriteHeader: true });
          await commitWritable(again, zw, { uuid: L.uuid, parentUuid: L.parent_uuid });
          await zw.finish();
          assert.deepEqual(await readFile(t.file('l1.zfile')), await readFile(LSMT('layer1.lz4bs4.zfile')), 'layer1.lz4bs4.zfile');
        }
      } finally {
        await again.close();
      }
    }
  }, 'obd-snap-');
});

test('merging layer1+2+3 gives one layer that reads as the stack, tagged top-first', async (ctx) => {
  const files = ['layer1.lsmt', 'layer2.lsmt', 'layer3.lsmt'].map(LSMT);
  const stack = await openStack(files);
  const t = inDir(await tempDir(ctx, 'obd-snap-'));
  try {
    const out = t.file('merged.lsmt');
    const s = await flattenStack(stack, out);
    assert.equal(s.layers, 3);
    assert.equal(s.uuid, '00000000-0000-0000-0000-000000000000');
    assert.equal(s.parentUuid, '00000000-0000-0000-0000-000000000000');
    const merged = await openStack([out]);
    try {
      assert.equal(merged.size, 67108864);
      assert.equal(await deviceDigest(merged), DIGESTS.layer123);
    } finally {
      await merged.close();
    }
    // On-disk tags are the source positions counted from the top, as overlaybd-merge writes.
    const l = await openLayerFile(out);
    const raw = await readFile(out);
    await l.source.close();
    const dv = new DataView(raw.buffer, raw.byteOffset + l.trailer.indexOffset, l.trailer.indexSize * ENTRY_SIZE);
    const tags = new Map<number, number>();
    for (let i = 0; i < l.trailer.indexSize; i++) {
      const e = decodeEntry(dv, i * ENTRY_SIZE);
      if (e.offset !== INVALID_OFFSET) tags.set(e.offset, e.tag);
    }
    for (let i = 0; i < stack.index.count; i++) {
      const tag = tags.get(stack.index.offset[i]!);
      if (tag !== undefined) assert.equal(tag, 2 - stack.index.layer[i]!, `entry at sector ${stack.index.offset[i]}`);
    }
    assert.ok(new Set(tags.values()).size === 3, 'entries from all three layers');
    // Merging two layers keeps the bottom layer's parent; a merge of 2+3 sits on layer 1.
    const upper = await openStack(files.slice(1));
    const sink = new MemorySink();
    const s23 = await flattenStack(upper.layers, sink, { uuid: 'b0b0b0b0-0000-4000-8000-000000000023' });
    assert.equal(s23.parentUuid, 'A1A1A1A1-0000-4000-8000-000000000001');
    const both = new Stack([(await openStack([files[0]!])).layers[0]!, await openSealedLayer(new MemorySource(sink.bytes(), 'merged-2-3'))], { verifyChain: true });
    assert.equal(await deviceDigest(both), DIGESTS.layer123);
    await both.close();
    await upper.close();
  } finally {
    await stack.close();
  }
});

test('merge reads compressed layers too (layer1 as the lz4 zfile)', async () => {
  const stack = await openStack([LSMT('layer1.lz4bs4.zfile'), LSMT('layer2.lsmt'), LSMT('layer3.lsmt')]);
  try {
    const sink = new MemorySink();
    await flattenStack(stack, sink);
    const merged = new Stack([await openSealedLayer(new MemorySource(sink.bytes(), 'merged'))]);
    assert.equal(await deviceDigest(merged), DIGESTS.layer123);
  } finally {
    await stack.close();
  }
});

test('a copied writable pair accepts more writes on top of its lowers and keeps them', async () => {
  await withTempDir(async (dir) => {
    const t = inDir(dir);
    const data = t.file('rw.data');
    const index = t.file('rw.index');
    await copyFile(LSMT('layer3-rw.data'), data);
    await copyFile(LSMT('layer3-rw.index'), index);
    const lower = await openStack([LSMT('layer1.lsmt'), LSMT('layer2.lsmt')]);
    const w = await WritableLayer.open(data, index, { lower, ownsLower: false });
    const expect = new Uint8Array(w.size);
    await w.read(expect, 0);
    const patch = Buffer.from('hello, overlaybd: unaligned bytes over three layers');
    await w.write(patch, 4194304 + 100);
    expect.set(patch, 4194304 + 100);
    await w.trim(8388608 + 7, 5000);
    expect.fill(0, 8388608 + 7, 8388608 + 5007);
    await w.close();
    const again = await WritableLayer.open(data, index, { lower });
    try {
      const got = new Uint8Array(again.size);
      await again.read(got, 0);
      assert.ok(Buffer.from(got).equals(Buffer.from(expect)));
    } finally {
      await again.close();
    }
  }, 'obd-snap-');
});
