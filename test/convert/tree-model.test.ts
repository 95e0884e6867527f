/**
 * The TreeModel is the oracle of the applier's tests, so it must itself refuse what a real
 * filesystem refuses and list exactly what it holds.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { TreeModel, TreeModelError, formatListing } from '../../src/convert/tree-model.ts';
import type { Attrs, FileData } from '../../src/convert/apply.ts';
import { bytesOf } from '../helpers/layer-entries.ts';

const A: Attrs = { mode: 0o644, uid: 1, gid: 2, mtime: { sec: 10, nsec: 20 } };
const n = bytesOf;
async function* pieces(...p: Array<[number, string]>): FileData {
  for (const [offset, s] of p) yield { offset, bytes: n(s) };
}

test('a new model is a fresh filesystem: root 0755 and lost+found 0700', () => {
  const m = new TreeModel();
  assert.equal(m.listing(), '. dir 0755 0:0 0.000000000\nlost+found dir 0700 0:0 0.000000000');
  assert.equal(m.listing({ noLostFound: true, noDirMtimes: true }), '. dir 0755 0:0 -');
});

test('the listing: one line per path, sorted by path bytes, escaped, hard link groups, xattrs by name', async () => {
  const m = new TreeModel();
  const d = await m.mkdir(m.root, n('d'), { ...A, mode: 0o755, xattrs: new Map([['user.z', n('1')], ['trusted.a', n('\x00\xff')]]) });
  const f = await m.createFile(d, n('\xff'), A, 3, pieces([0, 'abc']));
  await m.createFile(d, n('a b%'), A, 0, pieces());
  await m.symlink(m.root, n('+s'), n('t\n'), { ...A, mode: 0o777 });
  await m.mknod(d, n('c'), 'chr', A, { major: 4, minor: 5 });
  await m.mknod(d, n('p'), 'fifo', A);
  await m.link(m.root, n('z'), f);
  await m.link(d, n('0'), f);
  const sha = (s: string) => createHash('sha256').update(s).digest('hex');
  assert.equal(m.listing({ noLostFound: true }), [
    `+s symlink 0777 1:2 10.000000020 ->t%0A`,
    '. dir 0755 0:0 0.000000000',
    'd dir 0755 1:2 10.000000020 x:trusted.a=00ff x:user.z=31',
    `d/0 file 0644 1:2 10.000000020 3:${sha('abc')} hl=d/0`,
    `d/a%20b%25 file 0644 1:2 10.000000020 0:${sha('')}`,
    'd/c chr 0644 1:2 10.000000020 4,5',
    'd/p fifo 0644 1:2 10.000000020',
    `d/%FF file 0644 1:2 10.000000020 3:${sha('abc')} hl=d/0`,
    `z file 0644 1:2 10.000000020 3:${sha('abc')} hl=d/0`,
  ].join('\n'));
  assert.match(formatListing(m.records(), { noDirMtimes: true }), /^d dir 0755 1:2 - /m);
});

test('holes hash as zeros and the size is the declared size', async () => {
  const m = new TreeModel();
  await m.createFile(m.root, n('f'), A, 10, pieces([2, 'ab'], [6, 'c']));
  const dense = Buffer.from('\0\0ab\0\0c\0\0\0', 'latin1');
  assert.match(m.listing(), new RegExp(`^f file 0644 1:2 10\\.000000020 10:${createHash('sha256').update(dense).digest('hex')}$`, 'm'));
});

test('refuses data out of order or past the size', async () => {
  const m = new TreeModel();
  await assert.rejects(m.createFile(m.root, n('a'), A, 10, pieces([4, 'ab'], [3, 'x'])), TreeModelError);
  await assert.rejects(m.createFile(m.root, n('b'), A, 3, pieces([2, 'ab'])), TreeModelError);
  assert.equal(await m.lookup(m.root, n('a')), undefined, 'nothing created on failure');
});

test('refuses names that exist, invalid names, missing entries, links to directories, unlinking directories', async () => {
  const m = new TreeModel();
  const d = await m.mkdir(m.root, n('d'), A);
  const f = await m.createFile(d, n('f'), A, 0, pieces());
  await assert.rejects(m.mkdir(m.root, n('d'), A), /exists/);
  await assert.rejects(m.link(d, n('f'), f), /exists/);
  for (const bad of ['', '.', '..', 'a/b', 'a\0', 'x'.repeat(256)]) await assert.rejects(m.mkdir(m.root, n(bad), A), /invalid name/);
  await assert.rejects(m.unlink(m.root, n('nope')), /not in directory/);
  await assert.rejects(m.removeTree(m.root, n('nope')), /not in directory/);
  await assert.rejects(m.link(m.root, n('l'), d), /link to directory/);
  await assert.rejects(m.unlink(m.root, n('d')), /unlink of directory/);
  await assert.rejects(m.mkdir(f, n('x'), A), /not a directory/);
  await assert.rejects(m.setAttrs(f, { ...A, mode: 0o100644 }), /more than permission bits/);
  await assert.rejects(m.stat(999), /not in use/);
});

test('link counts: files count names, directories 2 + subdirectories; inodes go at zero links', async () => {
  const m = new TreeModel();
  const d = await m.mkdir(m.root, n('d'), A);
  await m.mkdir(d, n('e'), A);
  await m.mkdir(d, n('g'), A);
  const f = await m.createFile(d, n('f'), A, 0, pieces());
  await m.link(m.root, n('h'), f);
  assert.equal((await m.stat(d)).links, 4);
  assert.equal((await m.stat(m.root)).links, 4, 'root: itself, lost+found, d');
  assert.equal((await m.stat(f)).links, 2);
  const before = m.inodeCount;
  await m.unlink(m.root, n('h'));
  assert.equal((await m.stat(f)).links, 1);
  assert.equal(m.inodeCount, before);
  await m.removeTree(m.root, n('d'));
  assert.equal(m.inodeCount, before - 4);
  await assert.rejects(m.stat(f), /not in use/);
});

test('setAttrs with xattrs replaces them all, without leaves them; atime/ctime default to mtime', async () => {
  const m = new TreeModel();
  const f = await m.createFile(m.root, n('f'), { ...A, xattrs: new Map([['user.a', n('1')]]) }, 0, pieces());
  await m.setAttrs(f, { ...A, mode: 0o600 });
  assert.match(m.listing(), /^f file 0600 .* x:user\.a=31$/m);
  await m.setAttrs(f, { ...A, xattrs: new Map([['user.b', n('2')]]) });
  assert.match(m.listing(), /^f file 0644 1:2 \S+ \S+ x:user\.b=32$/m);
  const info = await m.stat(f);
  assert.deepEqual([info.type, info.mode, info.uid, info.gid, info.mtime], ['file', 0o644, 1, 2, { sec: 10, nsec: 20 }]);
});

test('readdir lists entries with their types, without . and ..', async () => {
  const m = new TreeModel();
  await m.symlink(m.root, n('s'), n('x'), A);
  const names = (await m.readdir(m.root)).map((e) => `${Buffer.from(e.name).toString('latin1')}:${e.type}`).sort();
  assert.deepEqual(names, ['lost+found:dir', 's:symlink']);
});
