/**
 * Random layer stacks for the applier's property tests: 2–5 layers of entries of every type,
 * whiteouts, opaque markers, hardlinks within and across layers and replacements of any type
 * by any type, over a small set of paths so that layers keep colliding.
 *
 * `wellFormed` keeps to what real layer producers write, where every unpacker agrees (the
 * umoci comparison): each entry's parent directories come as entries before it, symlink
 * targets never name a path of the tree, no hardlink names itself, files are dense with text
 * xattrs. Without it, the stacks also hold implicit parents, parents that are symlinks or
 * files, self-hardlinks, sparse files with holes and zero blocks, binary xattrs and ACLs.
 */
import fc from 'fast-check';
import type { ApplyEntry } from '../../src/convert/apply.ts';
import { device, dir, fifo, file, hardlink, opaque, sparseFile, symlink, whiteout, type EntryOptions } from './layer-entries.ts';

const PATHS = ['a', 'b', 'c', 'a/a', 'a/b', 'b/a', 'a/a/a', 'a/a/b'];
const DIRS = ['', 'a', 'b', 'a/a'];
const FOREIGN_TARGETS = ['nowhere', '/abs/none', '../../up', 'dangling/x'];
const MTIME = { sec: 1_500_000_000, nsec: 0 };
/** A POSIX ACL in the VFS xattr format (user:: rw-, group:: r--, other r--). */
const ACL = new Uint8Array([2, 0, 0, 0, 1, 0, 6, 0, 255, 255, 255, 255, 4, 0, 4, 0, 255, 255, 255, 255, 32, 0, 4, 0, 255, 255, 255, 255]);

type Kind = 'file' | 'sparse' | 'dir' | 'symlink' | 'fifo' | 'chr' | 'blk';
type Op =
  | { op: 'put'; path: string; kind: Kind; mode: number; uid: number; nsec: number; content: string; xattr: number; target: string; parents: boolean }
  /** A hardlink to the pick-th (mod count) file put so far in the stack, or to a random path. */
  | { op: 'link'; path: string; pick: number; any: string; parents: boolean }
  | { op: 'whiteout'; path: string; parents: boolean }
  | { op: 'opaque'; dir: string; parents: boolean };

function opArb(wellFormed: boolean): fc.Arbitrary<Op> {
  const parents = wellFormed ? fc.constant(true) : fc.boolean();
  const kinds: Kind[] = wellFormed
    ? ['file', 'file', 'dir', 'dir', 'symlink', 'fifo', 'chr']
    : ['file', 'file', 'sparse', 'dir', 'dir', 'symlink', 'fifo', 'chr', 'blk'];
  return fc.oneof(
    { weight: 6, arbitrary: fc.record({
      op: fc.constant('put' as const), path: fc.constantFrom(...PATHS), kind: fc.constantFrom(...kinds),
      mode: fc.constantFrom(0o644, 0o755, 0o600, 0o4755, 0o1777, 0o700), uid: fc.constantFrom(0, 1000, 70000),
      nsec: wellFormed ? fc.constant(0) : fc.integer({ min: 0, max: 999_999_999 }),
      content: fc.string({ maxLength: 20 }), xattr: fc.nat(wellFormed ? 1 : 3),
      target: fc.constantFrom(...FOREIGN_TARGETS, ...(wellFormed ? [] : PATHS)), parents,
    }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('link' as const), path: fc.constantFrom(...PATHS), pick: fc.nat(20), any: fc.constantFrom(...PATHS), parents }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('whiteout' as const), path: fc.constantFrom(...PATHS), parents }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('opaque' as const), dir: fc.constantFrom(...DIRS), parents }) },
  );
}

function xattrsOf(o: Extract<Op, { op: 'put' }>): EntryOptions['xattrs'] {
  switch (o.xattr) {
    case 1: return { 'user.k': `v${o.content}`, 'trusted.t': 'v' };
    case 2: return { 'user.bin': new Uint8Array([0, 255, 10, 0]), 'security.x': 'y'.repeat(100) };
    case 3: return { 'system.posix_acl_access': ACL, 'user.k': o.content || 'e' };
    default: return {};
  }
}

function entriesOf(ops: Op[], first: boolean, files: string[]): ApplyEntry[] {
  const out: ApplyEntry[] = first ? [dir('', { mtime: MTIME })] : [];
  for (const o of ops) {
    const p = o.op === 'opaque' ? `${o.dir}/x` : o.path;
    const parts = p.split('/').slice(0, -1).filter(Boolean);
    if (o.parents) for (let i = 1; i <= parts.length; i++) out.push(dir(parts.slice(0, i).join('/'), { mtime: MTIME }));
    if (o.op === 'whiteout') out.push(whiteout(o.path));
    else if (o.op === 'opaque') out.push(opaque(o.dir));
    else if (o.op === 'link') {
      const target = o.pick % 4 === 3 && !o.parents ? o.any : files[o.pick % Math.max(1, files.length)];
      if (target !== undefined && (target !== o.path || !o.parents)) out.push(hardlink(o.path, target, { mtime: MTIME }));
    } else {
      const attrs = { mode: o.mode, uid: o.uid, gid: o.uid, mtime: { sec: MTIME.sec, nsec: o.nsec } };
      const special: EntryOptions = { ...attrs, xattrs: o.xattr === 3 ? { 'trusted.s': 's' } : {} };
      switch (o.kind) {
        case 'file': out.push(file(o.path, o.content, { ...attrs, xattrs: xattrsOf(o) })); files.push(o.path); break;
        case 'sparse': {
          const block = new Uint8Array(4096 * 3).fill(0x61 + o.content.length % 26);
          block.fill(0, 4096, 8192);
          out.push(sparseFile(o.path, 1 << 20, [[0, o.content], [8192 + o.content.length * 4096, block], [(1 << 20) - 3, 'end']], { ...attrs, xattrs: xattrsOf(o) }));
          files.push(o.path);
          break;
        }
        case 'dir': out.push(dir(o.path, { ...attrs, xattrs: xattrsOf(o) })); break;
        case 'symlink': out.push(symlink(o.path, o.target, special)); break;
        case 'fifo': out.push(fifo(o.path, special)); break;
        case 'chr': out.push(device(o.path, 'chr', 1, 3, special)); break;
        case 'blk': out.push(device(o.path, 'blk', 8, 300, special)); break;
      }
    }
  }
  return out;
}

/** Stacks of 2–5 layers (bottom first); the first layer starts with a root entry. */
export function stackArb(opts: { wellFormed: boolean }): fc.Arbitrary<ApplyEntry[][]> {
  return fc.array(fc.array(opArb(opts.wellFormed), { minLength: 1, maxLength: 7 }), { minLength: 2, maxLength: 5 }).map((stack) => {
    const files: string[] = [];
    return stack.map((ops, i) => entriesOf(ops, i === 0, files));
  });
}

/** A stack as text, for a failing case's message. */
export function describeStack(stack: ApplyEntry[][]): string {
  return stack.map((l, i) => `layer-${i + 1}: ` + l.map((e) => `${e.type}:${Buffer.from(e.path).toString('latin1') || '.'}${e.linkname.length ? `->${Buffer.from(e.linkname).toString('latin1')}` : ''}`).join(' ')).join('\n');
}
