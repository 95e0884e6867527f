/**
 * Random sequences of engine operations (create, mkdir, symlink, mknod, link, unlink,
 * removeTree, setAttrs with xattrs, flush and reopen) against a model of the tree: after each
 * sequence e2fsck -fn is clean and the engine's own listing and debugfs's agree with the model.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import fc from 'fast-check';
import { Ext4 } from '../../src/ext4/fs.ts';
import type { Attrs } from '../../src/ext4/types.ts';
import { assertClean, debugfs, enc, ImageDevice, pieces, shmDir } from './fs-peers.ts';

const A: Attrs = { mode: 0o640, uid: 1, gid: 2, mtime: { sec: 1_600_000_000, nsec: 1 } };
const NAMES = ['a', 'b', 'c', 'dd', 'e'.repeat(40), 'f'.repeat(255)];

type Op =
  | { k: 'file'; dir: number; name: number; size: number }
  | { k: 'mkdir'; dir: number; name: number }
  | { k: 'symlink'; dir: number; name: number; len: number }
  | { k: 'fifo'; dir: number; name: number }
  | { k: 'link'; dir: number; name: number; target: number }
  | { k: 'remove'; dir: number; name: number }
  | { k: 'xattr'; target: number; size: number }
  | { k: 'reopen' };

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ k: fc.constant('file' as const), dir: fc.nat(20), name: fc.nat(5), size: fc.oneof(fc.nat(10_000), fc.constant(4096), fc.nat(300_000)) }),
  fc.record({ k: fc.constant('mkdir' as const), dir: fc.nat(20), name: fc.nat(5) }),
  fc.record({ k: fc.constant('symlink' as const), dir: fc.nat(20), name: fc.nat(5), len: fc.integer({ min: 1, max: 300 }) }),
  fc.record({ k: fc.constant('fifo' as const), dir: fc.nat(20), name: fc.nat(5) }),
  fc.record({ k: fc.constant('link' as const), dir: fc.nat(20), name: fc.nat(5), target: fc.nat(50) }),
  fc.record({ k: fc.constant('remove' as const), dir: fc.nat(20), name: fc.nat(5) }),
  fc.record({ k: fc.constant('xattr' as const), target: fc.nat(50), size: fc.nat(3000) }),
  fc.constant({ k: 'reopen' as const }),
);

test('random operation sequences stay e2fsck-clean and match a model', async (t) => {
  const dir = await shmDir(t);
  let n = 0;
  await fc.assert(fc.asyncProperty(fc.array(op, { minLength: 20, maxLength: 80 }), async (ops) => {
    const img = path.join(dir, `img${n++}`);
    let dev = await ImageDevice.create(img, 64 << 20);
    let fs = await Ext4.format(dev, { uuid: new Uint8Array(16).fill(9) });
    // Model: directories (inode → entries name → {ino, dir}) and every non-directory inode.
    const dirs = new Map<number, Map<string, { ino: number; dir: boolean }>>([[fs.root, new Map()]]);
    const files: number[] = [];
    const dirList = (): number[] => [...dirs.keys()].sort((a, b) => a - b);
    try {
      for (const o of ops) {
        if (o.k === 'reopen') {
          await fs.flush();
          await dev.close();
          dev = await ImageDevice.open(img);
          fs = await Ext4.open(dev);
          continue;
        }
        if (o.k === 'xattr') {
          // Files no longer linked anywhere are not candidates.
          const live = new Set<number>();
          for (const m of dirs.values()) for (const e of m.values()) live.add(e.ino);
          for (let i = files.length - 1; i >= 0; i--) if (!live.has(files[i]!)) files.splice(i, 1);
          const all = [...dirList(), ...files];
          const ino = all[o.target % all.length]!;
          await fs.setAttrs(ino, { ...A, xattrs: new Map([['user.v', new Uint8Array(o.size).fill(7)], ['trusted.t', enc('x')]]) });
          continue;
        }
        const ds = dirList();
        const d = ds[o.dir % ds.length]!;
        const entries = dirs.get(d)!;
        const name = NAMES[o.name]!;
        const raw = enc(name);
        if (o.k === 'remove') {
          const e = entries.get(name);
          if (!e) continue;
          await fs.removeTree(d, raw);
          const drop = (ino: number): void => {
            for (const c of dirs.get(ino)!.values()) if (c.dir) drop(c.ino);
            dirs.delete(ino);
          };
          if (e.dir) drop(e.ino);
          entries.delete(name);
          continue;
        }
        if (entries.has(name)) continue;
        if (o.k === 'file') {
          const data = new Uint8Array(o.size).map((_, i) => (i * 31 + o.size) & 0xff);
          files.push(await fs.createFile(d, raw, A, o.size, pieces([0, data])));
          entries.set(name, { ino: files.at(-1)!, dir: false });
        } else if (o.k === 'mkdir') {
          const ino = await fs.mkdir(d, raw, { ...A, mode: 0o755 });
          dirs.set(ino, new Map());
          entries.set(name, { ino, dir: true });
        } else if (o.k === 'symlink') {
          files.push(await fs.symlink(d, raw, enc('t'.repeat(o.len)), A));
          entries.set(name, { ino: files.at(-1)!, dir: false });
        } else if (o.k === 'fifo') {
          files.push(await fs.mknod(d, raw, 'fifo', A));
          entries.set(name, { ino: files.at(-1)!, dir: false });
        } else if (o.k === 'link') {
          const live = new Set<number>();
          for (const m of dirs.values()) for (const e of m.values()) if (!e.dir) live.add(e.ino);
          const targets = [...live].sort((a, b) => a - b);
          if (targets.length === 0) continue;
          const target = targets[o.target % targets.length]!;
          await fs.link(d, raw, target);
          entries.set(name, { ino: target, dir: false });
        }
      }
      await fs.flush();
      for (const [ino, entries] of dirs) {
        const got = (await fs.readdir(ino)).map((e) => `${new TextDecoder().decode(e.name)}:${e.ino}`).filter((s) => !s.startsWith('lost+found:')).sort();
        const want = [...entries].map(([k, v]) => `${k}:${v.ino}`).sort();
        assert.deepEqual(got, want, `directory inode ${ino}`);
        const subdirs = [...entries.values()].filter((e) => e.dir).length + (ino === fs.root ? 1 : 0);
        assert.match(debugfs(img, `stat <${ino}>`), new RegExp(`Links: ${2 + subdirs}\\b`), `links of directory ${ino}`);
      }
    } finally {
      await dev.close();
    }
    assertClean(img, `after ${JSON.stringify(ops)}`);
  }), { numRuns: 25, seed: 18 });
});
