import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { FIXTURES, DIGESTS, sha256, zinput8m, zinputOdd } from '../helpers/recipes.ts';
import { FileSource } from '../../src/io/file.ts';
import { MemorySource } from '../../src/io/memory.ts';
import { isZFile, ZFileReader } from '../../src/zfile/reader.ts';
import { openTarEntry } from '../../src/zfile/tar.ts';
import { openZ, readAll, SlowSource, ZFILE_FIXTURES, ZFIXTURES } from './helpers.ts';

const inputs = { zinput8m, zinputOdd };

test('every zfile fixture decodes to the manifest sha256 and reports its layout', async () => {
  for (const [name, [algo, bs, crc, input]] of Object.entries(ZFILE_FIXTURES)) {
    const r = await openZ(path.join(ZFIXTURES, name));
    try {
      assert.equal(r.algorithm, algo, name);
      assert.equal(r.blockSize, bs, name);
      assert.equal(r.crc, crc, name);
      const data = await readAll(r);
      assert.equal(sha256(data), DIGESTS[input], name);
      const info = r.info;
      assert.equal(info.blocks, Math.ceil(data.length / bs));
      assert.equal(info.level, algo === 'zstd' ? 3 : 0);
      assert.equal(info.headerOverwritten, false);
      const report = await r.verify();
      assert.deepEqual(
        { ok: report.ok, crc: report.crcChecked, decoded: report.decoded },
        { ok: true, crc: crc ? info.blocks : 0, decoded: info.blocks },
        name,
      );
    } finally {
      await r.close();
    }
  }
});

test('layer1.lz4bs4.zfile (overwritten header) decodes to layer1.lsmt', async () => {
  const r = await openZ(path.join(FIXTURES, 'lsmt', 'layer1.lz4bs4.zfile'));
  try {
    assert.equal(r.info.headerOverwritten, true);
    assert.equal(r.header.flags, 0x1b);
    assert.ok(r.trailer, 'trailer is read for info');
    assert.deepEqual(await readAll(r), readFileSync(path.join(FIXTURES, 'lsmt', 'layer1.lsmt')));
  } finally {
    await r.close();
  }
});

test('isZFile is true for zfiles only (tar members once unwrapped)', async () => {
  const lz4 = await FileSource.open(path.join(ZFIXTURES, 'zinput-8m.lz4-bs4.zfile'));
  const tar = await FileSource.open(path.join(ZFIXTURES, 'zinput-8m.zstd-bs8.zfile.tar'));
  const lsmt = await FileSource.open(path.join(FIXTURES, 'lsmt', 'layer1.lsmt'));
  try {
    assert.equal(await isZFile(lz4), true);
    assert.equal(await isZFile(tar), false);
    assert.equal(await isZFile((await openTarEntry(tar))!), true);
    assert.equal(await isZFile(lsmt), false);
    assert.equal(await isZFile(new MemorySource(new Uint8Array(10))), false);
    assert.equal(await openTarEntry(lz4), null);
    assert.equal(await openTarEntry(lsmt), null);
  } finally {
    await Promise.all([lz4.close(), tar.close(), lsmt.close()]);
  }
});

test('random reads at any offset and length match the original (every fixture)', async () => {
  for (const [name, [, , , input]] of Object.entries(ZFILE_FIXTURES)) {
    const want = inputs[input]();
    const r = await openZ(path.join(ZFIXTURES, name), { cacheSize: 64 * 1024 });
    try {
      await fc.assert(
        fc.asyncProperty(fc.nat(want.length + 100), fc.nat(200_000), async (off, len) => {
          const buf = Buffer.alloc(len);
          const n = await r.read(buf, off);
          const exp = want.subarray(Math.min(off, want.length), Math.min(off + len, want.length));
          assert.equal(n, exp.length);
          assert.ok(buf.subarray(0, n).equals(exp));
        }),
        { numRuns: 60 },
      );
    } finally {
      await r.close();
    }
  }
});

test('many concurrent overlapping reads over a slow source return the right bytes', async () => {
  const want = zinputOdd();
  const src = new SlowSource(readFileSync(path.join(ZFIXTURES, 'zinput-odd.zstd-bs16.zfile')), 'slow');
  const r = await ZFileReader.open(src, { cacheSize: 4 * 16384 });
  try {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(fc.nat(want.length - 1), fc.integer({ min: 1, max: 40_000 })), { minLength: 1, maxLength: 64 }), async (reqs) => {
        const results = await Promise.all(
          reqs.map(async ([off, len]) => {
            const buf = Buffer.alloc(len);
            const n = await r.read(buf, off);
            return { off, buf: buf.subarray(0, n) };
          }),
        );
        for (const { off, buf } of results) assert.ok(buf.equals(want.subarray(off, off + buf.length)), `read at ${off}`);
      }),
      { numRuns: 40 },
    );
  } finally {
    await r.close();
  }
});

test('sequential small reads decode each block once (cache)', async () => {
  const bytes = readFileSync(path.join(ZFIXTURES, 'zinput-8m.zstd-bs32.zfile'));
  const src = new SlowSource(bytes, 'counted');
  const r = await ZFileReader.open(src);
  const opened = src.reads;
  const want = zinput8m();
  try {
    const buf = Buffer.alloc(4096);
    for (let off = 0; off < 1 << 20; off += 4096) {
      await r.read(buf, off);
      assert.ok(buf.equals(want.subarray(off, off + 4096)));
    }
    // 1 MiB of 4 KiB reads spans 32 blocks of 32 KiB: one source read per block.
    assert.equal(src.reads - opened, 32);
    // Concurrent reads of one block share a single fetch.
    const before = src.reads;
    await Promise.all(Array.from({ length: 8 }, (_, i) => r.read(Buffer.alloc(4096), (2 << 20) + i * 4096)));
    assert.equal(src.reads - before, 1);
  } finally {
    await r.close();
  }
});

test('reads past the end are short or empty; a closed reader refuses reads', async () => {
  const r = await openZ(path.join(ZFIXTURES, 'zinput-odd.zstd-bs16.zfile'));
  const buf = Buffer.alloc(100);
  assert.equal(await r.read(buf, r.size - 10), 10);
  assert.ok(buf.subarray(0, 10).equals(zinputOdd().subarray(r.size - 10)));
  assert.equal(await r.read(buf, r.size), 0);
  assert.equal(await r.read(buf, r.size + 5000), 0);
  await assert.rejects(r.read(buf, -1), { name: 'OutOfRangeError' });
  await r.close();
  await assert.rejects(r.read(buf, 0), { name: 'ClosedError' });
});

test('a large read of a file in the page cache is served synchronously, in runs the file reads synchronously', async () => {
  // 8 MiB of lz4 4K blocks: far more compressed bytes than one synchronous file read takes.
  const r = await openZ(path.join(ZFIXTURES, 'zinput-8m.lz4-bs4.zfile'), { cacheSize: 0 });
  try {
    const buf = Buffer.alloc(r.size);
    assert.equal(r.tryReadSync(buf, 0), r.size);
    assert.ok(buf.equals(zinput8m()));
  } finally {
    await r.close();
  }
});

test('reads over a synchronous source take the promise-free path and match the async path', async () => {
  for (const name of ['zinput-8m.lz4-bs4.zfile', 'zinput-8m.zstd-bs32.zfile']) {
    const bytes = readFileSync(path.join(ZFIXTURES, name));
    const sync = await ZFileReader.open(new MemorySource(bytes, 'sync'));
    const slow = await ZFileReader.open(new SlowSource(bytes, 'async'));
    const want = zinput8m();
    try {
      let seed = 3;
      for (let k = 0; k < 300; k++) {
        seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
        const off = seed % (want.length - 1);
        const len = 1 + (Math.imul(seed, 2654435761) >>> 0) % 100_000;
        const a = Buffer.alloc(len);
        const b = Buffer.alloc(len);
        const n = sync.tryReadSync(a, off);
        assert.equal(n, Math.min(len, want.length - off), `sync read [${off}, +${len}) of ${name}`);
        assert.equal(await slow.read(b, off), n);
        assert.ok(a.subarray(0, n).equals(want.subarray(off, off + n)));
        assert.ok(b.subarray(0, n).equals(want.subarray(off, off + n)));
      }
      // A read whose block is being fetched asynchronously defers to read().
      const fresh = await ZFileReader.open(new SlowSource(bytes, 'fresh'));
      const pending = fresh.read(Buffer.alloc(10), 7_000_000);
      assert.equal(fresh.tryReadSync(Buffer.alloc(10), 7_000_000), undefined);
      await pending;
      await fresh.close();
    } finally {
      await sync.close();
      await slow.close();
    }
  }
});
