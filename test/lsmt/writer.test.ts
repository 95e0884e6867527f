import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { FileSource } from '../../src/io/file.ts';
import { MemorySink } from '../../src/io/memory.ts';
import { SECTOR } from '../../src/lsmt/format.ts';
import { openSealedLayer } from '../../src/lsmt/sealed.ts';
import { SealedLayerWriter, writeSealedLayer } from '../../src/lsmt/writer.ts';
import { openLayerFile } from '../../src/image/open.ts';
import { FIXTURES, R } from '../helpers/recipes.ts';
import { buildLayer } from '../helpers/layers.ts';
import { withTempDir } from '../helpers/temp.ts';

const L = (n: string) => path.join(FIXTURES, 'lsmt', n);

for (const n of ['layer1.lsmt', 'layer2.lsmt', 'layer3.lsmt']) {
  test(`rewriting ${n}'s extents through the writer reproduces the reference file byte for byte`, async () => {
    const ref = await openSealedLayer(await FileSource.open(L(n)));
    try {
      const sink = new MemorySink();
      const w = new SealedLayerWriter(sink, { virtualSize: ref.virtualSize, uuid: ref.uuid, parentUuid: ref.parentUuid, userTag: ref.trailer.userTag });
      for (const m of ref.index.toArray()) {
        if (m.zeroed) await w.addZeroed(m.offset, m.length);
        else {
          const data = new Uint8Array(m.length * SECTOR);
          await ref.source.read(data, m.moffset * SECTOR);
          await w.addData(m.offset, data);
        }
      }
      await w.finish();
      assert.ok(Buffer.from(sink.bytes()).equals(await readFile(L(n))), 'identical bytes');
    } finally {
      await ref.source.close();
    }
  });
}

for (const n of ['layer1.lsmt', 'layer2.lsmt', 'layer3.lsmt']) {
  test(`addRun with all of ${n}'s extents in one run reproduces the reference file byte for byte`, async () => {
    const ref = await openSealedLayer(await FileSource.open(L(n)));
    try {
      const ms = ref.index.toArray();
      const data: Uint8Array[] = [];
      for (const m of ms) {
        if (m.zeroed) continue;
        const d = new Uint8Array(m.length * SECTOR);
        await ref.source.read(d, m.moffset * SECTOR);
        data.push(d);
      }
      const sink = new MemorySink();
      const w = new SealedLayerWriter(sink, { virtualSize: ref.virtualSize, uuid: ref.uuid, parentUuid: ref.parentUuid, userTag: ref.trailer.userTag });
      const col = (f: (m: (typeof ms)[number]) => number) => ms.map(f);
      await w.addRun(ms.length, col((m) => m.offset), col((m) => m.length), col((m) => (m.zeroed ? 1 : 0)), col(() => 0), Buffer.concat(data));
      await w.finish();
      assert.ok(Buffer.from(sink.bytes()).equals(await readFile(L(n))), 'identical bytes');
    } finally {
      await ref.source.close();
    }
  });
}

test('addRun refuses data that is not the size of its extents, and extents out of order', async () => {
  const w = new SealedLayerWriter(new MemorySink(), { virtualSize: 1 << 20 });
  await assert.rejects(w.addRun(2, [0, 8], [8, 8], [0, 1], [0, 0], new Uint8Array(8 * SECTOR + 512)), /holds 4096 bytes of data, not 4608/);
  await assert.rejects(w.addRun(2, [8, 0], [8, 8], [0, 0], [0, 0], new Uint8Array(16 * SECTOR)), /out of order/);
});

test('writeSealedLayer: layout, identity fields and read-back', async () => {
  await withTempDir(async (dir) => {
    const file = path.join(dir, 'x.lsmt');
    const a = R('writer-a', 20 * 1024 * 1024); // longer than one entry can describe
    const b = R('writer-b', 4096);
    const stats = await writeSealedLayer(
      file,
      { virtualSize: 1 << 30, uuid: 'abcdef01-2345-4678-9abc-def012345678', parentUuid: 'a1a1a1a1-0000-4000-8000-000000000001', userTag: 'my snapshot' },
      [
        { offset: 1 << 29, data: b },
        { offset: 4096, data: a },
        { offset: 100 * 1024 * 1024, zeroLength: 40 * 1024 * 1024 },
      ],
    );
    const bytes = await readFile(file);
    assert.equal(bytes.length, stats.fileSize);
    assert.equal((stats.fileSize - 4096 - stats.indexOffset) % 4096, 0, 'index padded to a 4 KiB multiple');
    assert.equal(stats.dataBytes, a.length + b.length);
    const l = await openLayerFile(file);
    try {
      assert.equal(l.uuid, 'ABCDEF01-2345-4678-9ABC-DEF012345678');
      assert.equal(l.parentUuid, 'A1A1A1A1-0000-4000-8000-000000000001');
      assert.equal(l.trailer.userTag, 'my snapshot');
      assert.equal(l.header.flags, 7);
      assert.equal(l.trailer.flags, 6);
      assert.equal(l.virtualSize, 1 << 30);
      for (let i = 0; i < l.index.count; i++) assert.ok(l.index.length[i]! <= 16383);
      const got = new Uint8Array(a.length);
      await l.source.read(got, 4096);
      assert.ok(Buffer.from(got).equals(a));
      assert.equal(l.index.dataSectors() * 512, a.length + b.length);
      const zeroSectors = l.index.toArray().filter((m) => m.zeroed).reduce((s, m) => s + m.length, 0);
      assert.equal(zeroSectors * 512, 40 * 1024 * 1024);
    } finally {
      await l.source.close();
    }
  }, 'obd-writer-');
});

test('writer refuses overlapping, unaligned and out-of-range extents', async () => {
  const w = new SealedLayerWriter(new MemorySink(), { virtualSize: 1 << 20 });
  await w.addData(8, new Uint8Array(4096));
  await assert.rejects(w.addData(10, new Uint8Array(512)), { name: 'InvalidArgumentError', message: /out of order or overlaps/ });
  await assert.rejects(w.addData(100, new Uint8Array(100)), /not a multiple of 512/);
  await assert.rejects(writeSealedLayer('/tmp/never', { virtualSize: 4096 }, [{ offset: 0, data: new Uint8Array(8192) }]), /past the virtual size/);
  await assert.rejects(writeSealedLayer('/tmp/never', { virtualSize: 4096 }, [{ offset: 1, data: new Uint8Array(512) }]), /not 512-byte aligned/);
  assert.throws(() => new SealedLayerWriter(new MemorySink(), { virtualSize: 1, uuid: 'nope' }), /not a UUID/);
  assert.throws(() => new SealedLayerWriter(new MemorySink(), { virtualSize: 1, userTag: 'x'.repeat(257) }), /at most 256/);
});

test('an empty layer has no index entries and reads as zeros', async () => {
  const l = await buildLayer({ virtualSize: 1 << 20 }, []);
  assert.equal(l.index.count, 0);
  assert.equal(l.indexEntriesOnDisk, 0);
  assert.equal(l.source.size, 8192);
});
