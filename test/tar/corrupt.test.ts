/**
 * Truncated and corrupt archives: a TarFormatError (or TarPathError) naming the offset, never a
 * hang and never another kind of error; an archive cut at a member boundary reads as the
 * members before the cut, as GNU tar, Go and Python read it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { TarError, TarFormatError, TarPathError } from '../../src/tar/errors.ts';
import { readTar } from '../../src/tar/reader.ts';
import { tarBytes, type WriteEntry } from '../../src/tar/writer.ts';
import { listOurs } from './helpers.ts';

const enc = new TextEncoder();
const ENTRIES: WriteEntry[] = [
  { path: 'd/', type: 'dir' },
  { path: `d/${'x'.repeat(200)}`, type: 'file', data: new Uint8Array(3000).fill(7), xattrs: { 'user.a': 'b' } },
  { path: 'd/s', type: 'file', sparse: { size: 100_000, segments: [{ offset: 50_000, bytes: new Uint8Array(600).fill(1) }] } },
  { path: 'd/l', type: 'symlink', linkname: 'x' },
  { path: 'd/e', type: 'file', data: enc.encode('end') },
];
const ARCHIVE = tarBytes(ENTRIES);

async function outcome(bytes: Uint8Array): Promise<'ok' | TarError> {
  try {
    await listOurs([bytes]);
    return 'ok';
  } catch (e) {
    if (e instanceof TarError) return e;
    throw e;
  }
}

test('every truncation is a TarFormatError naming an offset, or a whole prefix of the members', async () => {
  const whole = await listOurs([ARCHIVE]);
  const boundaries = new Set<number>();
  for (let n = 0; n < ARCHIVE.length; n++) {
    const r = await outcome(ARCHIVE.subarray(0, n));
    if (r === 'ok') {
      boundaries.add(n);
      const got = await listOurs([ARCHIVE.subarray(0, n)]);
      assert.deepEqual(got, whole.slice(0, got.length), `cut at ${n}`);
    } else {
      assert.ok(r instanceof TarFormatError, `cut at ${n}: ${r}`);
      assert.ok(r.offset !== undefined && r.offset <= n, `cut at ${n}: offset ${r.offset}`);
    }
  }
  // The cuts that read cleanly: member boundaries, and anywhere after the first end block
  // (GNU tar stops at the first zero block too).
  const before = [...boundaries].filter((n) => n <= ARCHIVE.length - 1024);
  assert.equal(before.length, ENTRIES.length + 1, `${before}`);
  for (let n = ARCHIVE.length - 512; n < ARCHIVE.length; n++) assert.ok(boundaries.has(n), `cut at ${n}`);
});

test('random corruption gives a TarError or a parse, never a hang or another error', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(fc.tuple(fc.nat(ARCHIVE.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }), async (flips) => {
      const b = ARCHIVE.slice();
      for (const [at, v] of flips) b[at] = v;
      await outcome(b);
    }),
    { numRuns: 300 },
  );
});

test('a bad header checksum names the header', async () => {
  const b = ARCHIVE.slice();
  b[512 * 3 + 10] ^= 1;
  const r = await outcome(b);
  assert.ok(r instanceof TarFormatError && /checksum/.test(r.message), String(r));
});

test('".." components are refused, leading "/" and "." are dropped', async () => {
  const bad = tarBytes([{ path: 'a/../../etc/passwd', type: 'file' }]);
  const r = await outcome(bad);
  assert.ok(r instanceof TarPathError && r.offset === 0, String(r));
  const hl = tarBytes([{ path: 'ok', type: 'hardlink', linkname: '../x' }]);
  assert.ok((await outcome(hl)) instanceof TarPathError);
  const got = await listOurs([tarBytes([{ path: '//./a//./b/', type: 'dir' }, { path: './', type: 'dir' }, { path: '/', type: 'dir' }])]);
  assert.deepEqual(got.map((l) => Buffer.from(l.path, 'hex').toString()), ['a/b', '', '']);
});

test('unsupported member types are refused; volume labels are skipped with a warning', async () => {
  const b = tarBytes([{ path: 'v', type: 'file' }, { path: 'f', type: 'file', data: enc.encode('x') }]);
  const set = (type: string): Uint8Array => {
    const c = b.slice();
    c[156] = type.charCodeAt(0);
    let s = 0;
    c.fill(0x20, 148, 156);
    for (let i = 0; i < 512; i++) s += c[i]!;
    c.set(enc.encode(s.toString(8).padStart(6, '0') + '\0 '), 148);
    return c;
  };
  const m = await outcome(set('M'));
  assert.ok(m instanceof TarFormatError && /type 'M'/.test(m.message));
  const warnings: string[] = [];
  const names: string[] = [];
  for await (const e of readTar((async function* () { yield set('V'); })(), { onWarning: (w) => warnings.push(w.message) })) names.push(Buffer.from(e.path).toString());
  assert.deepEqual(names, ['f']);
  assert.equal(warnings.length, 1);
});

test('an extended header without its member is an error', async () => {
  const b = tarBytes([{ path: 'x'.repeat(300), type: 'file' }]);
  // Keep the PAX header, drop the member's header: the end blocks follow it.
  const paxLen = 1024;
  const cut = new Uint8Array(paxLen + 1024);
  cut.set(b.subarray(0, paxLen));
  const r = await outcome(cut);
  assert.ok(r instanceof TarFormatError && /extended header/.test(r.message), String(r));
});

test('trailing garbage after the end is read and ignored', async () => {
  const b = new Uint8Array(ARCHIVE.length + 3000).fill(0x41);
  b.set(ARCHIVE);
  b.fill(0, ARCHIVE.length - 1024, ARCHIVE.length);
  assert.deepEqual(await listOurs([b]), await listOurs([ARCHIVE]));
  let pulled = 0;
  for await (const _ of readTar((async function* () { for (let i = 0; i < b.length; i += 100) { pulled = i + 100; yield b.subarray(i, i + 100); } })()));
  assert.ok(pulled >= b.length, 'the input is drained to its end');
});
