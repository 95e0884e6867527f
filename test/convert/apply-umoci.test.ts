/**
 * Property: random stacks of 2–5 layers (every entry type, whiteouts, opaque directories,
 * hardlinks within and across layers, replacements of any type by any type) applied by
 * applyLayer onto the TreeModel give the same tree as umoci unpacking the same layers, written
 * as tars by python3's tarfile. Both refuse the same stacks (a hardlink to nothing or to a
 * directory). The generator keeps to well-formed layers, as real producers write them: each
 * entry's parent directories come as entries before it, symlink targets never name a path of
 * the tree, and no hardlink names itself — the cases where this project decided otherwise
 * than umoci (apply.ts) are tested in apply.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import fc from 'fast-check';
import { applyLayer, type ApplyEntry } from '../../src/convert/apply.ts';
import { TreeModel, formatListing } from '../../src/convert/tree-model.ts';
import { device, dir, fifo, file, hardlink, opaque, stream, symlink, whiteout } from '../helpers/layer-entries.ts';
import { listTree } from '../helpers/tree-listing.ts';
import { umociUnpack, writeLayout, writeTars } from '../helpers/umoci-oracle.ts';
import { withTempDir } from '../helpers/temp.ts';

const PATHS = ['a', 'b', 'c', 'a/a', 'a/b', 'b/a', 'a/a/a', 'a/a/b'];
const DIRS = ['', 'a', 'b', 'a/a'];
const SYMLINK_TARGETS = ['nowhere', '/abs/none', '../../up', 'dangling/x'];
const MTIME = { sec: 1_500_000_000, nsec: 0 };

type Op =
  | { op: 'put'; path: string; kind: 'file' | 'dir' | 'symlink' | 'fifo' | 'chr'; mode: number; uid: number; content: string; xattr: boolean; target: string }
  /** A hardlink to the pick-th (mod count) file put so far in the stack (dropped if none). */
  | { op: 'link'; path: string; pick: number }
  | { op: 'whiteout'; path: string }
  | { op: 'opaque'; dir: string };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({
    op: fc.constant('put' as const), path: fc.constantFrom(...PATHS),
    kind: fc.constantFrom('file' as const, 'file' as const, 'dir' as const, 'dir' as const, 'symlink' as const, 'fifo' as const, 'chr' as const),
    mode: fc.constantFrom(0o644, 0o755, 0o600, 0o4755, 0o1777, 0o700), uid: fc.constantFrom(0, 1000, 70000),
    content: fc.string({ maxLength: 20 }), xattr: fc.boolean(), target: fc.constantFrom(...SYMLINK_TARGETS),
  }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('link' as const), path: fc.constantFrom(...PATHS), pick: fc.nat(20) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('whiteout' as const), path: fc.constantFrom(...PATHS) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('opaque' as const), dir: fc.constantFrom(...DIRS) }) },
);

/** A layer's entries: each op preceded by entries for its parent directories. `files`: the paths files were put at so far. */
function entriesOf(ops: Op[], first: boolean, files: string[]): ApplyEntry[] {
  const out: ApplyEntry[] = first ? [dir('', { mtime: MTIME })] : [];
  for (const o of ops) {
    const p = o.op === 'opaque' ? `${o.dir}/x` : o.path;
    const parts = p.split('/').slice(0, -1);
    for (let i = 1; i <= parts.length; i++) if (parts[i - 1]) out.push(dir(parts.slice(0, i).join('/'), { mtime: MTIME }));
    if (o.op === 'whiteout') out.push(whiteout(o.path));
    else if (o.op === 'opaque') out.push(opaque(o.dir));
    else if (o.op === 'link') {
      const target = files[o.pick % files.length];
      if (target !== undefined && target !== o.path) out.push(hardlink(o.path, target, { mtime: MTIME }));
    } else {
      const attrs = { mode: o.mode, uid: o.uid, gid: o.uid, mtime: MTIME, xattrs: (o.xattr ? { 'user.k': `v${o.content}`, 'trusted.t': 'v' } : {}) as Record<string, string> };
      switch (o.kind) {
        case 'file': out.push(file(o.path, o.content, attrs)); files.push(o.path); break;
        case 'dir': out.push(dir(o.path, attrs)); break;
        case 'symlink': out.push(symlink(o.path, o.target, { ...attrs, xattrs: {} })); break;
        case 'fifo': out.push(fifo(o.path, { ...attrs, xattrs: {} })); break;
        case 'chr': out.push(device(o.path, 'chr', 1, 3, { ...attrs, xattrs: {} })); break;
      }
    }
  }
  return out;
}

/**
 * umoci's directory mtimes are not the layer's where it removed something inside a directory
 * for a whiteout (it restores only the whiteout's parent): they are the time of the unpack.
 */
function withoutDirMtimes(listing: string): string {
  return listing.replace(/^(\S+ dir [^\n]*?) mtime=\S+/gm, '$1');
}

test('applyLayer on the model agrees with umoci on random layer stacks', { timeout: 120_000 }, async () => {
  let compared = 0;
  let refused = 0;
  await fc.assert(fc.asyncProperty(fc.array(fc.array(opArb, { minLength: 1, maxLength: 7 }), { minLength: 2, maxLength: 5 }), async (stack) => {
    const files: string[] = [];
    const layers = stack.map((ops, i) => entriesOf(ops, i === 0, files));
    const model = new TreeModel();
    let ours: unknown;
    for (const [i, l] of layers.entries()) {
      try {
        await applyLayer(model, stream(l), { name: `layer-${i + 1}` });
      } catch (e) {
        ours = e;
        break;
      }
    }
    await withTempDir(async (tmp) => {
      await writeLayout(path.join(tmp, 'layout'), await writeTars(tmp, layers));
      const theirs = await umociUnpack(path.join(tmp, 'layout'), path.join(tmp, 'bundle'));
      if ('error' in theirs) {
        assert.ok(ours, `umoci refused the stack, applyLayer did not: ${theirs.error}`);
        refused++;
        if (process.env.SHOW) console.log('REFUSED', String(ours).slice(0, 200), '|', theirs.error.slice(-300));
        return;
      }
      assert.equal(ours, undefined, `applyLayer refused a stack umoci unpacked: ${String(ours)}`);
      const opts = { mtimes: true, skipLostFound: true };
      assert.equal(withoutDirMtimes(model.listing(opts)), withoutDirMtimes(formatListing(await listTree(theirs.rootfs), opts)));
      compared++;
    }, 'obd-umoci-');
  }), { numRuns: Number(process.env.UMOCI_RUNS ?? 60) });
  if (process.env.SHOW) console.log('compared', compared, 'refused', refused);
  assert.ok(compared >= 15, `only ${compared} stacks compared (${refused} refused by both)`);
});
