/**
 * Directories written by src/ext4/dir.ts inside a filesystem made by mke2fs, checked by peers
 * that share no code with it: e2fsck -fn (its pass 2 checks every htree block, hash range and
 * link), debugfs ls and htree, and the kernel's own htree lookups through a read-only loop mount.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, open, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import fc from 'fast-check';
import { Directory, FT, type DirOptions } from '../../src/ext4/dir.ts';
import { MemBlocks } from './dir-blocks.ts';
import { tempDir } from '../helpers/temp.ts';

const BS = 4096;
const TARGETS = 8;
const SEED_UUID = '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0';

function run(cmd: string, args: string[], input?: string): { status: number | null; out: string; err: string } {
  const r = spawnSync(cmd, args, { input, maxBuffer: 256 << 20, encoding: 'latin1' });
  if (r.error) throw r.error;
  return { status: r.status, out: r.stdout, err: r.stderr };
}

function debugfs(img: string, commands: string[], write = false): string {
  const r = run('debugfs', [...(write ? ['-w'] : []), '-f', '-', img], commands.join('\n') + '\n');
  assert.equal(r.status, 0, r.err);
  return r.out;
}

/** The superblock's hash settings, as the engine would read them. */
async function hashOptions(img: string): Promise<DirOptions> {
  const sb = (await readFile(img)).subarray(1024, 2048);
  const flags = sb.readUInt32LE(0x160);
  const seed = new Uint32Array(4);
  for (let i = 0; i < 4; i++) seed[i] = sb.readUInt32LE(0xec + 4 * i);
  const hash = (['legacy', 'half_md4', 'tea'] as const)[sb[0xfc]];
  assert.ok(flags & 1, 'mke2fs on x86 marks the hash signed');
  return { hash, seed, unsigned: (flags & 2) !== 0, dirIndex: true };
}

/** Names of 1–255 bytes from a portable alphabet (debugfs' parser and `ls -p` keep them intact). */
function names(n: number, seed: number): string[] {
  const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+=,@';
  const gen = fc.tuple(fc.integer({ min: 0, max: 9 }), fc.string({ unit: fc.constantFrom(...alphabet), minLength: 1, maxLength: 255, size: 'max' }));
  const out = new Set<string>();
  for (const [pick, s] of fc.sample(gen, { numRuns: n * 2, seed })) {
    // Mostly short names, as real trees have; one in ten up to 255 bytes.
    const name = pick === 0 ? s : s.slice(0, 1 + (s.length % 24));
    if (name !== '.' && name !== '..' && !out.has(name)) out.add(name);
    if (out.size === n) break;
  }
  for (let i = 0; out.size < n; i++) out.add(`extra-${i}`);
  return [...out];
}

/**
 * mke2fs, a directory `d` and TARGETS empty files made by debugfs; then `d`'s blocks replaced by
 * ours (debugfs expand_dir gives it as many), every entry a hard link to one of the targets.
 */
async function build(dir: string, list: string[], removeEvery: number, dirIndex = true): Promise<{ img: string; kept: string[]; indexed: boolean; count: number }> {
  const img = path.join(dir, 'img');
  const mk = run('mke2fs', ['-q', '-F', '-t', 'ext4', '-O', '^metadata_csum,^has_journal', '-E', `hash_seed=${SEED_UUID}`, '-b', String(BS), img, '64M']);
  assert.equal(mk.status, 0, mk.err);
  debugfs(img, ['mkdir d', ...Array.from({ length: TARGETS }, (_, i) => `write /dev/null t${i}`)], true);
  const inos = new Map(debugfs(img, ['ls -p /']).split('\n').filter((l) => l.startsWith('/')).map((l) => {
    const f = l.split('/');
    return [f[5], Number(f[1])] as const;
  }));
  const blocks = new MemBlocks(BS);
  await Directory.init(blocks, inos.get('d')!, 2);
  const d = new Directory(blocks, { ...(await hashOptions(img)), dirIndex }, false);
  const te = new TextEncoder();
  for (const [i, name] of list.entries()) await d.add({ name: te.encode(name), ino: inos.get(`t${i % TARGETS}`)!, fileType: FT.file });
  const kept: string[] = [];
  for (const [i, name] of list.entries()) {
    if (removeEvery && i % removeEvery === 0) assert.ok(await d.remove(te.encode(name)));
    else kept.push(name);
  }
  const links = new Array(TARGETS).fill(1);
  for (const [i, name] of list.entries()) if (!(removeEvery && i % removeEvery === 0)) links[i % TARGETS]++;
  debugfs(img, [
    ...Array.from({ length: blocks.count - 1 }, () => 'expand_dir d'),
    `set_inode_field d flags ${d.indexed ? '0x81000' : '0x80000'}`,
    ...links.map((n, i) => `set_inode_field t${i} links_count ${n}`),
  ], true);
  const phys = debugfs(img, ['blocks d']).split('\n').find((l) => /^\d+( \d+)*\s*$/.test(l.trim()) && l.trim() !== '')!.trim().split(/\s+/).map(Number);
  assert.equal(phys.length, blocks.count);
  const fh = await open(img, 'r+');
  try {
    for (const [lblk, p] of phys.entries()) await fh.write(blocks.blocks[lblk], 0, BS, p * BS);
  } finally {
    await fh.close();
  }
  return { img, kept, indexed: d.indexed, count: blocks.count };
}

function fsck(img: string): void {
  const r = run('e2fsck', ['-fn', img]);
  assert.equal(r.status, 0, `e2fsck -fn: ${r.out}${r.err}`);
  assert.doesNotMatch(r.out, /HTREE|Problem|problem/);
}

function debugfsNames(img: string): string[] {
  // ls also prints free records (inode 0: removed entries, index blocks' spanning records).
  return debugfs(img, ['ls -p d']).split('\n').filter((l) => l.startsWith('/') && !l.startsWith('/0/')).map((l) => {
    const f = l.split('/');
    return f.slice(5, f.length - 2).join('/');
  }).filter((n) => n !== '.' && n !== '..');
}

/** Every name looked up by the kernel (its htree code) through a read-only loop mount. */
async function kernelLookups(t: { skip(msg: string): void }, dir: string, img: string, kept: string[], gone: string[]): Promise<void> {
  if (process.getuid?.() !== 0) return t.skip('a loop mount needs root');
  const mnt = path.join(dir, 'mnt');
  await mkdir(mnt);
  const m = run('mount', ['-o', 'loop,ro', '-t', 'ext4', img, mnt]);
  if (m.status !== 0) return t.skip(`loop mount unavailable: ${m.err.trim()}`);
  try {
    for (const name of kept) assert.ok((await stat(path.join(mnt, 'd', name))).isFile(), name);
    for (const name of gone) await assert.rejects(stat(path.join(mnt, 'd', name)), { code: 'ENOENT' });
  } finally {
    assert.equal(run('umount', [mnt]).status, 0);
  }
}

for (const [n, removeEvery, levels] of [[10000, 0, 0], [60000, 3, 1]] as const) {
  test(`${n} entries${removeEvery ? `, every ${removeEvery}rd removed,` : ''} in an htree pass e2fsck -fn, debugfs ls/htree and kernel lookups`, async (t) => {
    const dir = await tempDir(t, 'obd-dir-peers-');
    const list = names(n, n);
    const { img, kept, indexed, count } = await build(dir, list, removeEvery);
    assert.ok(indexed);
    t.diagnostic(`${count} directory blocks`);
    fsck(img);
    assert.deepEqual(debugfsNames(img).sort(), [...kept].sort());
    // htree_dump walks the index down to every leaf and prints each record with its hash.
    const r = run('debugfs', ['-R', 'htree d', img]);
    assert.equal(r.status, 0);
    // debugfs computes a dx checksum even without metadata_csum and says it has no room: not ours.
    assert.deepEqual(r.err.split('\n').filter((l) => /while|Corrupt/.test(l) && !/space for checksum/.test(l)), []);
    assert.doesNotMatch(r.out, /^Corrupted directory block/m);
    assert.match(r.out, new RegExp(`Indirect levels: ${levels}\n`));
    const reached = [...r.out.matchAll(/(?:^| )(\d+) 0x[0-9a-f]{8}-[0-9a-f]{8} \(\d+\) (\S+)(?= |$)/gm)]
      .filter((m) => m[1] !== '0').map((m) => m[2]);
    assert.deepEqual(reached.sort(), [...kept].sort(), 'the index reaches every name once');
    const keptSet = new Set(kept);
    await kernelLookups(t, dir, img, kept, list.filter((x) => !keptSet.has(x)).slice(0, 2000));
  });
}

test('a linear directory of several blocks (dir_index off) passes e2fsck -fn and lists every name', async (t) => {
  const dir = await tempDir(t, 'obd-dir-peers-');
  const list = names(600, 5);
  const { img, kept, indexed, count } = await build(dir, list, 4, false);
  assert.equal(indexed, false);
  assert.ok(count > 2, `${count} blocks`);
  fsck(img);
  assert.deepEqual(debugfsNames(img).sort(), [...kept].sort());
  const keptSet = new Set(kept);
  await kernelLookups(t, dir, img, kept, list.filter((x) => !keptSet.has(x)));
});
