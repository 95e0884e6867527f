/** The writable layer's edges: bad input, splitting, sizes, write-back, extents, close. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readFileSync, statSync } from 'node:fs';
import { open, readFile, stat, writeFile } from 'node:fs/promises';
import { ChainError, ClosedError, FormatError, InvalidArgumentError, NotFoundError, OutOfRangeError } from '../../src/io/errors.ts';
import { ENTRY_SIZE, HT_SPACE, decodeEntry, parseHeaderTrailer } from '../../src/lsmt/format.ts';
import { Stack } from '../../src/lsmt/stack.ts';
import { WritableLayer } from '../../src/lsmt/writable.ts';
import { buildLayer } from '../helpers/layers.ts';
import { LSMT, inDir, readAll } from './helpers.ts';
import { withTempDir } from '../helpers/temp.ts';

async function entries(indexPath: string) {
  const b = await readFile(indexPath);
  const dv = new DataView(b.buffer, b.byteOffset, b.length);
  const out = [];
  for (let at = HT_SPACE; at + ENTRY_SIZE <= b.length; at += ENTRY_SIZE) out.push(decodeEntry(dv, at));
  return out;
}

test('create writes the reference headers and refuses to replace files', async () => {
  await withTempDir(async (dir) => {
    const t = inDir(dir);
    const w = await WritableLayer.create(t.file('d'), t.file('i'), { virtualSize: 1 << 30, parentUuid: 'a2a2a2a2-0000-4000-8000-000000000002' });
    await w.close();
    const dh = parseHeaderTrailer(await readFile(t.file('d')), 'd', 0);
    const ih = parseHeaderTrailer(await readFile(t.file('i')), 'i', 0);
    assert.equal(dh.flags, 3);
    assert.equal(ih.flags, 1);
    assert.equal(ih.indexOffset, 4096);
    assert.equal(dh.virtualSize, 1 << 30);
    assert.equal(dh.uuid, ih.uuid);
    assert.match(dh.uuid, /^[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[0-9A-F]{4}-[0-9A-F]{12}$/);
    assert.equal(dh.parentUuid, 'A2A2A2A2-0000-4000-8000-000000000002');
    assert.equal((await stat(t.file('d'))).size, 4096);
    await assert.rejects(WritableLayer.create(t.file('d'), t.file('i2'), { virtualSize: 4096 }), InvalidArgumentError);
    await assert.rejects(stat(t.file('i2')), /ENOENT/, 'nothing left behind');
    await assert.rejects(WritableLayer.create(t.file('x'), t.file('d'), { virtualSize: 4096 }), /already exists/);
    await assert.rejects(stat(t.file('x')), /ENOENT/, 'the data file created first is removed again');
    await assert.rejects(WritableLayer.create(t.file('y'), t.file('z'), { virtualSize: 1000 }), /512-byte sectors/);
    await assert.rejects(WritableLayer.create(t.file('y'), t.file('z'), { virtualSize: 4096, uuid: 'xyz' }), (e: Error) => e instanceof InvalidArgumentError && /not a UUID/.test(e.message));
    await assert.rejects(WritableLayer.create(t.file('y'), t.file('y'), { virtualSize: 4096 }), /different files/);
    await (await WritableLayer.create(t.file('d'), t.file('i'), { virtualSize: 8192, overwrite: true })).close();
  }, 'obd-snap-');
});

test('open names the problem: missing, swapped, mismatched, sealed', async () => {
  await withTempDir(async (dir) => {
    const t = inDir(dir);
    await (await WritableLayer.create(t.file('a.d'), t.file('a.i'), { virtualSize: 1 << 20 })).close();
    await (await WritableLayer.create(t.file('b.d'), t.file('b.i'), { virtualSize: 1 << 20 })).close();
    await assert.rejects(WritableLayer.open(t.file('nope'), t.file('a.i')), NotFoundError);
    await assert.rejects(WritableLayer.open(t.file('a.i'), t.file('a.d')), (e: Error) => e instanceof FormatError && /swapped/.test(e.message));
    await assert.rejects(WritableLayer.open(t.file('a.d'), t.file('b.i')), ChainError);
    await assert.rejects(WritableLayer.open(LSMT('layer3.lsmt'), t.file('a.i')), /sealed/);
    const lower = await (await import('../../src/image/open.ts')).openStack([LSMT('layer1.lsmt'), LSMT('layer2.lsmt')]);
    await assert.rejects(WritableLayer.open(t.file('a.d'), t.file('a.i'), { lower, verifyParent: true, ownsLower: false }), /parent uuid 0{8}-.* does not match the uuid A2A2A2A2/);
    const ok = await WritableLayer.open(LSMT('layer3-rw.data'), LSMT('layer3-rw.index'), { lower, verifyParent: true, readOnly: true });
    await ok.close();
    await writeFile(t.file('junk'), Buffer.alloc(8192, 7));
    await assert.rejects(WritableLayer.open(t.file('junk'), t.file('a.i')), /magic/);
  }, 'obd-snap-');
});

test('writes longer than 4 MiB become 4 MiB entries; long trims become ≤16383-sector entries', async () => {
  await withTempDir(async (dir) => {
    const t = inDir(dir);
    const w = await WritableLayer.create(t.file('d'), t.file('i'), { virtualSize: 64 << 20 });
    const big = new Uint8Array(9 << 20).map((_, i) => (i * 7) & 0xff);
    await w.write(big, 1 << 20);
    await w.trim(20 << 20, 20 << 20);
    await w.flush();
    const es = await entries(t.file('i'));
    assert.deepEqual(es.map((e) => [e.offset, e.length, e.moffset, e.zeroed]), [
      [2048, 8192, 8, false],
      [10240, 8192, 8200, false],
      [18432, 2048, 16392, false],
      [40960, 16383, 18440, true],
      [57343, 16383, 18440, true],
      [73726, 8194, 18440, true],
    ]);
    const got = new Uint8Array(9 << 20);
    await w.read(got, 1 << 20);
    assert.ok(Buffer.from(got).equals(Buffer.from(big)));
    await w.close();
  }, 'obd-snap-');
});

test('range checks, read-only and closed layers fail with typed errors', async () => {
  await withTempDir(async (dir) => {
    const t = inDir(dir);
    const w = await WritableLayer.create(t.file('d'), t.file('i'), { virtualSize: 1 << 20 });
    await assert.rejects(w.write(new Uint8Array(10), (1 << 20) - 5), OutOfRangeError);
    await assert.rejects(w.trim(-1, 10), OutOfRangeError);
    await assert.rejects(w.read(new Uint8Array(10), 1 << 20), OutOfRangeError);
    await w.write(new Uint8Array(0), 1 << 20);
    await w.close();
    await w.close();
    await assert.rejects(w.write(new Uint8Array(1), 0), ClosedError);
    await assert.rejects(w.read(new Uint8Array(1), 0), ClosedError);
    await assert.rejects(w.flush(), ClosedError);
    const ro = await WritableLayer.open(t.file('d'), t.file('i'), { readOnly: true });
    assert.equal(ro.writable, false);
    await assert.rejects(ro.trim(0, 512), /read-only/);
    await ro.close();
  }, 'obd-snap-');
});

test('an unsized upper takes the size of its lower and records it in both headers', async () => {
  await withTempDir(async (dir) => {
    const t = inDir(dir);
    const base = new Stack([await buildLayer({ virtualSize: 1 << 20, uuid: 'c1c1c1c1-0000-4000-8000-000000000001' }, [{ offset: 0, data: new Uint8Array(4096).fill(5) }])]);
    await (await WritableLayer.create(t.file('d'), t.file('i'), { virtualSize: 0 })).close();
    const w = await WritableLayer.open(t.file('d'), t.file('i'), { lower: base, ownsLower: false });
    assert.equal(w.size, 1 << 20);
    await w.write(new Uint8Array([1, 2, 3]), 4094);
    const got = await readAll(w);
    assert.deepEqual([...got.subarray(4092, 4098)], [5, 5, 1, 2, 3, 0]);
    await w.close();
    assert.equal(parseHeaderTrailer(await readFile(t.file('d')), 'd', 0).virtualSize, 1 << 20);
    assert.equal(parseHeaderTrailer(await readFile(t.file('i')), 'i', 0).virtualSize, 1 << 20);
    // Reads beyond a smaller lower read zeros.
    const big = await WritableLayer.create(t.file('d2'), t.file('i2'), { virtualSize: 2 << 20, lower: base, ownsLower: false });
    const all = await readAll(big);
    assert.ok(all.subarray(0, 4096).every((b) => b === 5) && all.subarray(4096).every((b) => b === 0));
    const ex = await big.extents(0, 2 << 20);
    assert.deepEqual(ex.map((e) => [e.offset, e.length, e.kind, e.layer]), [
      [0, 4096, 'data', 0],
      [4096, (2 << 20) - 4096, 'hole', -1],
    ]);
    await big.close();
    await base.close();
  }, 'obd-snap-');
});

test('thousands of writes without a flush are written back in the background and all survive close', async () => {
  await withTempDir(async (dir) => {
    const t = inDir(dir);
    const w = await WritableLayer.create(t.file('d'), t.file('i'), { virtualSize: 64 << 20 });
    const n = 9000;
    for (let i = 0; i < n; i++) await w.write(new Uint8Array(512).fill(i & 0xff), ((i * 7919) % 100000) * 512);
    // The background write-back moves entries to the index file without a flush; on a loaded
    // machine its data sync may still be running when the last write returns, so give it time.
    for (let i = 0; i < 400 && !(w.stats().pendingEntries < n); i++) await new Promise((r) => setTimeout(r, 25));
    assert.ok(w.stats().pendingEntries < n);
    assert.ok((await stat(t.file('i'))).size > 4096);
    await w.close();
    assert.equal((await stat(t.file('i'))).size, 4096 + n * 16);
    const r = await WritableLayer.open(t.file('d'), t.file('i'), { readOnly: true });
    const b = new Uint8Array(512);
    await r.read(b, ((8999 * 7919) % 100000) * 512);
    assert.ok(b.every((x) => x === (8999 & 0xff)));
    assert.equal(r.stats().entries, n);
    await r.close();
  }, 'obd-snap-');
});

test('extents report this layer above the lowers and join neighbours', async () => {
  await withTempDir(async (dir) => {
    const t = inDir(dir);
    const base = new Stack([
      await buildLayer({ virtualSize: 1 << 20 }, [
        { offset: 0, data: new Uint8Array(8192).fill(1) },
        { offset: 65536, zeroLength: 4096 },
      ]),
    ]);
    const w = await WritableLayer.create(t.file('d'), t.file('i'), { virtualSize: 1 << 20, lower: base });
    await w.write(new Uint8Array(4096).fill(2), 4096);
    await w.write(new Uint8Array(4096).fill(3), 8192);
    await w.trim(16384, 4096);
    const ex = await w.extents(0, 1 << 20);
    assert.deepEqual(ex.map((e) => [e.offset, e.length, e.kind, e.layer]), [
      [0, 4096, 'data', 0],
      [4096, 8192, 'data', 1],
      [12288, 4096, 'hole', -1],
      [16384, 4096, 'zero', 1],
      [20480, 45056, 'hole', -1],
      [65536, 4096, 'zero', 0],
      [69632, (1 << 20) - 69632, 'hole', -1],
    ]);
    // Sub-range with unaligned ends.
    const part = await w.extents(4000, 200);
    assert.deepEqual(part.map((e) => [e.offset, e.length, e.kind, e.layer]), [
      [4000, 96, 'data', 0],
      [4096, 104, 'data', 1],
    ]);
    await w.close();
  }, 'obd-snap-');
});

test('a small write is in the data file before it resolves, a large one goes through the pool; reads see the last of either', async () => {
  await withTempDir(async (dir) => {
    const t = inDir(dir);
    const w = await WritableLayer.create(t.file('d'), t.file('i'), { virtualSize: 1 << 20 });
    // Every libuv pool thread blocks opening a FIFO nobody writes yet, so nothing queued behind them can run.
    const fifo = t.file('fifo');
    execFileSync('mkfifo', [fifo]);
    const blockers = Array.from({ length: Number(process.env.UV_THREADPOOL_SIZE ?? 4) }, () => open(fifo, 'r'));
    const release = async () => {
      closeSync(openSync(fifo, 'w'));
      for (const b of await Promise.all(blockers)) await b.close();
    };
    const small = new Uint8Array(4096).fill(0x5a);
    const big = new Uint8Array(128 * 1024).fill(0xa5);
    let q: Promise<void>;
    let r: Promise<void>;
    try {
      const p = w.write(small, 8192);
      assert.deepEqual(readFileSync(t.file('d')).subarray(HT_SPACE, HT_SPACE + 4096), Buffer.from(small), 'written before write() returned, without the pool');
      await p;
      q = w.write(big, 0);
      r = w.write(small, 16384);
      await new Promise((resolve) => setTimeout(resolve, 20));
      assert.equal(statSync(t.file('d')).size, HT_SPACE + 4096, 'the 128 KiB write waits for the pool, the small one over it for its range');
    } finally {
      await release();
    }
    await Promise.all([q, r]);
    const all = new Uint8Array(big.length);
    await w.read(all, 0);
    const want = Uint8Array.from(big);
    want.set(small, 16384);
    assert.deepEqual(all, want);
    await w.close();
    const again = await WritableLayer.open(t.file('d'), t.file('i'));
    const back = new Uint8Array(big.length);
    await again.read(back, 0);
    assert.deepEqual(back, want);
    await again.close();
  });
});
