/** The benchmark's tar writer, read back by python3's tarfile (an independent reader). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { tarStream, type OutEntry } from '../../bench/tar-write.ts';
import { makeTempDir, removeTempDir } from '../helpers/temp.ts';

const LIST = `
import sys, tarfile, json, hashlib
out = []
with tarfile.open(sys.argv[1]) as t:
    for m in t:
        d = t.extractfile(m).read() if m.isfile() else b''
        out.append([m.name, m.type.decode(), m.mode, m.uid, m.gid, m.mtime, m.size, m.linkname,
                    m.devmajor, m.devminor, {k: v for k, v in m.pax_headers.items() if k.startswith('SCHILY')},
                    hashlib.sha256(d).hexdigest()[:16]])
print(json.dumps(out))
`;

test('entries of every kind, long names and xattrs read back exactly with python tarfile', async () => {
  const dir = await makeTempDir('tar-write');
  try {
    const long = `${'d'.repeat(120)}/${'f'.repeat(90)}`; // needs the ustar prefix field
    const longer = `a/${'x'.repeat(200)}`; // needs a PAX path
    const body = Buffer.from('hello\n'.repeat(300));
    const base = { mode: 0o644, uid: 1000, gid: 100, mtime: 1_700_000_000 };
    const entries: OutEntry[] = [
      { ...base, path: 'a', type: 'dir', mode: 0o755 },
      { ...base, path: 'a/f', type: 'file', size: body.length, data: async function* () { yield body.subarray(0, 100); yield body.subarray(100); }, xattrs: { 'user.k': Buffer.from('v'), 'security.capability': Buffer.from([1, 0, 0, 2]) } },
      { ...base, path: 'a/h', type: 'hardlink', linkname: 'a/f' },
      { ...base, path: 'a/s', type: 'symlink', linkname: `/${'t'.repeat(150)}` },
      { ...base, path: 'a/p', type: 'fifo' },
      { ...base, path: 'a/c', type: 'chr', dev: { major: 1, minor: 3 } },
      { ...base, path: long, type: 'file', size: 0 },
      { ...base, path: longer, type: 'file', size: 0 },
    ];
    const chunks: Uint8Array[] = [];
    for await (const c of tarStream(entries)) chunks.push(c);
    const file = path.join(dir, 'x.tar');
    await writeFile(file, Buffer.concat(chunks));
    assert.equal(Buffer.concat(chunks).length % 512, 0);
    const got = JSON.parse(execFileSync('python3', ['-c', LIST, file], { encoding: 'utf8' })) as unknown[][];
    assert.deepEqual(
      got.map((g) => [g[0], g[1], g[7], g[6]]),
      [
        ['a', '5', '', 0],
        ['a/f', '0', '', body.length],
        ['a/h', '1', 'a/f', 0],
        ['a/s', '2', `/${'t'.repeat(150)}`, 0],
        ['a/p', '6', '', 0],
        ['a/c', '3', '', 0],
        [long, '0', '', 0],
        [longer, '0', '', 0],
      ],
    );
    assert.deepEqual(got[1]!.slice(2, 6), [0o644, 1000, 100, 1_700_000_000]);
    assert.deepEqual(got[1]![10], { 'SCHILY.xattr.security.capability': '\u0001\u0000\u0000\u0002', 'SCHILY.xattr.user.k': 'v' });
    assert.equal(got[1]![11], execFileSync('python3', ['-c', 'import hashlib,sys;print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:16])'], { input: body, encoding: 'utf8' }).trim());
    assert.deepEqual(got[5]!.slice(8, 10), [1, 3]);
  } finally {
    await removeTempDir(dir);
  }
});

test('a data stream shorter than the declared size is an error, not a corrupt archive', async () => {
  const e: OutEntry = { path: 'f', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, size: 10, data: async function* () { yield new Uint8Array(5); } };
  await assert.rejects(async () => {
    for await (const _ of tarStream([e]));
  }, /data gave 5 bytes, header says 10/);
});
