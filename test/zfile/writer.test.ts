import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { FIXTURES, R, zinput8m, zinputOdd } from '../helpers/recipes.ts';
import { FileSink } from '../../src/io/sink.ts';
import { MemorySource } from '../../src/io/memory.ts';
import type { ByteSink } from '../../src/io/types.ts';
import { compressFile, decompressFile, ZFileWriter, type ZFileWriterOptions } from '../../src/zfile/writer.ts';
import { CompressPool } from '../../src/zfile/compress-pool.ts';
import { parseHeader, HT_SPACE } from '../../src/zfile/format.ts';
import { openTarEntry, tarHeaderBlocks, TAR_PAYLOAD_OFFSET } from '../../src/zfile/tar.ts';
import { openZ, readAll, ZFIXTURES } from './helpers.ts';
import { withTempDir } from '../helpers/temp.ts';

/** Compresses `data` written in the given chunk sizes and returns the file's bytes. */
async function compress(dir: string, data: Uint8Array, opts: ZFileWriterOptions, chunks: number[] = [data.length]): Promise<Buffer> {
  const out = path.join(dir, `out-${Math.random().toString(36).slice(2)}.zfile`);
  const w = await ZFileWriter.create(out, opts);
  let pos = 0;
  for (let i = 0; pos < data.length; i++) {
    const n = Math.min(chunks[i % chunks.length]! || 1, data.length - pos);
    await w.write(data.subarray(pos, pos + n));
    pos += n;
  }
  const stats = await w.finish();
  const bytes = readFileSync(out);
  assert.equal(stats.outputSize, bytes.length);
  assert.equal(stats.originalSize, data.length);
  assert.equal(w.position, data.length);
  return bytes;
}

test('LZ4 output is byte-identical to the reference fixtures (CRC and no CRC, 1 and 2 threads)', async () => {
  await withTempDir(async (dir) => {
    const input = path.join(dir, 'zinput-8m.bin');
    writeFileSync(input, zinput8m());
    for (const [crc, ref] of [
      [true, 'zinput-8m.lz4-bs4.zfile'],
      [false, 'zinput-8m.lz4-bs4-nocrc.zfile'],
    ] as const) {
      for (const threads of [1, 2]) {
        const out = path.join(dir, `${ref}.${threads}`);
        await compressFile(input, out, { algorithm: 'lz4', blockSize: 4096, crc, threads });
        assert.ok(readFileSync(out).equals(readFileSync(path.join(ZFIXTURES, ref))), `${ref} with ${threads} thread(s)`);
      }
    }
  });
});

test('an LSMT layer streamed into ZFileWriter.forCommit equals layer1.lz4bs4.zfile byte for byte', async () => {
  await withTempDir(async (dir) => {
    const layer = readFileSync(path.join(FIXTURES, 'lsmt', 'layer1.lsmt'));
    const out = path.join(dir, 'layer1.zfile');
    const w = await ZFileWriter.forCommit(out, { algorithm: 'lz4', blockSize: 4096, threads: 2 });
    for (let pos = 0, n = 512; pos < layer.length; pos += n, n = (n * 7) % 100_000 || 512) await w.write(layer.subarray(pos, pos + n));
    const stats = await w.finish();
    assert.equal(stats.blocks, 332);
    assert.ok(readFileSync(out).equals(readFileSync(path.join(FIXTURES, 'lsmt', 'layer1.lz4bs4.zfile'))));
    const viaFile = path.join(dir, 'layer1b.zfile');
    await compressFile(path.join(FIXTURES, 'lsmt', 'layer1.lsmt'), viaFile, { overwriteHeader: true });
    assert.ok(readFileSync(viaFile).equals(readFileSync(out)));
  });
});

test('zstd output has the reference layout, CRC rules and content (bytes depend on libzstd)', async () => {
  await withTempDir(async (dir) => {
    for (const [ref, bs, tar, data] of [
      ['zinput-8m.zstd-bs32.zfile', 32768, false, zinput8m()],
      ['zinput-odd.zstd-bs16.zfile', 16384, false, zinputOdd()],
      ['zinput-8m.zstd-bs8.zfile.tar', 8192, true, zinput8m()],
    ] as const) {
      const ours = await compress(dir, data, { algorithm: 'zstd', blockSize: bs, tar });
      const theirs = readFileSync(path.join(ZFIXTURES, ref));
      const zo = await openZ(ours);
      const zt = await openZ(theirs);
      try {
        assert.deepEqual({ ...zo.header, digest: 0 }, { ...zt.header, digest: 0 }, `${ref} header fields`);
        const { indexOffset: _a, indexCrc: _b, digest: _c, ...tOurs } = zo.trailer!;
        const { indexOffset: _d, indexCrc: _e, digest: _f, ...tTheirs } = zt.trailer!;
        assert.deepEqual(tOurs, tTheirs, `${ref} trailer fields`);
        assert.equal(zo.header.level, 0, 'level 3 is recorded as 0');
        assert.ok((await readAll(zo)).equals(data), `${ref} content`);
        assert.equal((await zo.verify()).ok, true);
        // Nearly every block is the same size as the reference's (libzstd 1.5.4 vs 1.5.7).
        let same = 0;
        for (let i = 0; i < zo.blockCount; i++) if (zo.table.length(i) === zt.table.length(i)) same++;
        assert.ok(same >= zo.blockCount * 0.95, `${ref}: ${same}/${zo.blockCount} block sizes match`);
        if (tar) {
          const payload = (await openTarEntry(new MemorySource(ours)))!;
          assert.equal(payload.base, TAR_PAYLOAD_OFFSET);
          assert.equal(ours.length % 512, 0);
          assert.ok(ours.subarray(ours.length - 1024).every((b) => b === 0));
        }
      } finally {
        await zo.close();
        await zt.close();
      }
    }
  });
});

test('the tar wrapper bytes equal the reference writer output', () => {
  const fixture = readFileSync(path.join(ZFIXTURES, 'zinput-8m.zstd-bs8.zfile.tar'));
  assert.ok(Buffer.from(tarHeaderBlocks(1471695)).equals(fixture.subarray(0, TAR_PAYLOAD_OFFSET)));
});

test('round trip at every block size and algorithm, CRC on and off, odd sizes, any chunking', async () => {
  await withTempDir(async (dir) => {
    const base = Buffer.concat([zinputOdd().subarray(0, 300_000), R('rt', 70_001)]);
    for (const algorithm of ['lz4', 'zstd'] as const) {
      for (const blockSize of [4096, 8192, 16384, 32768, 65536]) {
        for (const crc of [true, false]) {
          const z = await compress(dir, base, { algorithm, blockSize, crc }, [1, 4095, 70_000, 333]);
          const r = await openZ(z);
          try {
            assert.equal(r.blockCount, Math.ceil(base.length / blockSize));
            assert.ok((await readAll(r)).equals(base), `${algorithm} ${blockSize} crc=${crc}`);
          } finally {
            await r.close();
          }
        }
      }
    }
  });
});

test('output is identical for any thread count and write chunking (property)', async () => {
  await withTempDir(async (dir) => {
    const data = Buffer.concat([zinput8m().subarray(3 << 20, (3 << 20) + 2_500_000), R('th', 12_345)]);
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('lz4' as const, 'zstd' as const),
        fc.constantFrom(4096, 16384, 65536),
        fc.array(fc.integer({ min: 1, max: 3_000_000 }), { minLength: 1, maxLength: 5 }),
        async (algorithm, blockSize, chunks) => {
          const one = await compress(dir, data, { algorithm, blockSize, threads: 1 });
          const many = await compress(dir, data, { algorithm, blockSize, threads: 2 }, chunks);
          assert.ok(one.equals(many));
          // One thread, chunked: whole batches compress in place from the caller's buffer, the rest via the batch.
          assert.ok(one.equals(await compress(dir, data, { algorithm, blockSize, threads: 1 }, chunks)));
        },
      ),
      { numRuns: 6 },
    );
  });
});

test('batches go to the workers once they are ready, on this thread before; the output is the same', async () => {
  await withTempDir(async (dir) => {
    const data = zinput8m();
    const one = await compress(dir, data, { algorithm: 'zstd', blockSize: 16384, threads: 1 });
    // A pool that has just started: its workers are not ready, so this thread compresses.
    // Three threads are this one and two workers.
    const fresh = CompressPool.shared(2);
    const early = await compress(dir, data, { algorithm: 'zstd', blockSize: 16384, threads: 3 });
    assert.ok(one.equals(early), 'identical while the workers start');
    await fresh.whenReady();
    const jobs = fresh.jobs;
    const late = await compress(dir, data, { algorithm: 'zstd', blockSize: 16384, threads: 3 });
    assert.ok(one.equals(late), 'identical from the workers');
    assert.ok(fresh.jobs - jobs >= 4, `the ready workers took ${fresh.jobs - jobs} of the 8 batches`);
  });
});

test('empty input gives a valid empty zfile', async () => {
  await withTempDir(async (dir) => {
    const z = await compress(dir, new Uint8Array(0), { algorithm: 'zstd', tar: true });
    const r = await openZ(z);
    assert.equal(r.size, 0);
    assert.equal(r.blockCount, 0);
    assert.equal(await r.read(Buffer.alloc(10), 0), 0);
    assert.equal((await r.verify()).ok, true);
    await r.close();
  });
});

test('incompressible data at 64 KiB blocks stores blocks larger than the block size and reads back', async () => {
  await withTempDir(async (dir) => {
    const data = R('incompressible', 3 * 65536 + 1000);
    for (const algorithm of ['lz4', 'zstd'] as const) {
      const z = await compress(dir, data, { algorithm, blockSize: 65536 });
      const r = await openZ(z);
      try {
        assert.ok(r.table.length(0) > 65536, `${algorithm} stored block is ${r.table.length(0)} bytes`);
        assert.ok((await readAll(r)).equals(data));
        const part = Buffer.alloc(5000);
        await r.read(part, 65536 - 2500);
        assert.ok(part.equals(data.subarray(65536 - 2500, 65536 + 2500)));
      } finally {
        await r.close();
      }
    }
  });
});

test('header overwrite and tar together: header 0x1B with the trailer fields, payload in place', async () => {
  await withTempDir(async (dir) => {
    const data = zinputOdd();
    const z = await compress(dir, data, { algorithm: 'lz4', tar: true, overwriteHeader: true, threads: 2 });
    const payload = z.subarray(TAR_PAYLOAD_OFFSET);
    const h = parseHeader(payload, 'x', 0);
    assert.equal(h.flags, 0x1b);
    assert.equal(h.originalSize, data.length);
    const r = await openZ(z);
    assert.deepEqual({ ...r.trailer!, flags: 0, digest: 0 }, { ...h, flags: 0, digest: 0 });
    assert.ok((await readAll(r)).equals(data));
    await r.close();
    assert.equal(h.indexOffset + 4 * h.indexSize + HT_SPACE + TAR_PAYLOAD_OFFSET + 1024 <= z.length, true);
  });
});

test('compressFile / decompressFile convert files both ways with progress', async () => {
  await withTempDir(async (dir) => {
    const input = path.join(dir, 'in.bin');
    const data = zinputOdd();
    writeFileSync(input, data);
    const seen: number[] = [];
    const st = await compressFile(input, path.join(dir, 'x.tar'), { algorithm: 'zstd', blockSize: 16384, tar: true, onProgress: (d) => seen.push(d) });
    assert.equal(seen.at(-1), data.length);
    assert.equal(st.blocks, 76);
    const back = await decompressFile(path.join(dir, 'x.tar'), path.join(dir, 'back.bin'));
    assert.equal(back.originalSize, data.length);
    assert.ok(readFileSync(path.join(dir, 'back.bin')).equals(data));
    await decompressFile(path.join(ZFIXTURES, 'zinput-8m.zstd-bs8.zfile.tar'), path.join(dir, 'fx.bin'));
    assert.ok(readFileSync(path.join(dir, 'fx.bin')).equals(zinput8m()));
  });
});

test('bad options are refused before any file is created', async () => {
  await withTempDir(async (dir) => {
    const out = path.join(dir, 'never.zfile');
    for (const opts of [{ blockSize: 2048 }, { blockSize: 131072 }, { blockSize: 12288 }, { algorithm: 'lz4' as const, level: 5 }, { algorithm: 'zstd' as const, level: 30 }, { threads: 0 }]) {
      await assert.rejects(ZFileWriter.create(out, opts), { name: 'InvalidArgumentError' }, JSON.stringify(opts));
    }
    assert.throws(() => readFileSync(out), /ENOENT/);
    const stream: ByteSink = { name: 'stream', position: 0, write: async () => {}, close: async () => {} };
    await assert.rejects(ZFileWriter.open(stream, { tar: true }), { name: 'InvalidArgumentError' });
  });
});

test('a writer into a plain stream, and a closed writer refuses writes', async () => {
  await withTempDir(async (dir) => {
    const sink = await FileSink.create(path.join(dir, 's.zfile'));
    const parts: Uint8Array[] = [];
    const stream: ByteSink = {
      name: 'stream',
      get position() {
        return 0;
      },
      write: async (b) => {
        parts.push(Uint8Array.from(b));
        await sink.write(b);
      },
      close: () => sink.close(),
    };
    const w = await ZFileWriter.open(stream, { algorithm: 'zstd', level: 9 });
    const data = zinputOdd();
    await w.write(data);
    await w.close();
    await w.close();
    await assert.rejects(w.write(data), { name: 'ClosedError' });
    const r = await openZ(Buffer.concat(parts));
    assert.equal(r.header.level, 9);
    assert.ok((await readAll(r)).equals(data));
    await r.close();
  });
});

test('a failing sink fails the writer cleanly (workers stopped, later calls rethrow)', async () => {
  for (const threads of [1, 2]) {
    let written = 0;
    const sink: ByteSink = {
      name: 'failing',
      position: 0,
      write: async (b) => {
        written += b.length;
        if (written > 600_000) throw new Error('disk full');
      },
      close: async () => {},
    };
    const w = await ZFileWriter.open(sink, { algorithm: 'zstd', threads });
    const data = R('fail', 1 << 20);
    await assert.rejects(
      (async () => {
        for (let i = 0; i < 40; i++) await w.write(data);
        await w.finish();
      })(),
      /disk full/,
    );
    await assert.rejects(w.write(data), /disk full/);
    await assert.rejects(w.finish(), /disk full/);
    await w.abort();
  }
});
