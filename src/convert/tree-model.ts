/**
 * An in-memory filesystem with the ApplyTarget methods: inodes with link counts, attributes
 * and xattrs, file contents kept as sha256 + size. It is the oracle the layer applier's tests
 * compare a real filesystem with (same operations → same `listing()`), and it is strict: every
 * call a filesystem would refuse (a name that exists, a missing entry, unlinking a directory,
 * data out of order) throws, so an applier bug shows up here first.
 *
 * A new model looks like a freshly formatted ext4 of this project: root (inode 2, 0755
 * root:root, mtime 0) holding lost+found (0700).
 */
import { createHash, type Hash } from 'node:crypto';
import { ObdError } from '../io/errors.ts';
import { ascii, byteKey, compareBytes, printable } from './bytes.ts';
import type { ApplyTarget, Attrs, DirEntryInfo, FileData, FileType, InodeInfo, Timespec } from './apply.ts';

/** A call the model (like a real filesystem) refuses. */
export class TreeModelError extends ObdError {}

interface Node {
  type: FileType;
  mode: number;
  uid: number;
  gid: number;
  mtime: Timespec;
  atime: Timespec;
  ctime: Timespec;
  xattrs: Map<string, Uint8Array>;
  /** Directory entries pointing here (for a directory: its entry in the parent). */
  nameLinks: number;
  size: number;
  sha256?: string;
  target?: Uint8Array;
  rdev?: { major: number; minor: number };
  children?: Map<string, { name: Uint8Array; ino: number }>;
}

/** One path of a tree, as listings compare them. */
export interface ListingRecord {
  /** Relative to the root ("" for the root itself). */
  path: Uint8Array;
  type: FileType;
  mode: number;
  uid: number;
  gid: number;
  mtime: Timespec;
  /** Regular files. */
  size?: number;
  sha256?: string;
  /** Symlinks. */
  target?: Uint8Array;
  /** Character and block devices. */
  rdev?: { major: number; minor: number };
  /** Non-directories: hard link count and an identity shared by the paths of one inode. */
  links?: number;
  inode?: number | string;
  xattrs: ReadonlyArray<readonly [string, Uint8Array]>;
}

export interface ListingOptions {
  /** Leave out lost+found at the root (an ext4 has one; a tar-unpacked tree does not). */
  noLostFound?: boolean;
  /** Directories' mtimes as "-". */
  noDirMtimes?: boolean;
}

const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.length).toString('hex');

const DOT = new Uint8Array([0x2e]);

/**
 * The conformance suite's listing shape (test/helpers/fs-listing.py), one line per path
 * sorted by its bytes: `PATH TYPE MODE UID:GID MTIME [DETAIL] [hl=FIRST] [x:NAME=HEX…]`.
 * PATH is relative ("." for the root) in printable() form; MTIME is sec.nsec (nine digits);
 * DETAIL is `size:sha256` for a file, `->target` for a symlink, `major,minor` for a device;
 * `hl=` names the byte-wise first path of a non-directory's hard link group when it has more
 * than one link; xattrs in name order.
 */
export function formatListing(records: Iterable<ListingRecord>, opts: ListingOptions = {}): string {
  const rows = [...records]
    .filter((r) => !(opts.noLostFound && byteKey(r.path) === 'lost+found'))
    .map((r) => ({ r, key: r.path.length ? r.path : DOT }))
    .sort((a, b) => compareBytes(a.key, b.key));
  const firstOfGroup = new Map<number | string, Uint8Array>();
  for (const { r, key } of rows) {
    if (r.type !== 'dir' && (r.links ?? 1) > 1 && r.inode !== undefined && !firstOfGroup.has(r.inode)) firstOfGroup.set(r.inode, key);
  }
  const lines: string[] = [];
  for (const { r, key } of rows) {
    const mtime = r.type === 'dir' && opts.noDirMtimes ? '-' : `${r.mtime.sec}.${String(r.mtime.nsec).padStart(9, '0')}`;
    const line = [printable(key), r.type, r.mode.toString(8).padStart(4, '0'), `${r.uid}:${r.gid}`, mtime];
    if (r.type === 'file') line.push(`${r.size}:${r.sha256}`);
    else if (r.type === 'symlink') line.push(`->${printable(r.target ?? new Uint8Array())}`);
    else if (r.type === 'chr' || r.type === 'blk') line.push(`${r.rdev?.major},${r.rdev?.minor}`);
    if (r.type !== 'dir' && (r.links ?? 1) > 1 && r.inode !== undefined) line.push(`hl=${printable(firstOfGroup.get(r.inode)!)}`);
    for (const [name, value] of [...r.xattrs].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) line.push(`x:${name}=${hex(value)}`);
    lines.push(line.join(' '));
  }
  return lines.join('\n');
}

const ZEROS = new Uint8Array(64 * 1024);

function hashZeros(h: Hash, n: number): void {
  for (; n > 0; n -= ZEROS.length) h.update(n >= ZEROS.length ? ZEROS : ZEROS.subarray(0, n));
}

export class TreeModel implements ApplyTarget {
  readonly root = 2;
  readonly #nodes = new Map<number, Node>();
  #nextIno = 12;

  constructor() {
    const zero = { sec: 0, nsec: 0 };
    this.#nodes.set(this.root, this.#node('dir', { mode: 0o755, uid: 0, gid: 0, mtime: zero }));
    this.#nodes.get(this.root)!.nameLinks = 1;
    this.#insert(this.root, ascii('lost+found'), 11, this.#node('dir', { mode: 0o700, uid: 0, gid: 0, mtime: zero }));
  }

  async lookup(dir: number, name: Uint8Array): Promise<number | undefined> {
    return this.#dir(dir).children!.get(byteKey(name))?.ino;
  }

  async stat(ino: number): Promise<InodeInfo> {
    const n = this.#get(ino);
    const info: InodeInfo = {
      ino, type: n.type, mode: n.mode, uid: n.uid, gid: n.gid, size: n.size,
      links: this.#links(n), mtime: n.mtime,
    };
    if (n.rdev) info.rdev = { ...n.rdev };
    return info;
  }

  async readdir(dir: number): Promise<DirEntryInfo[]> {
    return [...this.#dir(dir).children!.values()].map((c) => ({ name: c.name, ino: c.ino, type: this.#get(c.ino).type }));
  }

  async mkdir(dir: number, name: Uint8Array, attrs: Attrs): Promise<number> {
    return this.#create(dir, name, this.#node('dir', attrs));
  }

  async createFile(dir: number, name: Uint8Array, attrs: Attrs, size: number, data: FileData): Promise<number> {
    this.#checkNew(dir, name);
    const h = createHash('sha256');
    let pos = 0;
    for await (const { offset, bytes } of data) {
      if (offset < pos || offset + bytes.length > size) {
        throw new TreeModelError(`${printable(name)}: piece [${offset}, ${offset + bytes.length}) out of order or past the size ${size}`);
      }
      hashZeros(h, offset - pos);
      h.update(bytes);
      pos = offset + bytes.length;
    }
    hashZeros(h, size - pos);
    const node = this.#node('file', attrs);
    node.size = size;
    node.sha256 = h.digest('hex');
    return this.#create(dir, name, node);
  }

  async symlink(dir: number, name: Uint8Array, target: Uint8Array, attrs: Attrs): Promise<number> {
    const node = this.#node('symlink', attrs);
    node.target = target.slice();
    node.size = target.length;
    return this.#create(dir, name, node);
  }

  async mknod(dir: number, name: Uint8Array, type: 'chr' | 'blk' | 'fifo' | 'sock', attrs: Attrs,
    rdev?: { major: number; minor: number }): Promise<number> {
    const node = this.#node(type, attrs);
    if (type === 'chr' || type === 'blk') node.rdev = { major: rdev?.major ?? 0, minor: rdev?.minor ?? 0 };
    return this.#create(dir, name, node);
  }

  async link(dir: number, name: Uint8Array, ino: number): Promise<void> {
    const n = this.#get(ino);
    if (n.type === 'dir') throw new TreeModelError(`link to directory inode ${ino}`);
    this.#checkNew(dir, name);
    this.#dir(dir).children!.set(byteKey(name), { name: name.slice(), ino });
    n.nameLinks++;
  }

  async unlink(dir: number, name: Uint8Array): Promise<void> {
    const ino = this.#existing(dir, name);
    if (this.#get(ino).type === 'dir') throw new TreeModelError(`unlink of directory ${printable(name)}`);
    this.#drop(dir, name, ino);
  }

  async removeTree(dir: number, name: Uint8Array): Promise<void> {
    const ino = this.#existing(dir, name);
    const n = this.#get(ino);
    if (n.type === 'dir') {
      for (const c of [...n.children!.values()]) await this.removeTree(ino, c.name);
    }
    this.#drop(dir, name, ino);
  }

  async setAttrs(ino: number, attrs: Attrs): Promise<void> {
    this.#setAttrs(this.#get(ino), attrs);
  }

  /** Every path but the root, with its attributes. */
  records(): ListingRecord[] {
    const out: ListingRecord[] = [];
    const walk = (ino: number, prefix: Uint8Array | undefined): void => {
      for (const c of this.#get(ino).children!.values()) {
        const path = prefix ? concatPath(prefix, c.name) : c.name;
        const n = this.#get(c.ino);
        const r: ListingRecord = {
          path, type: n.type, mode: n.mode, uid: n.uid, gid: n.gid, mtime: n.mtime, xattrs: [...n.xattrs],
        };
        if (n.type === 'file') { r.size = n.size; r.sha256 = n.sha256; }
        if (n.type === 'symlink') r.target = n.target;
        if (n.rdev) r.rdev = n.rdev;
        if (n.type !== 'dir') { r.links = n.nameLinks; r.inode = c.ino; }
        out.push(r);
        if (n.type === 'dir') walk(c.ino, path);
      }
    };
    walk(this.root, undefined);
    const root = this.#get(this.root);
    out.push({ path: new Uint8Array(), type: 'dir', mode: root.mode, uid: root.uid, gid: root.gid, mtime: root.mtime, xattrs: [...root.xattrs] });
    return out;
  }

  listing(opts?: ListingOptions): string {
    return formatListing(this.records(), opts);
  }

  /** Live inodes (each hard-linked inode once). */
  get inodeCount(): number {
    return this.#nodes.size;
  }

  #node(type: FileType, attrs: Attrs): Node {
    const n: Node = {
      type, mode: 0, uid: 0, gid: 0, mtime: { sec: 0, nsec: 0 }, atime: { sec: 0, nsec: 0 }, ctime: { sec: 0, nsec: 0 },
      xattrs: new Map(), nameLinks: 0, size: 0,
    };
    if (type === 'dir') n.children = new Map();
    this.#setAttrs(n, attrs);
    return n;
  }

  #setAttrs(n: Node, a: Attrs): void {
    if ((a.mode & ~0o7777) !== 0) throw new TreeModelError(`mode ${a.mode.toString(8)} has more than permission bits`);
    n.mode = a.mode;
    n.uid = a.uid;
    n.gid = a.gid;
    n.mtime = { ...a.mtime };
    n.atime = { ...(a.atime ?? a.mtime) };
    n.ctime = { ...(a.ctime ?? a.mtime) };
    if (a.xattrs) n.xattrs = new Map([...a.xattrs].map(([k, v]) => [k, v.slice()]));
  }

  #links(n: Node): number {
    if (n.type !== 'dir') return n.nameLinks;
    let subdirs = 0;
    for (const c of n.children!.values()) if (this.#get(c.ino).type === 'dir') subdirs++;
    return 2 + subdirs;
  }

  #get(ino: number): Node {
    const n = this.#nodes.get(ino);
    if (!n) throw new TreeModelError(`inode ${ino} is not in use`);
    return n;
  }

  #dir(ino: number): Node {
    const n = this.#get(ino);
    if (n.type !== 'dir') throw new TreeModelError(`inode ${ino} is a ${n.type}, not a directory`);
    return n;
  }

  #checkNew(dir: number, name: Uint8Array): void {
    const d = this.#dir(dir);
    const bad = name.length === 0 || name.length > 255 || name.includes(0x2f) || name.includes(0)
      || (name[0] === 0x2e && (name.length === 1 || (name.length === 2 && name[1] === 0x2e)));
    if (bad) throw new TreeModelError(`invalid name "${printable(name)}"`);
    if (d.children!.has(byteKey(name))) throw new TreeModelError(`"${printable(name)}" exists in directory ${dir}`);
  }

  #existing(dir: number, name: Uint8Array): number {
    const c = this.#dir(dir).children!.get(byteKey(name));
    if (!c) throw new TreeModelError(`"${printable(name)}" is not in directory ${dir}`);
    return c.ino;
  }

  #create(dir: number, name: Uint8Array, node: Node): number {
    this.#checkNew(dir, name);
    const ino = this.#nextIno++;
    this.#insert(dir, name, ino, node);
    return ino;
  }

  #insert(dir: number, name: Uint8Array, ino: number, node: Node): void {
    this.#nodes.set(ino, node);
    this.#dir(dir).children!.set(byteKey(name), { name: name.slice(), ino });
    node.nameLinks++;
  }

  #drop(dir: number, name: Uint8Array, ino: number): void {
    this.#dir(dir).children!.delete(byteKey(name));
    const n = this.#get(ino);
    if (--n.nameLinks === 0) this.#nodes.delete(ino);
  }
}

function concatPath(prefix: Uint8Array, name: Uint8Array): Uint8Array {
  const out = new Uint8Array(prefix.length + 1 + name.length);
  out.set(prefix);
  out[prefix.length] = 0x2f;
  out.set(name, prefix.length + 1);
  return out;
}
