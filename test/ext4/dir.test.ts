/** Directories (src/ext4/dir.ts) in memory: linear blocks, the htree's growth, removal, collisions. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Directory, DirCorruptError, FT, type DirEntry, type DirOptions } from '../../src/ext4/dir.ts';
import { dirHash, type HashVersion } from '../../src/ext4/hash.ts';
import { MemBlocks } from './dir-blocks.ts';

const OPTS: DirOptions = { hash: 'half_md4', seed: new Uint32Array([1, 2, 3, 4]), unsigned: false, dirIndex: true };
const te = new TextEncoder();
const key = (n: Uint8Array): string => Buffer.from(n).toString('latin1');

/** Only the top `bits` bits of the real hash survive: many names share each hash. */
class Colliding extends Directory {
  readonly #mask: number;
  constructor(blocks: MemBlocks, opts: DirOptions, bits: number) {
    super(blocks, opts, false);
    this.#mask = bits === 0 ? 0 : (~0 << (32 - bits)) >>> 0;
  }
  protected override hashOf(name: Uint8Array, version: HashVersion, unsigned: boolean): number {
    return (super.hashOf(name, version, unsigned) & this.#mask) >>> 0;
  }
}

async function fresh(opts = OPTS, bs = 4096, collideBits?: number): Promise<{ blocks: MemBlocks; dir: Directory }> {
  const blocks = new MemBlocks(bs);
  await Directory.init(blocks, 20, 2);
  const dir = collideBits === undefined ? new Directory(blocks, opts, false) : new Colliding(blocks, opts, collideBits);
  return { blocks, dir };
}

const u16 = (b: Uint8Array, o: number): number => b[o] | (b[o + 1] << 8);
const u32 = (b: Uint8Array, o: number): number => (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0;

/** Live records of a linear block, checking rec_len rules on the way (an independent reader). */
function records(b: Uint8Array, from = 0): { o: number; name: Uint8Array; ino: number }[] {
  const out = [];
  let o = from;
  while (o < b.length) {
    const r = u16(b, o + 4);
    if (!(r >= 12 && r % 4 === 0 && o + r <= b.length && 8 + b[o + 6] <= r)) assert.fail(`record @${o}: rec_len ${r}`);
    if (u32(b, o) !== 0) out.push({ o, name: b.slice(o + 8, o + 8 + b[o + 6]), ino: u32(b, o) });
    o += r;
  }
  assert.equal(o, b.length, 'records end exactly at the block end');
  return out;
}

/**
 * Checks an htree the way e2fsck's pass 2 does: root header, limits, hash order, every block
 * referenced once, all leaves at one depth, every leaf's hashes within its index range.
 */
function checkTree(blocks: MemBlocks, hashOf: (n: Uint8Array) => number): number {
  const bs = blocks.blockSize;
  const b0 = blocks.blocks[0];
  assert.equal(u16(b0, 16), bs - 12, '".." spans the root');
  assert.equal(u32(b0, 24), 0);
  assert.equal(b0[29], 8, 'info_length');
  const levels = b0[30];
  assert.ok(levels <= 1);
  const refs = new Array(blocks.count).fill(0);
  refs[0] = 1;
  let names = 0;
  const walk = (b: Uint8Array, base: number, lo: number, hi: number, depth: number): void => {
    const n = u16(b, base + 2);
    assert.equal(u16(b, base), (bs - base) / 8, 'limit');
    assert.ok(n >= 1 && n <= u16(b, base));
    for (let i = 0; i < n; i++) {
      const h = i === 0 ? lo : u32(b, base + 8 * i);
      const next = i + 1 < n ? u32(b, base + 8 * (i + 1)) : hi;
      assert.ok(i === 0 || (h & ~1) >>> 0 >= (lo & ~1) >>> 0, 'hash order');
      const blk = u32(b, base + 8 * i + 4);
      assert.ok(blk > 0 && blk < blocks.count);
      refs[blk]++;
      const child = blocks.blocks[blk];
      if (depth < levels) {
        assert.equal(u32(child, 0), 0);
        assert.equal(u16(child, 4), bs);
        walk(child, 8, h, next, depth + 1);
      } else {
        for (const r of records(child)) {
          const rh = hashOf(r.name);
          if (rh < ((h & ~1) >>> 0) || rh > ((next & ~1) >>> 0)) assert.fail(`leaf ${blk}: hash ${rh.toString(16)} outside [${h.toString(16)}, ${next.toString(16)}]`);
          names++;
        }
      }
      lo = h;
    }
  };
  walk(b0, 32, 0, 0xfffffffe, 0);
  assert.deepEqual(refs, new Array(blocks.count).fill(1), 'every block referenced exactly once');
  return names;
}

async function listing(dir: Directory): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for await (const e of dir.entries()) {
    assert.ok(!out.has(key(e.name)), `duplicate ${key(e.name)}`);
    out.set(key(e.name), e.ino);
  }
  return out;
}

test('init writes "." and ".."; a linear block takes entries after them; setParent rewrites ".."', async () => {
  const { blocks, dir } = await fresh();
  assert.equal(blocks.count, 1);
  const b = blocks.blocks[0];
  assert.deepEqual(records(b).map((r) => [key(r.name), r.ino]), [['.', 20], ['..', 2]]);
  assert.equal(u16(b, 4), 12);
  await dir.add({ name: te.encode('a'), ino: 30, fileType: FT.file });
  await dir.add({ name: te.encode('bb'), ino: 31, fileType: FT.dir });
  assert.deepEqual(records(b).map((r) => [key(r.name), r.o]), [['.', 0], ['..', 12], ['a', 24], ['bb', 36]]);
  assert.equal(u16(b, 36 + 4), 4096 - 36, 'the last record reaches the block end');
  assert.deepEqual(await dir.lookup(te.encode('bb')), { name: te.encode('bb'), ino: 31, fileType: FT.dir });
  assert.equal(await dir.lookup(te.encode('b')), undefined);
  assert.equal(await dir.lookup(te.encode('..')), undefined, '"." and ".." are not entries');
  await dir.setParent(99);
  assert.equal(u32(b, 12), 99);
  assert.deepEqual([...(await listing(dir))], [['a', 30], ['bb', 31]]);
});

test('remove merges a record into the one before it, and frees the first record of a block by inode 0', async () => {
  const { blocks, dir } = await fresh({ ...OPTS, dirIndex: false });
  const b0 = blocks.blocks[0];
  await dir.add({ name: te.encode('x'), ino: 30, fileType: FT.file });
  await dir.add({ name: te.encode('y'), ino: 31, fileType: FT.file });
  assert.deepEqual(await dir.remove(te.encode('x')), { name: te.encode('x'), ino: 30, fileType: FT.file });
  assert.equal(u16(b0, 12 + 4), 24, '".." absorbed "x"');
  assert.deepEqual(records(b0).map((r) => key(r.name)), ['.', '..', 'y']);
  assert.equal(await dir.remove(te.encode('x')), undefined);
  // Fill block 0 so that block 1 appears (linear: no index without dir_index).
  for (let i = 0; blocks.count < 2; i++) await dir.add({ name: te.encode(`n${i}`.padEnd(200, '.')), ino: 100 + i, fileType: FT.file });
  assert.equal(dir.indexed, false);
  const b1 = blocks.blocks[1];
  const first = records(b1)[0];
  await dir.remove(first.name);
  assert.equal(u32(b1, 0), 0, 'the first record of block 1 is freed in place');
  assert.equal(u16(b1, 4), 4096, 'and keeps its rec_len');
  const big = te.encode('z'.repeat(250));
  await dir.add({ name: big, ino: 7, fileType: FT.fifo });
  assert.deepEqual(records(b1)[0].name, big, 'a freed first record is reused (block 0 has no room for 250 bytes)');
});

test('a full one-block directory becomes an htree: block 0 the root, its entries split over two leaves', async () => {
  const { blocks, dir } = await fresh();
  const names: Uint8Array[] = [];
  for (let i = 0; blocks.count === 1; i++) {
    const name = te.encode(`file-${i}`.padEnd(40, 'x'));
    names.push(name);
    await dir.add({ name, ino: 100 + i, fileType: FT.file });
  }
  assert.equal(dir.indexed, true);
  assert.equal(blocks.count, 3);
  const b0 = blocks.blocks[0];
  assert.deepEqual(records(b0).map((r) => key(r.name)), ['.', '..']);
  assert.equal(b0[28], 1, 'hash version half_md4');
  assert.equal(u16(b0, 32), 508, 'root limit for 4 KiB blocks');
  assert.equal(u16(b0, 34), 2, 'two leaves');
  assert.deepEqual([u32(b0, 36), u32(b0, 44)], [1, 2]);
  const hashOf = (n: Uint8Array): number => dirHash(n, 'half_md4', OPTS.seed, false).major;
  assert.equal(checkTree(blocks, hashOf), names.length);
  for (const [i, n] of names.entries()) assert.equal((await dir.lookup(n))?.ino, 100 + i);
});

test('growth to an index level and index-node splits keep every name findable (40,000 names)', async () => {
  const { blocks, dir } = await fresh();
  const names: Uint8Array[] = [];
  let seed = 7;
  for (let i = 0; i < 40000; i++) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    const len = 120 + (seed % 136);
    const name = new Uint8Array(len);
    for (let k = 0; k < len; k++) name[k] = 0x21 + ((seed >>> (k % 24)) + k * 7 + i) % 0x5e;
    name.set(te.encode(String(i)));
    names.push(name);
    await dir.add({ name, ino: 12 + i, fileType: FT.file });
  }
  const b0 = blocks.blocks[0];
  assert.equal(b0[30], 1, 'indirect_levels 1');
  assert.ok(u16(b0, 34) >= 3, `root holds several index nodes (${u16(b0, 34)})`);
  const hashOf = (n: Uint8Array): number => dirHash(n, 'half_md4', OPTS.seed, false).major;
  assert.equal(checkTree(blocks, hashOf), names.length);
  for (const [i, n] of names.entries()) assert.equal((await dir.lookup(n))?.ino, 12 + i);
  for (let i = 0; i < names.length; i += 2) assert.equal((await dir.remove(names[i]))?.ino, 12 + i);
  for (const [i, n] of names.entries()) assert.equal((await dir.lookup(n))?.ino, i % 2 ? 12 + i : undefined);
  assert.equal(checkTree(blocks, hashOf), names.length / 2);
});

test('collisions across leaves: runs of one hash continue into the next leaf (continuation bit)', async () => {
  const { blocks, dir } = await fresh(OPTS, 4096, 2);
  const hashOf = (n: Uint8Array): number => (dirHash(n, 'half_md4', OPTS.seed, false).major & 0xc0000000) >>> 0;
  const names = Array.from({ length: 3000 }, (_, i) => te.encode(`c${i}`.padEnd(60 + (i % 50), '-')));
  for (const [i, n] of names.entries()) await dir.add({ name: n, ino: 12 + i, fileType: FT.file });
  let continued = 0;
  const b0 = blocks.blocks[0];
  const walkIndex = (b: Uint8Array, base: number): void => {
    for (let i = 1; i < u16(b, base + 2); i++) if (u32(b, base + 8 * i) & 1) continued++;
  };
  walkIndex(b0, 32);
  if (b0[30] === 1) for (let i = 0; i < u16(b0, 34); i++) walkIndex(blocks.blocks[u32(b0, 36 + 8 * i)], 8);
  assert.ok(continued > 10, `continuation entries: ${continued}`);
  assert.equal(checkTree(blocks, hashOf), names.length);
  for (const [i, n] of names.entries()) assert.equal((await dir.lookup(n))?.ino, 12 + i);
});

test('random add/remove/lookup sequences match a Map model (fast-check, names 1–255 bytes, collisions)', async () => {
  const name = fc.oneof(fc.uint8Array({ minLength: 1, maxLength: 12 }), fc.uint8Array({ minLength: 1, maxLength: 255, size: 'max' })).map((a) => a.map((c) => (c === 0 || c === 0x2f ? 0x41 : c)))
    .filter((a) => !(a.length <= 2 && a.every((c) => c === 0x2e)));
  const op = fc.oneof(
    { weight: 6, arbitrary: fc.record({ kind: fc.constant('add' as const), name }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('remove' as const), pick: fc.nat() }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('lookup' as const), name }) },
  );
  await fc.assert(fc.asyncProperty(
    fc.array(op, { minLength: 1, maxLength: 800, size: 'max' }),
    fc.constantFrom(1024, 4096),
    fc.constantFrom<HashVersion>('legacy', 'half_md4', 'tea'),
    fc.boolean(),
    fc.constantFrom<number | undefined>(undefined, 0, 3),
    async (ops, bs, hash, unsigned, collideBits) => {
      const opts: DirOptions = { hash, seed: undefined, unsigned, dirIndex: true };
      const { blocks, dir } = await fresh(opts, bs, collideBits);
      const model = new Map<string, DirEntry>();
      let ino = 12;
      for (const o of ops) {
        if (o.kind === 'add') {
          if (model.has(key(o.name))) continue;
          const e = { name: o.name, ino: ino++, fileType: ino % 8 };
          await dir.add(e);
          model.set(key(o.name), e);
        } else if (o.kind === 'remove') {
          const keys = [...model.keys()];
          if (keys.length === 0) continue;
          const k = keys[o.pick % keys.length];
          assert.deepEqual(await dir.remove(model.get(k)!.name), model.get(k));
          model.delete(k);
          assert.equal(await dir.lookup(Buffer.from(k, 'latin1')), undefined);
        } else {
          assert.deepEqual(await dir.lookup(o.name), model.get(key(o.name)));
        }
      }
      for (const e of model.values()) assert.deepEqual(await dir.lookup(e.name), e);
      assert.deepEqual(new Map([...(await listing(dir))].sort()), new Map([...model].map(([k, e]) => [k, e.ino] as const).sort()));
      if (dir.indexed) {
        const mask = collideBits === undefined || collideBits === 0 ? (collideBits === 0 ? 0 : 0xffffffff) : (~0 << (32 - collideBits)) >>> 0;
        checkTree(blocks, (n) => (dirHash(n, hash, undefined, unsigned).major & mask) >>> 0);
      }
    },
  ), { numRuns: 60 });
});

test('50,000 entries with names of 1–255 bytes and heavy collisions, then half removed and re-added', async () => {
  const { blocks, dir } = await fresh(OPTS, 4096, 10);
  const rnd = fc.sample(fc.uint8Array({ minLength: 1, maxLength: 255, size: 'max' }), { numRuns: 50000, seed: 42 });
  const model = new Map<string, number>();
  for (const [i, raw] of rnd.entries()) {
    const n = raw.map((c) => (c === 0 || c === 0x2f || c === 0x2e ? 0x5f : c));
    if (model.has(key(n))) continue;
    model.set(key(n), 12 + i);
    await dir.add({ name: n, ino: 12 + i, fileType: FT.file });
  }
  const keys = [...model.keys()];
  for (let i = 0; i < keys.length; i += 2) {
    assert.ok(await dir.remove(Buffer.from(keys[i], 'latin1')));
    model.delete(keys[i]);
  }
  for (let i = 0; i < keys.length; i += 4) {
    await dir.add({ name: Buffer.from(keys[i], 'latin1'), ino: 1 + i, fileType: FT.file });
    model.set(keys[i], 1 + i);
  }
  for (const [k, v] of model) assert.equal((await dir.lookup(Buffer.from(k, 'latin1')))?.ino, v);
  assert.deepEqual(new Map([...(await listing(dir))].sort()), new Map([...model].sort()));
  checkTree(blocks, (n) => (dirHash(n, 'half_md4', OPTS.seed, false).major & 0xffc00000) >>> 0);
});

test('a corrupt record is a DirCorruptError naming the directory and the byte offset', async () => {
  const { blocks, dir } = await fresh();
  await dir.add({ name: te.encode('a'), ino: 30, fileType: FT.file });
  blocks.blocks[0][24 + 4] = 3;
  await assert.rejects(dir.lookup(te.encode('q')), (e: unknown) => e instanceof DirCorruptError && /memdir @24: block 0: bad directory record: rec_len/.test(e.message));
});
