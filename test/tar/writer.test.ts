/**
 * The test writer: what it writes, GNU tar and Python's tarfile read back as written (and so
 * does our reader), byte for byte the same on every run.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { tarBytes, writeTar, type WriteEntry } from '../../src/tar/writer.ts';
import { tempDir } from '../helpers/temp.ts';
import { asGnu, canonTime, listGnu, listOurs, listPython, timeText, type Listed } from './helpers.ts';

const enc = new TextEncoder();
const deep = Array.from({ length: 16 }, (_, i) => `${i}`.padStart(250, 'p')).join('/');
const rnd = (n: number, seed: number): Uint8Array => {
  const b = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) b[i] = (x = (x * 1103515245 + 12345) >>> 0) >>> 24;
  return b;
};

const ENTRIES: WriteEntry[] = [
  { path: 'dir/', type: 'dir', mode: 0o755, mtime: 1_700_000_000 },
  { path: 'dir/file', type: 'file', mode: 0o640, uid: 1000, gid: 1000, data: enc.encode('hello\n'), mtime: { sec: 1_700_000_000, nsec: 123456789 } },
  { path: 'dir/empty', type: 'file', mode: 0o600 },
  { path: 'dir/big', type: 'file', data: rnd(300_001, 7) },
  { path: `${deep}/leaf`, type: 'file', data: enc.encode('deep') },
  { path: `dir/${'n'.repeat(120)}`, type: 'file', data: enc.encode('prefix split') },
  { path: Uint8Array.from([0x62, 0xff, 0xfe, 0x2e]), type: 'file', data: enc.encode('latin') },
  { path: 'dir/sym', type: 'symlink', linkname: 't'.repeat(400), mode: 0o777 },
  { path: 'dir/hard', type: 'hardlink', linkname: 'dir/file' },
  { path: 'dir/null', type: 'chr', devmajor: 1, devminor: 3 },
  { path: 'dir/loop', type: 'blk', devmajor: 7, devminor: 1_048_575 } /* Linux's largest minor */,
  { path: 'dir/fifo', type: 'fifo', mode: 0o644 },
  { path: 'dir/bigids', type: 'file', uid: 5_000_000, gid: 4_000_000_000, data: enc.encode('ids') },
  { path: 'dir/old', type: 'file', mtime: { sec: -2, nsec: 750_000_000 }, data: enc.encode('before 1970') },
  { path: 'dir/x', type: 'file', xattrs: { 'user.a': 'b', 'security.capability': Uint8Array.from([1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), 'user.empty': '' }, data: enc.encode('x') },
  { path: 'dir/.wh.gone', type: 'file' },
  { path: 'dir/.wh..wh..opq', type: 'file' },
  { path: 'dir/sparse', type: 'file', sparse: { size: 10 << 20, segments: [{ offset: 0, bytes: rnd(1000, 1) }, { offset: 4 << 20, bytes: rnd(70_000, 2) }] } },
];

function sha(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

test('the writer is deterministic and streams the same bytes it writes whole', async () => {
  const a = tarBytes(ENTRIES);
  assert.equal(sha(a), sha(tarBytes(ENTRIES)));
  const parts: Uint8Array[] = [];
  for await (const c of writeTar(ENTRIES)) parts.push(c);
  assert.equal(sha(Buffer.concat(parts)), sha(a));
  const r = tarBytes(ENTRIES, { recordSize: 10240 });
  assert.equal(r.length % 10240, 0);
});

test('GNU tar, Python and our reader read back what the PAX writer wrote', async (t) => {
  const dir = await tempDir(t, 'obd-tar-writer-');
  const file = path.join(dir, 'w.tar');
  await writeFile(file, tarBytes(ENTRIES, { recordSize: 10240 }));
  const ours = await listOurs([tarBytes(ENTRIES)]);
  const py = listPython(file);
  assert.equal(ours.length, ENTRIES.length);
  for (let i = 0; i < ENTRIES.length; i++) {
    assert.deepEqual(ours[i], py[i], `Python, member ${i}`);
    assert.deepEqual(ours[i], expected(ENTRIES[i]!), `as written, member ${i}`);
  }
  assert.deepEqual(ours.map(asGnu), listGnu(file));
});

test('GNU format: long names as L/K members and base-256 numbers, read back by GNU tar and Python', async (t) => {
  const dir = await tempDir(t, 'obd-tar-writer-');
  const file = path.join(dir, 'g.tar');
  const gnu = ENTRIES.filter((e) => !e.xattrs && !e.sparse && (typeof e.mtime !== 'object' || e.mtime.nsec === 0));
  await writeFile(file, tarBytes(gnu, { format: 'gnu' }));
  const ours = await listOurs([tarBytes(gnu, { format: 'gnu' })]);
  assert.deepEqual(ours, listPython(file));
  assert.deepEqual(ours.map(asGnu), listGnu(file));
  assert.deepEqual(ours, gnu.map(expected));
});

test('ustar refuses what it cannot hold; gnu refuses xattrs', () => {
  assert.throws(() => tarBytes([{ path: 'x'.repeat(300), type: 'file' }], { format: 'ustar' }), /does not fit/);
  assert.throws(() => tarBytes([{ path: 'x', type: 'file', xattrs: { 'user.a': 'b' } }], { format: 'gnu' }), /pax/);
});

/** What the reader should report for a written entry. */
function expected(e: WriteEntry): Listed {
  const bytes = (s: string | Uint8Array): Buffer => Buffer.from(typeof s === 'string' ? enc.encode(s) : s);
  const norm = (b: Buffer): string => Buffer.from(b.toString('latin1').split('/').filter((c) => c && c !== '.').join('/'), 'latin1').toString('hex');
  const mtime = typeof e.mtime === 'number' ? { sec: e.mtime, nsec: 0 } : (e.mtime ?? { sec: 0, nsec: 0 });
  let content: Uint8Array = e.data ?? new Uint8Array(0);
  if (e.sparse) {
    content = new Uint8Array(e.sparse.size);
    for (const s of e.sparse.segments) content.set(s.bytes, s.offset);
  }
  const xattrs = Object.entries(e.xattrs ?? {}).map(([k, v]) => [k, bytes(v as string | Uint8Array).toString('hex')] as const);
  return {
    path: norm(bytes(e.path)), type: e.type, mode: e.mode ?? (e.type === 'dir' ? 0o755 : 0o644), uid: e.uid ?? 0, gid: e.gid ?? 0,
    mtime: canonTime(timeText(mtime)), size: e.type === 'file' ? content.length : 0,
    linkname: e.type === 'hardlink' ? norm(bytes(e.linkname!)) : bytes(e.linkname ?? '').toString('hex'),
    devmajor: e.devmajor ?? 0, devminor: e.devminor ?? 0,
    xattrs: Object.fromEntries(xattrs.sort(([a], [b]) => (a < b ? -1 : 1))),
    sha256: sha(e.type === 'file' ? content : new Uint8Array(0)),
  };
}
