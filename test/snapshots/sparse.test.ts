/** Sparse writable layers (header flag 16, overlaybd-create -s; docs/format.md §2.12). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { open, readFile, stat, writeFile } from 'node:fs/promises';
import { openStack } from '../../src/image/open.ts';
import { commitLayer } from '../../src/lsmt/commit.ts';
import { ENTRY_SIZE, parseHeaderTrailer } from '../../src/lsmt/format.ts';
import { sealLayer } from '../../src/lsmt/seal.ts';
import { WritableLayer } from '../../src/lsmt/writable.ts';
import { obd } from '../helpers/cli.ts';
import { DIGESTS, FILL, R } from '../helpers/recipes.ts';
import { tempDir } from '../helpers/temp.ts';
import { LSMT, deviceDigest, inDir, loadOps, replay } from './helpers.ts';

const M = 1 << 20;
const G = 1 << 30;

/** The writes the reference fixture's sparse layer got (test/fixtures/MANIFEST.md), then a punched hole. */
const FIXTURE_WRITES: [number, Buffer][] = [
  [0, R('sp-a', 64 * 1024)],
  [1 * M, FILL(0x33, 8 * M + 64 * 1024)],
  [20 * M, R('sp-b', 4096)],
  [100 * M, FILL(0x5a, 128 * 1024)],
  [G - 8192, R('sp-c', 8192)],
];
const FIXTURE_HOLE: [number, number] = [100 * M + 32768, 65536];

/** The reference's empty sparse layer: its header, the file spanning the disk, an empty index. */
async function referenceEmptySparse(data: string, index: string): Promise<void> {
  await writeFile(data, await readFile(LSMT('sparse-rw.header')));
  const fh = await open(data, 'r+');
  await fh.truncate(4096 + G);
  await fh.close();
  await writeFile(index, '');
}

test('a sparse layer laid out by the reference, written here, commits to the reference commit byte for byte', async (t) => {
  const d = inDir(await tempDir(t, 'obd-sparse-'));
  await referenceEmptySparse(d.file('sp.data'), d.file('sp.index'));
  const w = await WritableLayer.open(d.file('sp.data'), d.file('sp.index'));
  assert.equal(w.size, G);
  for (const [at, b] of FIXTURE_WRITES) await w.write(b, at);
  await w.trim(...FIXTURE_HOLE);
  await w.close();
  // In place: sector x at byte 4096 + 512·x; the index file is not touched.
  const raw = await open(d.file('sp.data'), 'r');
  const probe = Buffer.alloc(4096);
  await raw.read(probe, 0, 4096, 4096 + 20 * M);
  await raw.close();
  assert.deepEqual(probe, R('sp-b', 4096));
  assert.equal((await stat(d.file('sp.index'))).size, 0);
  assert.equal((await stat(d.file('sp.data'))).size, 4096 + G);
  // Reopened, the mappings come from the file's holes: commit them as overlaybd-commit does.
  await commitLayer(d.file('sp.data'), d.file('sp.index'), d.file('out.lsmt'), { uuid: '5a5a5a5a-0000-4000-8000-00000000005a' });
  assert.deepEqual(await readFile(d.file('out.lsmt')), await readFile(LSMT('sparse.lsmt')));
  // Sealed in place: the trailer's index (flags 22) as the reference writes it, but for the
  // uninitialised rest of its last sector.
  const s = await sealLayer(d.file('sp.data'), d.file('sp.index'));
  const tail = Buffer.alloc(s.fileSize - (4096 + G));
  const fh = await open(d.file('sp.data'), 'r');
  await fh.read(tail, 0, tail.length, 4096 + G);
  await fh.close();
  const ref = await readFile(LSMT('sparse-sealed.tail'));
  assert.equal(tail.length, ref.length);
  const used = s.entries * ENTRY_SIZE;
  const sector = Math.ceil(used / 512) * 512;
  assert.deepEqual(tail.subarray(0, used), ref.subarray(0, used));
  assert.deepEqual(tail.subarray(sector), ref.subarray(sector));
  assert.equal(parseHeaderTrailer(tail.subarray(sector), 'tail', sector).flags, 22);
  // The sealed file and the reference commit read the same, extent for extent.
  const sealed = await openStack([d.file('sp.data')]);
  const committed = await openStack([LSMT('sparse.lsmt')]);
  try {
    const ex = (await committed.extents(0, G)).filter((e) => e.kind === 'data');
    assert.deepEqual((await sealed.extents(0, G)).filter((e) => e.kind === 'data'), ex);
    for (const e of ex) {
      const a = new Uint8Array(e.length);
      const b = new Uint8Array(e.length);
      await sealed.read(a, e.offset);
      await committed.read(b, e.offset);
      assert.deepEqual(a, b);
    }
  } finally {
    await sealed.close();
    await committed.close();
  }
});

test('a sparse upper over layers 1 and 2 replaying layer 3 reads as layer 1+2+3, before and after reopening and committed', async (t) => {
  const d = inDir(await tempDir(t, 'obd-sparse-'));
  const ops = await loadOps();
  const lower = await openStack([LSMT('layer1.lsmt'), LSMT('layer2.lsmt')]);
  const w = await WritableLayer.create(d.file('u.data'), d.file('u.index'), { virtualSize: 0, lower, sparse: true, parentUuid: ops.layers['3']!.parent_uuid });
  // Unaligned writes and trims: partial blocks are completed from below, trims over lower data write zeros.
  await replay(w, ops.layers['3']!.ops);
  assert.equal(await deviceDigest(w), DIGESTS.layer123);
  await w.flush();
  await w.close();
  const lower2 = await openStack([LSMT('layer1.lsmt'), LSMT('layer2.lsmt')]);
  const again = await WritableLayer.open(d.file('u.data'), d.file('u.index'), { lower: lower2, readOnly: true });
  try {
    assert.equal(await deviceDigest(again), DIGESTS.layer123);
  } finally {
    await again.close();
  }
  const r = await obd(['commit', d.file('u.data'), d.file('u.index'), d.file('l3.lsmt'), '--json']);
  assert.equal(r.code, 0, r.stderr);
  const s = await openStack([LSMT('layer1.lsmt'), LSMT('layer2.lsmt'), d.file('l3.lsmt')]);
  try {
    assert.equal(await deviceDigest(s), DIGESTS.layer123);
  } finally {
    await s.close();
  }
});

test('obd create --sparse makes the reference layout; writes land in place; trims without a lower punch holes', async (t) => {
  const d = inDir(await tempDir(t, 'obd-sparse-'));
  const c = await obd(['create', '--sparse', d.file('s.data'), d.file('s.index'), '--size', '8M', '--json']);
  assert.equal(c.code, 0, c.stderr);
  assert.equal(JSON.parse(c.stdout).sparse, true);
  const head = parseHeaderTrailer(await readFile(d.file('s.data')), 's.data', 0);
  assert.equal(head.flags, 19);
  assert.equal(head.virtualSize, 8 * M);
  assert.equal((await stat(d.file('s.data'))).size, 4096 + 8 * M);
  assert.equal((await stat(d.file('s.index'))).size, 0);
  const w = await WritableLayer.open(d.file('s.data'), d.file('s.index'));
  await w.write(FILL(7, 1 << 20), 0);
  await w.write(FILL(9, 100), 5000);
  await w.trim(64 * 1024, 512 * 1024);
  await w.flush();
  const blocks = (await stat(d.file('s.data'))).blocks;
  await w.close();
  // The trimmed range is a hole now: less than the 1 MiB written is allocated.
  assert.ok(blocks * 512 < 4096 + (1 << 20), `${blocks} blocks allocated`);
  const l = await WritableLayer.open(d.file('s.data'), d.file('s.index'), { readOnly: true });
  const b = new Uint8Array(1 << 20);
  await l.read(b, 0);
  await l.close();
  const want = Buffer.from(FILL(7, 1 << 20));
  want.fill(9, 5000, 5100);
  want.fill(0, 64 * 1024, 576 * 1024);
  assert.deepEqual(Buffer.from(b), want);
  // Compaction has nothing to reclaim; resize re-truncates the file.
  const cp = await obd(['compact', d.file('s.data'), d.file('s.index'), '--json']);
  assert.equal(cp.code, 0, cp.stderr);
  assert.equal(JSON.parse(cp.stdout).reclaimed, 0);
  const rs = await obd(['resize', d.file('s.data'), d.file('s.index'), '--size', '16M']);
  assert.equal(rs.code, 0, rs.stderr);
  assert.equal((await stat(d.file('s.data'))).size, 4096 + 16 * M);
  const info = await obd(['rw-info', d.file('s.data'), d.file('s.index'), '--json']);
  assert.equal(info.code, 0, info.stderr);
  assert.equal(JSON.parse(info.stdout).virtualSize, 16 * M);
});
