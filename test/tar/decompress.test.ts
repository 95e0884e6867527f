/**
 * Layer compression found by magic: plain, gzip (multi-member, made by gzip(1)), zstd
 * (multi-frame, made by zstd(1)); corrupt or truncated input is a TarDecompressError; the
 * digest tee hashes exactly the decompressed bytes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { decompressed } from '../../src/tar/decompress.ts';
import { HashedStream } from '../../src/convert/hashed.ts';
import { TarDecompressError } from '../../src/tar/errors.ts';
import { tarBytes } from '../../src/tar/writer.ts';
import { listOurs, split } from './helpers.ts';

const DATA = Uint8Array.from({ length: 3_000_000 }, (_, i) => (i % 251) ^ (i >> 13));
const ARCHIVE = tarBytes([{ path: 'a', type: 'file', data: DATA }, { path: 'b', type: 'file', data: DATA.subarray(0, 1000) }]);
const half = ARCHIVE.length >> 1;
const tool = (cmd: string, args: string[], input: Uint8Array): Uint8Array => execFileSync(cmd, args, { input, maxBuffer: 1 << 28 });
const GZIP = Buffer.concat([tool('gzip', ['-c'], ARCHIVE.subarray(0, half)), tool('gzip', ['-c'], ARCHIVE.subarray(half))]);
const ZSTD = Buffer.concat([tool('zstd', ['-c', '-q'], ARCHIVE.subarray(0, half)), tool('zstd', ['-c', '-q'], ARCHIVE.subarray(half))]);

async function all(chunks: Uint8Array[]): Promise<Buffer> {
  const out: Uint8Array[] = [];
  for await (const c of decompressed((async function* () { yield* chunks; })(), { name: 'layer.tar' })) out.push(c);
  return Buffer.concat(out);
}
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

for (const [kind, bytes] of [['plain', ARCHIVE], ['gzip (two members)', GZIP], ['zstd (two frames)', ZSTD]] as const) {
  test(`${kind}: decompressed whole and in small chunks`, async () => {
    assert.equal(sha(await all([bytes])), sha(ARCHIVE));
    assert.equal(sha(await all(split(bytes, [1, 2, 3, 700, 65536]))), sha(ARCHIVE));
    const listed = await listOurs(decompressed((async function* () { yield* split(bytes, [4096]); })()));
    assert.deepEqual(listed.map((l) => l.sha256), [sha(DATA), sha(DATA.subarray(0, 1000))]);
  });
}

test('pieces handed out are not reused by the decompressor', async () => {
  for (const bytes of [GZIP, ZSTD]) {
    const kept: Uint8Array[] = [];
    for await (const c of decompressed((async function* () { yield* split(bytes, [10000]); })())) kept.push(c);
    assert.equal(sha(Buffer.concat(kept)), sha(ARCHIVE));
  }
});

for (const [kind, bytes] of [['gzip', GZIP], ['zstd', ZSTD]] as const) {
  test(`${kind}: truncated or corrupt input is a TarDecompressError`, async () => {
    await assert.rejects(all([bytes.subarray(0, bytes.length - 9)]), TarDecompressError);
    await assert.rejects(all([bytes.subarray(0, 100)]), TarDecompressError);
    const bad = Buffer.from(bytes);
    for (let i = 200; i < 260; i++) bad[i] ^= 0x5a;
    await assert.rejects(all([bad]), TarDecompressError);
  });
}

test('a HashedStream over the decompressed layer: the reader drains the end blocks into the digest', async () => {
  const d = new HashedStream(decompressed((async function* () { yield* split(ZSTD, [50000]); })()));
  const entries = await listOurs(d);
  assert.equal(entries.length, 2);
  assert.equal(d.bytes, ARCHIVE.length, 'every byte passed before finish() had to read any');
  assert.equal(await d.finish(), `sha256:${sha(ARCHIVE)}`);
});
