/**
 * The reader's result does not depend on how the input is cut: any chunk sizes (1 byte to
 * 1 MiB) give the same entries and contents, and data pieces are views of the input chunks.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { readTar } from '../../src/tar/reader.ts';
import { tarBytes, type WriteEntry } from '../../src/tar/writer.ts';
import { listOurs, split } from './helpers.ts';
// Cut small (≤ 16 bytes) in some runs: most headers and pieces then span chunks.

const enc = new TextEncoder();
const bytes = (n: number, seed: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 255);

const ENTRIES: WriteEntry[] = [
  { path: './', type: 'dir' },
  { path: 'a/', type: 'dir', mtime: { sec: 5, nsec: 1 } },
  { path: `a/${'l'.repeat(300)}`, type: 'file', data: bytes(200_001, 1), xattrs: { 'user.k': 'v' } },
  { path: 'a/small', type: 'file', data: enc.encode('s') },
  { path: 'a/sparse', type: 'file', sparse: { size: 1 << 22, segments: [{ offset: 4096, bytes: bytes(5000, 2) }, { offset: 1 << 21, bytes: bytes(513, 3) }] } },
  { path: 'a/link', type: 'symlink', linkname: 'small' },
  { path: 'a/hard', type: 'hardlink', linkname: './a/small' },
  ...Array.from({ length: 40 }, (_, i): WriteEntry => ({ path: `a/f${i}`, type: 'file', data: bytes(i * 37, i) })),
];
const ARCHIVE = tarBytes(ENTRIES, { recordSize: 10240 });

test('any chunking gives the same entries and contents', async () => {
  const whole = await listOurs([ARCHIVE]);
  assert.equal(whole.length, ENTRIES.length);
  await fc.assert(
    fc.asyncProperty(fc.array(fc.oneof(fc.integer({ min: 1, max: 16 }), fc.integer({ min: 1, max: 4096 }), fc.integer({ min: 1, max: 1 << 20 })), { minLength: 1, maxLength: 50 }), async (sizes) => {
      assert.deepEqual(await listOurs(split(ARCHIVE, sizes)), whole);
    }),
    { numRuns: 40 },
  );
});

test('one-byte chunks', async () => {
  const small = tarBytes(ENTRIES.filter((e) => (e.data?.length ?? 0) < 10_000));
  assert.deepEqual(await listOurs(split(small, [1])), await listOurs([small]));
});

test('data pieces are views of the input, not copies', async () => {
  const input = ARCHIVE.slice();
  for await (const e of readTar((async function* () { yield input; })())) {
    for await (const { bytes: b } of e.data()) assert.equal(b.buffer, input.buffer);
  }
});

test('unread data is skipped, and data cannot be read after the next entry is asked for', async () => {
  const it = readTar((async function* () { yield* split(ARCHIVE, [700]); })());
  const names: string[] = [];
  let kept: ReturnType<typeof Object> | undefined;
  for await (const e of it) {
    names.push(Buffer.from(e.path).toString().slice(0, 10));
    if (names.length === 3) kept = e;
  }
  assert.equal(names.length, ENTRIES.length);
  assert.equal(names[0], '');
  assert.throws(() => (kept as { data(): unknown }).data(), /before asking for the next entry/);
});

test('a partly read entry: the rest is skipped and the next entry is right', async () => {
  const seen: string[] = [];
  for await (const e of readTar((async function* () { yield* split(ARCHIVE, [1000]); })())) {
    for await (const _ of e.data()) break;
    seen.push(Buffer.from(e.path).toString());
  }
  assert.deepEqual(seen.slice(-2), ['a/f38', 'a/f39']);
});
