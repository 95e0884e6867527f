/**
 * A listing of a real directory tree (an unpacked rootfs, a fuse2fs mount) as ListingRecords,
 * so it formats exactly like the TreeModel's. Node has no xattr API, so python3 walks the tree
 * (lstat, readlink, listxattr/getxattr without following symlinks, sha256 of every file).
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import type { ListingRecord } from '../../src/convert/tree-model.ts';

const run = promisify(execFile);

/** Debian's python3 (starts in a third of the time a pyenv shim takes), else the one on PATH. */
export const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

const WALK = String.raw`
import hashlib, json, os, stat, sys
root = os.fsencode(sys.argv[1])
out = []
def rec(rel, full):
    st = os.lstat(full)
    m = st.st_mode
    kind = ('dir' if stat.S_ISDIR(m) else 'file' if stat.S_ISREG(m) else 'symlink' if stat.S_ISLNK(m) else
            'chr' if stat.S_ISCHR(m) else 'blk' if stat.S_ISBLK(m) else 'fifo' if stat.S_ISFIFO(m) else 'sock')
    r = {'path': rel.hex(), 'type': kind, 'mode': stat.S_IMODE(m), 'uid': st.st_uid, 'gid': st.st_gid,
         'links': st.st_nlink, 'inode': f'{st.st_dev}:{st.st_ino}', 'mtime': str(st.st_mtime_ns), 'xattrs': {}}
    for name in os.listxattr(full, follow_symlinks=False):
        r['xattrs'][name] = os.getxattr(full, name, follow_symlinks=False).hex()
    if kind == 'file':
        h = hashlib.sha256()
        with open(full, 'rb') as f:
            for chunk in iter(lambda: f.read(1 << 20), b''):
                h.update(chunk)
        r['size'] = st.st_size
        r['sha256'] = h.hexdigest()
    elif kind == 'symlink':
        r['target'] = os.readlink(full).hex()
    elif kind in ('chr', 'blk'):
        r['rdev'] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
    out.append(r)
    if kind == 'dir':
        for name in os.listdir(full):
            rec(rel + b'/' + name if rel else name, os.path.join(full, name))
rec(b'', root)
json.dump(out, sys.stdout)
`;

interface Raw {
  path: string; type: ListingRecord['type']; mode: number; uid: number; gid: number; links: number; inode: string; mtime: string;
  xattrs: Record<string, string>; size?: number; sha256?: string; target?: string; rdev?: [number, number];
}

const unhex = (h: string): Uint8Array => new Uint8Array(Buffer.from(h, 'hex'));

/** Every path of the tree at `root` ("" is the root itself). */
export async function listTree(root: string): Promise<ListingRecord[]> {
  const { stdout } = await run(PYTHON, ['-c', WALK, root], { maxBuffer: 1 << 30 });
  return (JSON.parse(stdout) as Raw[]).map((r) => {
    const ns = BigInt(r.mtime);
    const nsec = ((ns % 1_000_000_000n) + 1_000_000_000n) % 1_000_000_000n;
    const out: ListingRecord = {
      path: unhex(r.path), type: r.type, mode: r.mode, uid: r.uid, gid: r.gid,
      mtime: { sec: Number((ns - nsec) / 1_000_000_000n), nsec: Number(nsec) },
      xattrs: Object.entries(r.xattrs).map(([k, v]) => [k, unhex(v)] as const),
    };
    if (r.type !== 'dir') { out.links = r.links; out.inode = r.inode; }
    if (r.size !== undefined) { out.size = r.size; out.sha256 = r.sha256; }
    if (r.target !== undefined) out.target = unhex(r.target);
    if (r.rdev) out.rdev = { major: r.rdev[0], minor: r.rdev[1] };
    return out;
  });
}
