/**
 * The ext4 engine against peers that share no code with it: e2fsck -fn after every step,
 * debugfs for what was written (contents by sha256, modes, owners, times, xattrs, link
 * targets, device numbers, link counts), and the kernel through a read-only loop mount when
 * the test runs as root.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Ext4 } from '../../src/ext4/fs.ts';
import { Ext4ExistsError, Ext4FormatError, Ext4NotFoundError } from '../../src/ext4/errors.ts';
import type { Attrs } from '../../src/ext4/types.ts';
import { assertClean, debugfs, enc, ImageDevice, pieces, run, shmDir } from './fs-peers.ts';

const MiB = 1 << 20;
const UUID = Uint8Array.from({ length: 16 }, (_, i) => i * 17);
const T = { sec: 1_700_000_000, nsec: 123_456_789 };
const A: Attrs = { mode: 0o644, uid: 1000, gid: 100, mtime: T };
const D: Attrs = { ...A, mode: 0o755 };
/** A POSIX ACL in the VFS format: user::rw-, user:1000:r--, group::r--, mask::r--, other::---. */
const ACL = Uint8Array.from([2, 0, 0, 0, 1, 0, 6, 0, 255, 255, 255, 255, 2, 0, 4, 0, 0xe8, 3, 0, 0, 4, 0, 4, 0, 255, 255, 255, 255,
  0x10, 0, 4, 0, 255, 255, 255, 255, 0x20, 0, 0, 0, 255, 255, 255, 255]);

/** Deterministic pseudo-random bytes (xorshift32). */
function bytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

function dumpSha(img: string, file: string, dir: string): Promise<string> {
  const out = path.join(dir, 'dump');
  debugfs(img, `dump ${file} ${out}`);
  return readFile(out).then(sha);
}

async function fresh(t: { after(fn: () => unknown): void }, size = 256 * MiB): Promise<{ dir: string; img: string; dev: ImageDevice; fs: Ext4 }> {
  const dir = await shmDir(t);
  const img = path.join(dir, 'img');
  const dev = await ImageDevice.create(img, size);
  t.after(() => dev.close());
  const fs = await Ext4.format(dev, { uuid: UUID });
  return { dir, img, dev, fs };
}

test('format: an empty filesystem e2fsck passes, with the layout choices', async (t) => {
  const { img } = await fresh(t);
  assertClean(img, 'after format');
  const stats = debugfs(img, 'stats');
  assert.match(stats, /Filesystem features:\s+ext_attr dir_index filetype extent 64bit flex_bg sparse_super large_file huge_file uninit_bg dir_nlink extra_isize\n/);
  assert.match(stats, /Block size:\s+4096/);
  assert.match(stats, /Inode size:\s+256/);
  assert.match(stats, /Default directory hash:\s+half_md4/);
  assert.match(stats, /Last write time:\s+Thu Jan  1 00:00:00 1970/);
  assert.match(debugfs(img, 'ls -l /'), /11\s+40700 \(2\)\s+0\s+0\s+16384 .*lost\+found/);
});

test('format: a 64 GiB device writes little and checks clean', async (t) => {
  const { img, fs } = await fresh(t, 64 * 1024 * MiB);
  assertClean(img, '64 GiB format');
  assert.ok(fs.stats.metadataBytes < 2 * MiB, `format wrote ${fs.stats.metadataBytes} bytes of metadata`);
  const { status, out } = run('du', ['-B1', img]);
  assert.equal(status, 0);
  assert.ok(Number(out.split('\t')[0]) < 4 * MiB, `image occupies ${out}`);
});

test('files of 0/1/4095/4096/4097 bytes and larger: contents, holes, sector-trimmed tail', async (t) => {
  const { dir, img, dev, fs } = await fresh(t);
  const sizes = [0, 1, 4095, 4096, 4097, 3 * MiB + 123];
  const want = new Map<string, string>();
  for (const n of sizes) {
    const data = bytes(n, n + 1);
    dev.writes = [];
    await fs.createFile(fs.root, enc(`f${n}`), A, n, pieces([0, data]));
    const dataWritten = dev.writes.reduce((s, [, len]) => s + len, 0);
    assert.equal(dataWritten, Math.floor(n / 4096) * 4096 + Math.ceil((n % 4096) / 512) * 512, `data bytes written for ${n}`);
    want.set(`f${n}`, sha(data));
  }
  // Unaligned pieces, an all-zero block in the middle (a hole) and a gap.
  const mixed = new Uint8Array(5 * 4096);
  mixed.set(bytes(100, 7), 10);
  mixed.set(bytes(5000, 8), 3 * 4096 + 50);
  await fs.createFile(fs.root, enc('mixed'), A, mixed.length, pieces([0, mixed.subarray(0, 4000)], [4000, mixed.subarray(4000, 9000)], [3 * 4096, mixed.subarray(3 * 4096)]));
  want.set('mixed', sha(mixed));
  await fs.flush();
  assertClean(img, 'after files');
  for (const [name, digest] of want) assert.equal(await dumpSha(img, `/${name}`, dir), digest, name);
  assert.match(debugfs(img, 'stat /mixed'), /Blockcount: 24\n[^]*\(0\):\d+, \(3-4\):\d+-\d+/, 'blocks 1 and 2 (all zero) are holes');
  assert.match(debugfs(img, 'stat /f0'), /Size: 0\b/);
});

test('metadata and types: modes, owners, ns times, symlinks, devices, fifo, socket, hardlinks, xattrs, ACL', async (t) => {
  const { img, fs } = await fresh(t);
  const etc = await fs.mkdir(fs.root, enc('etc'), { ...D, uid: 5, gid: 6 });
  await fs.symlink(etc, enc('short'), enc('../target'), A);
  const long = 'l/'.repeat(150);
  await fs.symlink(etc, enc('long'), enc(long), A);
  await fs.mknod(etc, enc('null'), 'chr', { ...A, mode: 0o666 }, { major: 1, minor: 3 });
  await fs.mknod(etc, enc('nvme'), 'blk', A, { major: 259, minor: 70000 });
  await fs.mknod(etc, enc('pipe'), 'fifo', A);
  await fs.mknod(etc, enc('sock'), 'sock', A);
  const f = await fs.createFile(etc, enc('file'), { ...A, mode: 0o4755, uid: 70000, gid: 80000, mtime: { sec: 2 ** 33, nsec: 5 } }, 3, pieces([0, enc('abc')]));
  await fs.link(fs.root, enc('hard'), f);
  await assert.rejects(fs.link(fs.root, enc('hard'), f), Ext4ExistsError);
  const xattrs = new Map([['user.small', enc('v')], ['security.capability', bytes(20, 3)], ['trusted.big', bytes(900, 4)],
    ['system.posix_acl_access', ACL]]);
  const x = await fs.createFile(fs.root, enc('x'), { ...A, xattrs }, 0, pieces());
  await fs.flush();
  assertClean(img, 'after metadata');
  const ls = debugfs(img, 'ls -l /etc');
  assert.match(ls, /120644 \(7\)\s+1000\s+100\s+9 .* short/);
  assert.match(ls, /20666 \(3\)\s+1000\s+100\s+0 .* null/);
  assert.match(debugfs(img, 'stat /etc/null'), /Device major\/minor number: 01:03/);
  assert.match(debugfs(img, 'stat /etc/nvme'), /Device major\/minor number: 259:70000/);
  assert.match(ls, /10644 \(5\).* pipe/);
  assert.match(ls, /140644 \(6\).* sock/);
  assert.match(debugfs(img, 'stat /etc/short'), /Fast link dest: "\.\.\/target"/);
  assert.ok(debugfs(img, 'cat /etc/long').includes(long), 'slow symlink target');
  const st = debugfs(img, 'stat /etc/file');
  assert.match(st, /Mode:\s+04755/);
  assert.match(st, /User:\s+70000\s+Group:\s+80000/);
  assert.match(st, /Links: 2/);
  assert.match(st, /mtime: 0x00000000:00000016 -- Wed Mar 16 12:56:32 2242/, 'seconds 2^33: low word 0, epoch bits 2, ns 5 << 2 | 2');
  assert.match(debugfs(img, 'stat /etc'), /Links: 2/);
  assert.match(debugfs(img, 'stat /'), /Links: 4/);
  const ea = debugfs(img, 'ea_list /x');
  assert.match(ea, /user\.small \(1\) = "v"/);
  assert.match(ea, /security\.capability \(20\)/);
  assert.match(ea, /trusted\.big \(900\)/);
  assert.match(ea, /system\.posix_acl_access/);
  assert.match(debugfs(img, 'stat /x'), /File ACL: [1-9]/, 'the 900-byte value went to the external block');
  assert.deepEqual((await fs.stat(x)).links, 1);
  assert.deepEqual((await fs.stat(await fs.lookup(etc, enc('nvme')) ?? 0)).rdev, { major: 259, minor: 70000 });
});

test('a 10,000-entry directory is an htree, looked up and listed; deleting it frees everything', async (t) => {
  const { img, fs } = await fresh(t);
  const big = await fs.mkdir(fs.root, enc('big'), D);
  const before = fs.stats.blocksUsed;
  for (let i = 0; i < 10_000; i++) await fs.createFile(big, enc(`entry-with-a-longish-name-${i}`), A, 1, pieces([0, enc('z')]));
  for (let i = 0; i < 100; i++) await fs.mkdir(big, enc(`sub${i}`), D);
  await fs.flush();
  assertClean(img, 'after 10,000 entries');
  assert.match(debugfs(img, 'stat /big'), /Flags: 0x81000/, 'indexed and extents');
  assert.match(debugfs(img, 'stat /big'), /Links: 102/);
  assert.equal(await fs.lookup(big, enc('entry-with-a-longish-name-7777')) !== undefined, true);
  assert.equal((await fs.readdir(big)).length, 10_100);
  await fs.removeTree(fs.root, enc('big'));
  await fs.flush();
  assertClean(img, 'after removeTree');
  assert.equal(fs.stats.blocksUsed, before - 1, 'the tree\'s blocks and the directory\'s are free again');
  assert.equal(fs.stats.inodesUsed, 11);
  assert.match(debugfs(img, 'stat /'), /Links: 3/);
});

test('a > 200 MiB sparse file with scattered data gets an extent tree', async (t) => {
  const { dir, img, fs } = await fresh(t);
  const size = 210 * MiB + 17;
  const list: [number, Uint8Array][] = [];
  for (let i = 0; i < 600; i++) list.push([i * 350_000 + (i % 7) * 100, bytes(3000, i + 1)]);
  list.push([size - 17, bytes(17, 99)]);
  await fs.createFile(fs.root, enc('sparse'), A, size, pieces(...list));
  await fs.flush();
  assertClean(img, 'after sparse');
  const st = debugfs(img, 'stat /sparse');
  assert.match(st, /\(ETB0\)/, 'a depth-1 tree');
  const whole = new Uint8Array(size);
  for (const [o, b] of list) whole.set(b, o);
  assert.equal(await dumpSha(img, '/sparse', dir), sha(whole));
  // 1,500 extents: more than one leaf block holds (340), so a depth-2 tree.
  const many: [number, Uint8Array][] = [];
  for (let i = 0; i < 1500; i++) many.push([i * 8192, bytes(4096, i + 1)]);
  await fs.createFile(fs.root, enc('fragmented'), A, 1500 * 8192, pieces(...many));
  await fs.flush();
  assertClean(img, 'after a depth-2 extent tree');
  const frag = new Uint8Array(1500 * 8192);
  for (const [o, b] of many) frag.set(b, o);
  assert.equal(await dumpSha(img, '/fragmented', dir), sha(frag));
  assert.match(debugfs(img, 'ex /fragmented'), /^\s*0\/\s*2\s/m, 'the root is at level 0 of 2');
});

test('delete, recreate, reopen and modify: clean after every step; new data lands past the old', async (t) => {
  const { img, dev, fs } = await fresh(t);
  const d = await fs.mkdir(fs.root, enc('d'), D);
  for (let i = 0; i < 50; i++) await fs.createFile(d, enc(`f${i}`), A, 9000, pieces([0, bytes(9000, i + 1)]));
  await fs.symlink(d, enc('s'), enc('f1'), A);
  await fs.flush();
  assertClean(img, 'step 1');
  await dev.close();

  const dev2 = await ImageDevice.open(img);
  t.after(() => dev2.close().catch(() => {}));
  const fs2 = await Ext4.open(dev2);
  const d2 = (await fs2.lookup(fs2.root, enc('d')))!;
  const highest = Math.max(...dev.writes.map(([o, l]) => o + l).filter((e) => e < 32768 * 4096)); // below group 1's backup superblock
  await fs2.unlink(d2, enc('f3'));
  await assert.rejects(fs2.unlink(d2, enc('f3')), Ext4NotFoundError);
  await fs2.removeTree(d2, enc('s'));
  await fs2.createFile(d2, enc('f3'), A, 5000, pieces([0, bytes(5000, 77)]));
  await fs2.setAttrs(d2, { ...D, mode: 0o700, xattrs: new Map([['user.k', enc('v')]]) });
  const sub = await fs2.mkdir(d2, enc('sub'), D);
  await fs2.createFile(sub, enc('g'), A, 4096, pieces([0, bytes(4096, 5)]));
  dev2.writes = [];
  await fs2.flush();
  assertClean(img, 'step 2 (reopened)');
  assert.match(debugfs(img, 'stat /d'), /Mode:\s+0700/);
  assert.match(debugfs(img, 'ea_list /d'), /user\.k \(1\) = "v"/);
  assert.match(debugfs(img, 'stat /d'), /Links: 3/);
  const ext = debugfs(img, 'ex /d/f3');
  const pblk = Number(/(\d+) - \d+\s+\d+\s*$/m.exec(ext)?.[1] ?? /\s(\d+)\s+\d+\s*$/m.exec(ext)?.[1]);
  assert.ok(pblk * 4096 >= highest, `recreated file at block ${pblk}, above the first session's ${highest / 4096}`);
  await fs2.removeTree(fs2.root, enc('d'));
  await fs2.flush();
  assertClean(img, 'step 3 (all gone)');
  assert.equal(fs2.stats.inodesUsed, 11);
});

test('determinism: the same operations give the same bytes', async (t) => {
  const digests: string[] = [];
  for (let round = 0; round < 2; round++) {
    const { img, dev, fs } = await fresh(t, 64 * MiB);
    const d = await fs.mkdir(fs.root, enc('d'), D);
    for (let i = 0; i < 300; i++) await fs.createFile(d, enc(`n${(i * 7919) % 300}`), { ...A, xattrs: new Map([['user.i', enc(String(i))]]) }, 100, pieces([0, bytes(100, i + 1)]));
    await fs.removeTree(d, enc('n7'));
    await fs.flush();
    await dev.close();
    digests.push(sha(await readFile(img)));
  }
  assert.equal(digests[0], digests[1]);
});

test('open refuses what it cannot keep consistent', async (t) => {
  const dir = await shmDir(t);
  const img = path.join(dir, 'mke2fs');
  const r = run('mke2fs', ['-q', '-t', 'ext4', '-F', img, '32M']);
  assert.equal(r.status, 0, r.err);
  const dev = await ImageDevice.open(img);
  t.after(() => dev.close());
  await assert.rejects(Ext4.open(dev), Ext4FormatError);
  const zero = await ImageDevice.create(path.join(dir, 'zero'), 8 * MiB);
  t.after(() => zero.close());
  await assert.rejects(Ext4.open(zero), /no ext4 superblock/);
});

test('the kernel mounts the result read-only (root; loop device)', async (t) => {
  if (process.getuid?.() !== 0) return t.skip('needs root for losetup and mount');
  const { dir, img, fs } = await fresh(t, 64 * MiB);
  const big = await fs.mkdir(fs.root, enc('big'), D);
  for (let i = 0; i < 3000; i++) await fs.createFile(big, enc(`e${i}`), A, 5, pieces([0, enc(`v${i}`.padEnd(5))]));
  const data = bytes(1 * MiB + 3, 11);
  await fs.createFile(fs.root, enc('data'), A, data.length, pieces([0, data]));
  await fs.symlink(fs.root, enc('link'), enc('data'), A);
  const cap = Uint8Array.from([0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
  await fs.createFile(fs.root, enc('xa'), { ...A, xattrs: new Map([['user.note', enc('hi')], ['security.capability', cap], ['user.large', bytes(1500, 2)], ['system.posix_acl_access', ACL]]) }, 0, pieces());
  await fs.flush();
  const loop = run('losetup', ['-r', '-f', '--show', img]);
  if (loop.status !== 0) return t.skip(`losetup: ${loop.err.trim()}`);
  const dev = loop.out.trim();
  t.after(() => { run('losetup', ['-d', dev]); });
  const mnt = path.join(dir, 'mnt');
  run('mkdir', [mnt]);
  const m = run('mount', ['-t', 'ext4', '-o', 'ro', dev, mnt]);
  if (m.status !== 0) return t.skip(`mount: ${m.err.trim()}`);
  try {
    assert.equal(sha(await readFile(path.join(mnt, 'data'))), sha(data));
    assert.equal(sha(await readFile(path.join(mnt, 'link'))), sha(data));
    assert.equal((await readFile(path.join(mnt, 'big', 'e2999'), 'latin1')), 'v2999');
    const ls = run('ls', ['-f', path.join(mnt, 'big')]);
    assert.equal(ls.out.trim().split('\n').length, 3002);
    const attrs = run('getfattr', ['-d', '-m', '-', '-e', 'hex', path.join(mnt, 'xa')]);
    assert.equal(attrs.status, 0, attrs.err);
    assert.match(attrs.out, /security\.capability=0x0000000200200000000000000000000000000000/);
    assert.match(attrs.out, /user\.note=0x6869/);
    assert.match(attrs.out, new RegExp(`system\\.posix_acl_access=0x${Buffer.from(ACL).toString('hex')}`), 'the kernel gives back the VFS ACL');
    assert.match(attrs.out, new RegExp(`user\\.large=0x${Buffer.from(bytes(1500, 2)).toString('hex')}`));
  } finally {
    run('umount', [mnt]);
  }
});

test('delta: a small change to a reopened filesystem writes only the sectors it changed', async (t) => {
  const { img, dev, fs } = await fresh(t, 64 * 1024 * MiB);
  const d = await fs.mkdir(fs.root, enc('d'), D);
  for (let i = 0; i < 200; i++) await fs.createFile(d, enc(`f${i}`), { ...A, xattrs: new Map([['user.big', bytes(200, i + 1)]]) }, 2000, pieces([0, bytes(2000, i + 1)]));
  await fs.flush();
  await dev.close();
  const dev2 = await ImageDevice.open(img);
  t.after(() => dev2.close());
  const fs2 = await Ext4.open(dev2);
  const d2 = (await fs2.lookup(fs2.root, enc('d')))!;
  dev2.writes = [];
  await fs2.createFile(d2, enc('new'), A, 1024, pieces([0, bytes(1024, 5)]));
  await fs2.link(fs2.root, enc('lower-link'), (await fs2.lookup(d2, enc('f7')))!);
  await fs2.setAttrs((await fs2.lookup(d2, enc('f8')))!, { ...A, xattrs: new Map([['user.small', enc('x')]]) });
  await fs2.flush();
  const total = dev2.writes.reduce((s, [, len]) => s + len, 0);
  // 1 KiB of data, the new and changed inodes, a directory block each, bitmaps, a group descriptor, the superblock.
  assert.ok(total <= 8 * 1024, `wrote ${total} bytes in ${dev2.writes.length} writes`);
  assert.ok(dev2.writes.every(([o, len]) => o % 512 === 0 && len % 512 === 0));
  assertClean(img, 'after the small change');
  assert.match(debugfs(img, 'stat /d/f7'), /Links: 2/);
  assert.match(debugfs(img, 'stat /d/f8'), /File ACL: 0\b/, 'the old external xattr block is gone');
  assert.match(debugfs(img, 'ea_list /d/f8'), /user\.small \(1\) = "x"/);
});

test('fuse2fs reads what the engine wrote', async (t) => {
  if (process.getuid?.() !== 0) return t.skip('needs root for a FUSE mount here');
  const { dir, img, fs } = await fresh(t, 64 * MiB);
  const data = bytes(70_000, 21);
  const sub = await fs.mkdir(fs.root, enc('sub'), { ...D, uid: 3, gid: 4 });
  await fs.createFile(sub, enc('data'), A, data.length, pieces([0, data]));
  await fs.symlink(sub, enc('link'), enc('data'), A);
  await fs.flush();
  const mnt = path.join(dir, 'mnt');
  run('mkdir', [mnt]);
  const m = run('fuse2fs', ['-o', 'ro,fakeroot', img, mnt]);
  if (m.status !== 0) return t.skip(`fuse2fs: ${m.err.trim()}`);
  try {
    assert.equal(sha(await readFile(path.join(mnt, 'sub', 'data'))), sha(data));
    const st = run('stat', ['-c', '%a %u %g %s', path.join(mnt, 'sub'), path.join(mnt, 'sub', 'data')]);
    assert.equal(st.out.trim(), `755 3 4 4096\n644 1000 100 ${data.length}`);
    assert.equal(run('readlink', [path.join(mnt, 'sub', 'link')]).out.trim(), 'data');
  } finally {
    run('fusermount', ['-u', mnt]);
    run('umount', [mnt]);
  }
});

test('an htree directory reopened: removals and additions stay consistent', async (t) => {
  const { img, dev, fs } = await fresh(t);
  const d = await fs.mkdir(fs.root, enc('d'), D);
  for (let i = 0; i < 4000; i++) await fs.mknod(d, enc(`node-${i}`), 'fifo', A);
  await fs.flush();
  await dev.close();
  const dev2 = await ImageDevice.open(img);
  t.after(() => dev2.close());
  const fs2 = await Ext4.open(dev2);
  const d2 = (await fs2.lookup(fs2.root, enc('d')))!;
  for (let i = 0; i < 4000; i += 2) await fs2.unlink(d2, enc(`node-${i}`));
  for (let i = 0; i < 1000; i++) await fs2.mkdir(d2, enc(`dir-${i}`), D);
  await fs2.flush();
  assertClean(img, 'after removals and additions in an htree');
  assert.equal((await fs2.readdir(d2)).length, 3000);
  assert.equal(await fs2.lookup(d2, enc('node-2')), undefined);
  assert.notEqual(await fs2.lookup(d2, enc('node-3')), undefined);
  assert.match(debugfs(img, 'stat /d'), /Links: 1002\b/);
});

test('a create that fails (data stream error, bad xattr, pieces past the size) leaves nothing behind', async (t) => {
  const { img, fs } = await fresh(t, 64 * MiB);
  const before = { ...fs.stats };
  async function* failing(): AsyncIterable<{ offset: number; bytes: Uint8Array }> {
    yield { offset: 0, bytes: bytes(3 * MiB, 1) };
    throw new Error('truncated tar');
  }
  await assert.rejects(fs.createFile(fs.root, enc('f'), A, 5 * MiB, failing()), /truncated tar/);
  await assert.rejects(fs.createFile(fs.root, enc('f'), A, 10, pieces([0, bytes(11, 1)])), /passes the size/);
  await assert.rejects(fs.createFile(fs.root, enc('f'), { ...A, xattrs: new Map([['bogus.x', enc('v')]]) }, 0, pieces()), /namespace/);
  await assert.rejects(fs.createFile(fs.root, enc('f'), { ...A, xattrs: new Map([['user.x', bytes(9000, 1)]]) }, 0, pieces()), /one 4096-byte block/);
  await fs.flush();
  assert.equal(fs.stats.inodesUsed, before.inodesUsed);
  assert.equal(fs.stats.blocksUsed, before.blocksUsed);
  assertClean(img, 'after failed creates');
  assert.equal(await fs.lookup(fs.root, enc('f')), undefined);
});
