/**
 * The layer applier's behaviours, one case each: layers of entries (bottom first) and what the
 * resulting tree must show. apply.test.ts runs them on the TreeModel (checking `expect`) and
 * on a real Ext4 (whose listing must equal the model's, e2fsck -fn clean).
 */
import assert from 'node:assert/strict';
import type { ApplyEntry } from '../../src/convert/apply.ts';
import { dir, device, fifo, file, hardlink, opaque, sparseFile, symlink, whiteout } from '../helpers/layer-entries.ts';
import { createHash } from 'node:crypto';

/** Listing lines by path ("a/b" → "TYPE MODE UID:GID MTIME …", formatListing's line without the path). */
export type Tree = Map<string, string>;

export interface ApplyCase {
  name: string;
  layers: ApplyEntry[][];
  /** Set when applying the last layer must fail: the error's message must match. */
  fails?: RegExp;
  expect?(t: Tree): void;
}

const sha = (s: string | Uint8Array): string => createHash('sha256').update(typeof s === 'string' ? Buffer.from(s, 'latin1') : s).digest('hex');

export function treeOf(listing: string): Tree {
  const t: Tree = new Map();
  for (const line of listing.split('\n')) {
    const sp = line.indexOf(' ');
    t.set(line.slice(0, sp), line.slice(sp + 1));
  }
  return t;
}

function paths(t: Tree): string[] {
  return [...t.keys()].filter((p) => p !== '.' && p !== 'lost+found');
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
/** VFS_CAP_REVISION_2, cap_net_bind_service permitted + effective. */
const CAP = new Uint8Array([1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
/** A POSIX ACL in the VFS xattr format: version 2; user:: rw-, user:1000 r--, group:: r--, mask r--, other ---. */
const ACL = new Uint8Array([2, 0, 0, 0, 1, 0, 6, 0, 255, 255, 255, 255, 2, 0, 4, 0, 232, 3, 0, 0, 4, 0, 4, 0, 255, 255, 255, 255,
  16, 0, 4, 0, 255, 255, 255, 255, 32, 0, 0, 0, 255, 255, 255, 255]);
const big = new Uint8Array(300_000).map((_, i) => (i * 7 + (i >> 9)) & 0xff);

export const CASES: ApplyCase[] = [
  {
    name: 'every entry type with its attributes',
    layers: [[
      dir('d', { mode: 0o2750, uid: 1000, gid: 70000, mtime: { sec: 1_700_000_000, nsec: 5 } }),
      file('d/f', 'hello', { mode: 0o4755, uid: 7, gid: 8, xattrs: { 'user.a': 'x', 'security.capability': CAP } }),
      file('d/empty', ''),
      file('d/big', big, { chunk: 4099 }),
      symlink('d/s', 'f', { mode: 0o755 }),
      symlink('d/abs', '/etc/passwd'),
      device('d/c', 'chr', 1, 3, { mode: 0o666 }),
      device('d/b', 'blk', 259, 70000, { mode: 0o660, gid: 6 }),
      fifo('d/p', { mode: 0o1777 }),
    ]],
    expect(t) {
      const m = '1600000000.123456789';
      assert.equal(t.get('d'), 'dir 2750 1000:70000 1700000000.000000005');
      assert.equal(t.get('d/f'), `file 4755 7:8 ${m} 5:${sha('hello')} x:security.capability=${hex(CAP)} x:user.a=78`);
      assert.equal(t.get('d/empty'), `file 0644 0:0 ${m} 0:${sha('')}`);
      assert.equal(t.get('d/big'), `file 0644 0:0 ${m} ${big.length}:${sha(big)}`);
      assert.equal(t.get('d/s'), `symlink 0777 0:0 ${m} ->f`, 'a symlink is 0777 whatever the header says');
      assert.equal(t.get('d/abs'), `symlink 0777 0:0 ${m} ->/etc/passwd`);
      assert.equal(t.get('d/c'), `chr 0666 0:0 ${m} 1,3`);
      assert.equal(t.get('d/b'), `blk 0660 0:6 ${m} 259,70000`);
      assert.equal(t.get('d/p'), `fifo 1777 0:0 ${m}`);
    },
  },
  {
    name: 'missing parents are made 0755 root:root with mtime 0',
    layers: [[file('a/b/c', 'x', { uid: 5 })]],
    expect(t) {
      assert.equal(t.get('a'), 'dir 0755 0:0 0.000000000');
      assert.equal(t.get('a/b'), 'dir 0755 0:0 0.000000000');
      assert.match(t.get('a/b/c')!, /^file 0644 5:0 /);
    },
  },
  {
    name: 'an existing parent directory keeps its attributes',
    layers: [[dir('a', { mode: 0o700, uid: 3 })], [file('a/f', 'x')]],
    expect(t) {
      assert.equal(t.get('a'), 'dir 0700 3:0 1600000000.123456789');
    },
  },
  {
    name: 'mtime, atime and ctime keep nanoseconds; times before 1970 and after 2038',
    layers: [[
      file('old', 'o', { mtime: { sec: -86_400, nsec: 999_999_999 } }),
      file('new', 'n', { mtime: { sec: 4_102_444_800, nsec: 1 }, atime: { sec: 5, nsec: 6 }, ctime: { sec: 7, nsec: 8 } }),
    ]],
    expect(t) {
      assert.match(t.get('old')!, /^file 0644 0:0 -86400\.999999999 /);
      assert.match(t.get('new')!, /^file 0644 0:0 4102444800\.000000001 /);
    },
  },
  {
    name: 'a whiteout deletes a lower file and is not created itself',
    layers: [[file('a', '1'), file('b', '2')], [whiteout('a')]],
    expect(t) {
      assert.deepEqual(paths(t), ['b']);
    },
  },
  {
    name: 'a whiteout deletes a lower directory with all it holds',
    layers: [[file('d/e/f', '1'), symlink('d/s', 'x'), file('d/e/g', '2'), file('keep', 'k')], [whiteout('d')]],
    expect(t) {
      assert.deepEqual(paths(t), ['keep']);
    },
  },
  {
    name: 'a whiteout of something absent, or in a missing directory, does nothing',
    layers: [[file('a', '1')], [whiteout('nothing'), whiteout('no/such/dir/x')]],
    expect(t) {
      assert.deepEqual(paths(t), ['a']);
    },
  },
  {
    name: 'a whiteout never hides what its own layer created before it',
    layers: [[file('a', 'lower')], [file('a', 'upper'), whiteout('a'), whiteout('b'), file('b', 'after')]],
    expect(t) {
      assert.deepEqual(paths(t), ['a', 'b']);
      assert.match(t.get('a')!, new RegExp(sha('upper')));
    },
  },
  {
    name: 'a whiteout of a lower directory this layer added to keeps only what this layer added',
    layers: [[file('d/old', '1'), file('d/sub/old', '2')], [file('d/sub/new', '3'), whiteout('d')]],
    expect(t) {
      assert.deepEqual(paths(t), ['d', 'd/sub', 'd/sub/new']);
    },
  },
  {
    name: 'an opaque directory drops lower entries and keeps this layer\'s, before and after the marker',
    layers: [
      [dir('d', { mode: 0o711 }), file('d/lower', '1'), file('d/sub/deep', '2'), file('d/sub2/x', '3'), file('other', 'o')],
      [dir('d', { mode: 0o750 }), file('d/before', 'b'), dir('d/sub2'), opaque('d'), file('d/after', 'a')],
    ],
    expect(t) {
      assert.deepEqual(paths(t), ['d', 'd/after', 'd/before', 'd/sub2', 'other']);
      assert.match(t.get('d')!, /^dir 0750 /, 'the directory itself stays, with its new attributes');
    },
  },
  {
    name: 'an opaque marker at the root',
    layers: [[file('a', '1'), file('b/c', '2')], [file('new', 'n'), opaque('')]],
    expect(t) {
      assert.deepEqual(paths(t), ['new']);
    },
  },
  {
    name: 'an opaque marker of a missing directory does nothing',
    layers: [[file('a', '1')], [opaque('none')]],
    expect(t) {
      assert.deepEqual(paths(t), ['a']);
    },
  },
  {
    name: 'other .wh..wh. names (AUFS metadata) and entries below .wh. names are skipped',
    layers: [[file('a', '1')], [file('.wh..wh.plnk/123', 'x'), dir('.wh..wh.plnk'), file('.wh..wh.aufs', ''), file('.wh.x/y', ''), whiteout('.wh..'), file('.wh..', '')]],
    expect(t) {
      assert.deepEqual(paths(t), ['a']);
    },
  },
  {
    name: 'hardlinks within a layer and to a lower layer share the inode',
    layers: [[file('lower', 'L', { mode: 0o600 })], [file('d/f', 'F'), hardlink('d/g', 'd/f', { mode: 0o777 }), hardlink('h', 'lower'), hardlink('i', 'lower')]],
    expect(t) {
      assert.match(t.get('d/f')!, /^file 0644 0:0 .* hl=d\/f$/, 'the hardlink header\'s own mode is ignored');
      assert.equal(t.get('d/g'), t.get('d/f'));
      assert.match(t.get('lower')!, /^file 0600 .* hl=h$/);
      assert.equal(t.get('h'), t.get('lower'));
      assert.equal(t.get('i'), t.get('lower'));
    },
  },
  {
    name: 'a hardlink to a symlink links the symlink, not its target',
    layers: [[file('t', 'T'), symlink('s', 't')], [hardlink('s2', 's')]],
    expect(t) {
      assert.match(t.get('s2')!, /^symlink 0777 0:0 \S+ ->t hl=s$/);
      assert.match(t.get('s')!, / hl=s$/);
      assert.doesNotMatch(t.get('t')!, / hl=/);
    },
  },
  {
    name: 'a hardlink over its own target is a no-op',
    layers: [[file('a', 'A'), hardlink('b', 'a')], [hardlink('a', 'a'), hardlink('b', 'a')]],
    expect(t) {
      assert.match(t.get('a')!, / hl=a$/);
      assert.equal(t.get('a'), t.get('b'));
    },
  },
  {
    name: 'a hardlink replaces what was at its path',
    layers: [[file('a', 'A'), file('b', 'B'), file('c/x', 'C')], [hardlink('b', 'a'), hardlink('c', 'a')]],
    expect(t) {
      assert.deepEqual(paths(t), ['a', 'b', 'c']);
      assert.match(t.get('a')!, new RegExp(`:${sha('A')} hl=a$`));
      assert.equal(t.get('b'), t.get('a'));
      assert.equal(t.get('c'), t.get('a'));
    },
  },
  {
    name: 'a hardlink whose target is missing fails naming the entry',
    layers: [[file('a', 'A')], [file('ok', 'x'), hardlink('dir/l\xff', 'gone')]],
    fails: /^layer-2: entry "\/dir\/l%FF": hardlink target "\/gone" does not exist/,
  },
  {
    name: 'a hardlink to a directory fails',
    layers: [[dir('d')], [hardlink('l', 'd')]],
    fails: /hardlink target "\/d" is a directory/,
  },
  {
    name: 'a hardlink over the directory holding its target fails (the target went with it)',
    layers: [[file('d/t', 'T')], [hardlink('d', 'd/t')]],
    fails: /hardlink target "\/d\/t" does not exist/,
  },
  {
    name: 'a hardlink target is resolved without following symlinks',
    layers: [[file('real/t', 'T'), symlink('link', 'real')], [hardlink('l', 'link/t')]],
    fails: /hardlink target "\/link\/t" does not exist/,
  },
  {
    name: 'a directory over a directory keeps the children and replaces attributes and xattrs',
    layers: [[dir('d', { mode: 0o700, uid: 1, xattrs: { 'user.old': 'o' } }), file('d/f', 'x')], [dir('d', { mode: 0o755, uid: 2, xattrs: { 'user.new': 'n' } })]],
    expect(t) {
      assert.deepEqual(paths(t), ['d', 'd/f']);
      assert.match(t.get('d')!, /^dir 0755 2:0 \S+ x:user\.new=6e$/);
    },
  },
  {
    name: 'a file replaces a directory tree, and a directory a file',
    layers: [[file('a/x/y', '1'), file('b', '2')], [file('a', 'now a file'), dir('b', { mode: 0o701 }), file('b/in', 'i')]],
    expect(t) {
      assert.deepEqual(paths(t), ['a', 'b', 'b/in']);
      assert.match(t.get('a')!, /^file /);
      assert.match(t.get('b')!, /^dir 0701 /);
    },
  },
  {
    name: 'a symlink, a device and a fifo replace a directory; a file replaces a symlink',
    layers: [[file('s/x', '1'), file('c/x', '1'), file('p/x', '1'), symlink('f', 't')], [symlink('s', 'elsewhere'), device('c', 'chr', 5, 1), fifo('p'), file('f', 'F')]],
    expect(t) {
      assert.deepEqual(paths(t), ['c', 'f', 'p', 's']);
      assert.match(t.get('s')!, /^symlink .* ->elsewhere$/);
      assert.match(t.get('c')!, /^chr .* 5,1$/);
      assert.match(t.get('f')!, /^file /);
    },
  },
  {
    name: 'replacing one name of a hardlinked file leaves the other with the old content',
    layers: [[file('a', 'old'), hardlink('b', 'a')], [file('a', 'new')]],
    expect(t) {
      assert.match(t.get('a')!, new RegExp(`:${sha('new')}$`));
      assert.match(t.get('b')!, new RegExp(`:${sha('old')}$`), 'one link left: no hardlink group');
    },
  },
  {
    name: 'the same path twice in one layer: the last entry wins',
    layers: [[file('a', 'one'), file('a', 'two'), dir('d', { mode: 0o700 }), dir('d', { mode: 0o750 })]],
    expect(t) {
      assert.match(t.get('a')!, new RegExp(sha('two')));
      assert.match(t.get('d')!, /^dir 0750 /);
    },
  },
  {
    name: 'a layer deletes what a lower layer created and a later one creates it again',
    layers: [[file('etc/conf', 'v1')], [whiteout('etc/conf')], [file('etc/conf', 'v3')]],
    expect(t) {
      assert.match(t.get('etc/conf')!, new RegExp(sha('v3')));
    },
  },
  {
    name: 'a symlink parent component is replaced by a directory, never followed',
    layers: [[file('real/keep', 'k'), symlink('lnk', 'real'), symlink('esc', '/../../..')], [file('lnk/new', 'n'), file('esc/x', 'x')]],
    expect(t) {
      assert.deepEqual(paths(t), ['esc', 'esc/x', 'lnk', 'lnk/new', 'real', 'real/keep']);
      assert.equal(t.get('lnk'), 'dir 0755 0:0 0.000000000');
      assert.match(t.get('esc')!, /^dir 0755 0:0 /);
    },
  },
  {
    name: 'a file parent component is replaced by a directory',
    layers: [[file('f', 'was a file')], [file('f/child', 'c')]],
    expect(t) {
      assert.deepEqual(paths(t), ['f', 'f/child']);
      assert.equal(t.get('f'), 'dir 0755 0:0 0.000000000');
    },
  },
  {
    name: 'whiteouts below a symlink parent do not follow it',
    layers: [[file('real/x', 'x'), symlink('lnk', 'real')], [whiteout('lnk/x'), opaque('lnk')]],
    expect(t) {
      assert.deepEqual(paths(t), ['lnk', 'real', 'real/x']);
    },
  },
  {
    name: 'the root entry sets the root\'s attributes',
    layers: [[dir('', { mode: 0o700, uid: 9, gid: 9, xattrs: { 'user.r': 'r' } }), file('a', '1')]],
    expect(t) {
      assert.equal(t.get('.'), 'dir 0700 9:9 1600000000.123456789 x:user.r=72');
    },
  },
  {
    name: 'a root entry that is not a directory fails',
    layers: [[symlink('', '/elsewhere')]],
    fails: /root entry is a symlink, not a directory/,
  },
  {
    name: 'a name over 255 bytes fails',
    layers: [[file(`d/${'n'.repeat(256)}`, '')]],
    fails: /a name of 256 bytes/,
  },
  {
    name: 'sparse files keep their size and content',
    layers: [[sparseFile('sp', 10_000_000, [[0, 'head'], [4096 * 100, big], [9_999_990, 'tail012345']]), sparseFile('allhole', 1 << 20, [])]],
    expect(t) {
      const dense = new Uint8Array(10_000_000);
      dense.set(Buffer.from('head'), 0);
      dense.set(big, 4096 * 100);
      dense.set(Buffer.from('tail012345'), 9_999_990);
      assert.match(t.get('sp')!, new RegExp(` 10000000:${sha(dense)}$`));
      assert.match(t.get('allhole')!, new RegExp(` 1048576:${sha(new Uint8Array(1 << 20))}$`));
    },
  },
  {
    name: 'names are bytes: non-UTF-8 and odd bytes',
    layers: [[file('caf\xe9', '1'), file('caf\xc3\xa9', '2'), file('sp ace\\x', '3'), dir('\x01\x7f')], [whiteout('caf\xe9')]],
    expect(t) {
      assert.deepEqual(paths(t), ['%01%7F', 'caf%C3%A9', 'sp%20ace%5Cx']);
    },
  },
  {
    name: 'xattrs including ACLs in the VFS format pass through',
    layers: [[file('f', 'x', {
      xattrs: {
        'user.k': new Uint8Array([0, 1, 2, 255]),
        'trusted.t': 'tv',
        'system.posix_acl_access': ACL,
      },
      mode: 0o640,
    })]],
    expect(t) {
      assert.ok(t.get('f')!.endsWith(` x:system.posix_acl_access=${hex(ACL)} x:trusted.t=7476 x:user.k=000102ff`), t.get('f'));
    },
  },
];
