import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { FIXTURES, zinput8m } from '../helpers/recipes.ts';
import { ForwardingSource } from '../../src/io/forwarding.ts';
import { MemorySource } from '../../src/io/memory.ts';
import { ZFileReader } from '../../src/zfile/reader.ts';
import { openTarEntry } from '../../src/zfile/tar.ts';
import { HT_SPACE, parseHeader, rawCrc32c, serializeHeader, ZFileChecksumError, ZFileFormatError } from '../../src/zfile/format.ts';
import { ChecksumError, FormatError } from '../../src/io/errors.ts';
import { openZ, readAll, ZFIXTURES } from './helpers.ts';

const LZ4 = readFileSync(path.join(ZFIXTURES, 'zinput-8m.lz4-bs4.zfile'));
const NOCRC = readFileSync(path.join(ZFIXTURES, 'zinput-8m.lz4-bs4-nocrc.zfile'));
const ZSTD = readFileSync(path.join(ZFIXTURES, 'zinput-8m.zstd-bs32.zfile'));
const TAR = readFileSync(path.join(ZFIXTURES, 'zinput-8m.zstd-bs8.zfile.tar'));
const LAYER = readFileSync(path.join(FIXTURES, 'lsmt', 'layer1.lz4bs4.zfile'));

function flip(src: Uint8Array, at: number, mask = 0x40): Buffer {
  const b = Buffer.from(src);
  b[at]! ^= mask;
  return b;
}

/** Rewrites the trailer of a copy with `patch` applied, digest recomputed. */
function patchTrailer(src: Uint8Array, patch: (h: ReturnType<typeof parseHeader>) => void): Buffer {
  const b = Buffer.from(src);
  const at = b.length - HT_SPACE;
  const h = parseHeader(b.subarray(at), 'x', at);
  patch(h);
  serializeHeader(h, b.subarray(at));
  return b;
}

async function openErr(bytes: Uint8Array): Promise<unknown> {
  try {
    const r = await openZ(bytes);
    await r.close();
  } catch (e) {
    return e;
  }
  assert.fail('open succeeded on a damaged file');
}

test('a flipped byte inside a block is a block-crc error naming the block and its offset', async () => {
  const probe = await openZ(LZ4);
  const { offset, length } = probe.blockRange(1500);
  await probe.close();
  const r = await openZ(flip(LZ4, offset + Math.floor(length / 2)));
  try {
    const buf = Buffer.alloc(4096);
    await assert.rejects(r.read(buf, 1500 * 4096 + 100), (e: unknown) => {
      assert.ok(e instanceof ZFileChecksumError && e instanceof ChecksumError);
      assert.equal(e.kind, 'block-crc');
      assert.equal(e.block, 1500);
      assert.equal(e.offset, offset);
      assert.match(e.message, /mem\.zfile @\d+: block 1500: CRC mismatch/);
      return true;
    });
    // Other blocks still read; a whole-file read fails rather than returning wrong bytes.
    await r.read(buf, 0);
    assert.ok(buf.equals(zinput8m().subarray(0, 4096)));
    await assert.rejects(readAll(r), { kind: 'block-crc' });
    // The CRC stored after the block is itself covered.
    const report = await r.verify();
    assert.equal(report.ok, false);
    assert.equal(report.errorCount, 1);
    assert.equal(report.errors[0]!.block, 1500);
  } finally {
    await r.close();
  }
});

test('a damaged CRC field and a damaged zstd block (CRC on) are both detected', async () => {
  const probe = await openZ(ZSTD);
  const b7 = probe.blockRange(7);
  const b200 = probe.blockRange(200);
  await probe.close();
  const bad = flip(flip(ZSTD, b7.offset + b7.length - 2), b200.offset + 10, 0xff);
  const r = await openZ(bad);
  try {
    const report = await r.verify();
    assert.deepEqual(report.errors.map((e) => [e.block, e.kind]), [
      [7, 'block-crc'],
      [200, 'block-crc'],
    ]);
    const crcOnly = await r.verify({ decode: false });
    assert.equal(crcOnly.errorCount, 2);
    assert.equal(crcOnly.decoded, 0);
  } finally {
    await r.close();
  }
});

test('without CRCs, undecodable blocks are block-decode errors (never short or extra bytes)', async () => {
  const probe = await openZ(NOCRC);
  const { offset } = probe.blockRange(300);
  await probe.close();
  // Truncate block 300's LZ4 stream to a literal run that claims more bytes than exist.
  const bad = Buffer.from(NOCRC);
  bad[offset] = 0xf0;
  bad[offset + 1] = 0xff;
  const r = await openZ(bad);
  try {
    await assert.rejects(r.read(Buffer.alloc(4096), 300 * 4096), (e: unknown) => {
      assert.ok(e instanceof ZFileChecksumError);
      assert.equal(e.kind, 'block-decode');
      assert.equal(e.block, 300);
      return true;
    });
  } finally {
    await r.close();
  }
});

test('header digest: a change at byte 400 of the header is refused (is_zfile -1 in the reference)', async () => {
  const e = await openErr(flip(LZ4, 400, 1));
  assert.ok(e instanceof ZFileChecksumError);
  assert.equal(e.kind, 'header-digest');
  assert.match(String(e.message), /header digest mismatch/);
});

test('trailer digest and index CRC are checked', async () => {
  const t = await openErr(flip(LZ4, LZ4.length - 100, 1));
  assert.ok(t instanceof ZFileChecksumError && t.kind === 'header-digest' && /trailer digest/.test(t.message));
  const h = parseHeader(LZ4.subarray(LZ4.length - HT_SPACE), 'x', 0);
  const idx = await openErr(flip(LZ4, h.indexOffset + 4 * 77));
  assert.ok(idx instanceof ZFileChecksumError);
  assert.equal(idx.kind, 'index-crc');
  assert.equal(idx.offset, h.indexOffset);
});

test('a jump table that is self-consistent but wrong is a format error', async () => {
  const h = parseHeader(LZ4.subarray(LZ4.length - HT_SPACE), 'x', 0);
  // Move 10 bytes from block 5 to block 6: sums still match, but the lengths now misplace blocks.
  const moved = Buffer.from(LZ4);
  const dv = new DataView(moved.buffer, moved.byteOffset);
  dv.setUint32(h.indexOffset + 20, dv.getUint32(h.indexOffset + 20, true) - 10, true);
  dv.setUint32(h.indexOffset + 24, dv.getUint32(h.indexOffset + 24, true) + 10, true);
  const fixed = patchTrailer(moved, (t) => (t.indexCrc = rawCrc32c(moved.subarray(h.indexOffset, h.indexOffset + 4 * h.indexSize))));
  const r = await openZ(fixed);
  await assert.rejects(r.read(Buffer.alloc(4096), 5 * 4096), { name: 'ZFileChecksumError', block: 5 });
  await r.close();
  // A length that breaks the sum.
  const grown = Buffer.from(LZ4);
  const gv = new DataView(grown.buffer, grown.byteOffset);
  gv.setUint32(h.indexOffset + 8, gv.getUint32(h.indexOffset + 8, true) + 1, true);
  const e = await openErr(patchTrailer(grown, (t) => (t.indexCrc = rawCrc32c(grown.subarray(h.indexOffset, h.indexOffset + 4 * h.indexSize)))));
  assert.ok(e instanceof ZFileFormatError && e instanceof FormatError);
  assert.equal(e.check, 'index-sum');
});

test('trailer fields that contradict the file are refused with the failed check named', async () => {
  const cases: [string, (t: ReturnType<typeof parseHeader>) => void][] = [
    ['index-size', (t) => (t.indexSize += 1)],
    ['index-size', (t) => (t.originalSize += 4096)],
    ['index-bounds', (t) => (t.indexOffset = LZ4.length)],
    ['index-bounds', (t) => (t.indexOffset = 100)],
    ['block-size', (t) => (t.blockSize = 5000)],
    ['algorithm', (t) => (t.algo = 0)],
    ['dictionary', (t) => (t.useDict = 1)],
    ['index-compressed', (t) => (t.flags |= 0x20)],
    ['trailer-flags', (t) => (t.flags &= ~0x04)],
    ['trailer-flags', (t) => (t.flags |= 0x01)],
  ];
  for (const [check, patch] of cases) {
    const e = await openErr(patchTrailer(LZ4, patch));
    assert.ok(e instanceof ZFileFormatError, `${check}: ${String(e)}`);
    assert.equal(e.check, check, String(e));
    assert.match(e.message, /mem\.zfile @\d+: zfile /);
  }
});

test('truncated and foreign files are refused', async () => {
  for (const bytes of [LZ4.subarray(0, 600), LZ4.subarray(0, LZ4.length - 1), LZ4.subarray(0, 100), new Uint8Array(4096)]) {
    const e = await openErr(bytes);
    assert.ok(e instanceof FormatError || e instanceof ChecksumError, String(e));
  }
  // A source that ends early is a short read, not zeros.
  const r = await ZFileReader.open(new (class extends MemorySource {
    override tryReadSync(): undefined {
      return undefined;
    }
    override async read(buf: Uint8Array, offset: number): Promise<number> {
      return offset > 100_000 && offset < LZ4.length - 20_000 ? 0 : super.read(buf, offset);
    }
  })(LZ4, 'short'));
  await assert.rejects(readAll(r), { name: 'ShortReadError' });
  await r.close();
});

test('an overwritten header stands alone: a damaged trailer does not matter, a damaged header does', async () => {
  const r = await openZ(flip(LAYER, LAYER.length - 300));
  assert.equal(r.trailer, null);
  assert.deepEqual(await readAll(r), readFileSync(path.join(FIXTURES, 'lsmt', 'layer1.lsmt')));
  await r.close();
  const e = await openErr(flip(LAYER, 50));
  assert.ok(e instanceof ZFileChecksumError && e.kind === 'header-digest');
});

test('damaged tar wrappers: bad checksum means "not a tar"; a member past the end is an error', async () => {
  assert.equal(await openTarEntry(new MemorySource(flip(TAR, 10))), null);
  const longer = Buffer.from(TAR);
  longer.write('16 size=9999999\n', 512, 'latin1');
  await assert.rejects(openTarEntry(new MemorySource(longer)), { name: 'ZFileFormatError', check: 'tar-size' });
  const broken = Buffer.from(TAR);
  broken.write('99 size=1', 512, 'latin1');
  await assert.rejects(openTarEntry(new MemorySource(broken)), { name: 'ZFileFormatError', check: 'tar-pax' });
  const cut = TAR.subarray(0, 1000);
  await assert.rejects(openTarEntry(new MemorySource(cut)), { name: 'ZFileFormatError' });
});

test('a bad block read through an evicting source is fetched again (up to 3 times)', async () => {
  const bytes = readFileSync(path.join(ZFIXTURES, 'zinput-8m.lz4-bs4.zfile'));
  const want = zinput8m();
  /** Serves a flipped byte inside block 5 until evicted `healAfter` times. */
  class Flaky extends MemorySource {
    evictions = 0;
    readonly healAfter: number;
    readonly at: number;
    constructor(healAfter: number, at: number) {
      super(bytes, 'flaky');
      this.healAfter = healAfter;
      this.at = at;
    }
    override tryReadSync(): undefined {
      return undefined;
    }
    override async read(buf: Uint8Array, offset: number): Promise<number> {
      const n = await super.read(buf, offset);
      if (this.evictions < this.healAfter && this.at >= offset && this.at < offset + n) buf[this.at - offset] ^= 0x40;
      return n;
    }
    async evict(): Promise<void> {
      this.evictions++;
    }
  }
  const probe = await ZFileReader.open(new MemorySource(bytes));
  const at = probe.blockRange(5).offset + 10;
  const out = Buffer.alloc(4096);
  for (const healAfter of [1, 3]) {
    const src = new Flaky(healAfter, at);
    const r = await ZFileReader.open(src);
    assert.equal(await r.read(out, 5 * 4096), 4096);
    assert.ok(out.equals(want.subarray(5 * 4096, 6 * 4096)));
    assert.equal(src.evictions, healAfter);
  }
  const stuck = new Flaky(99, at);
  const r = await ZFileReader.open(stuck);
  await assert.rejects(r.read(out, 5 * 4096), { name: 'ZFileChecksumError', message: /block 5: CRC mismatch/ });
  assert.equal(stuck.evictions, 3);
});

test('a zfile checks itself through a forwarding wrapper (checkIntegrity): CRCs where stored, else a decode of every block', async () => {
  const probe = await openZ(ZSTD);
  const { offset } = probe.blockRange(200);
  await probe.close();
  const clean = new ForwardingSource(await openZ(ZSTD));
  const bad = new ForwardingSource(await openZ(flip(ZSTD, offset + 10, 0xff)));
  const nocrc = new ForwardingSource(await openZ(NOCRC));
  const plain = new ForwardingSource(new MemorySource(new Uint8Array(10), 'plain'));
  try {
    assert.deepEqual(await clean.checkIntegrity(), { ok: true, detail: `${probe.blockCount} blocks, ${probe.blockCount} CRCs checked` });
    const found = await bad.checkIntegrity();
    assert.equal(found?.ok, false);
    assert.match(found!.detail, /^1 bad blocks: .*block 200: CRC mismatch/);
    const decoded = await nocrc.checkIntegrity();
    assert.equal(decoded?.ok, true);
    assert.match(decoded!.detail, /, 0 CRCs checked, \d+ decoded$/);
    assert.equal(await plain.checkIntegrity(), undefined, 'a source with nothing of its own to check says so');
  } finally {
    for (const s of [clean, bad, nocrc, plain]) await s.close();
  }
});
