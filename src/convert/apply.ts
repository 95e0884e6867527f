/**
 * One OCI layer's tar entries applied onto a filesystem with the layer-changeset semantics of
 * the OCI image spec (layer.md), the way an unpacker over the layers below sees them:
 *
 * - `.wh.NAME` deletes NAME (of any type, a directory with all it holds) as the layers below
 *   left it; `.wh..wh..opq` empties its directory of what the layers below left in it. Neither
 *   is created, neither hides what this layer itself adds, before or after the marker
 *   (umoci's rule: a path this layer created, or an ancestor of one, is kept and its lower
 *   children are purged instead). A whiteout of something absent does nothing; other
 *   `.wh..wh.` names (AUFS metadata such as `.wh..wh.plnk`) and entries below a `.wh.` name
 *   are skipped.
 * - An entry over an existing path: a directory over a directory keeps the children and takes
 *   the entry's attributes (xattrs replaced); anything else removes what was there first (a
 *   whole tree if a directory).
 * - Parents: a missing parent is made 0755 root:root with mtime 0. A parent component that is
 *   not a directory (a symlink, a file, a device) is replaced by such a directory, as
 *   containerd's overlayfs applier shows it (an upper directory over a lower non-directory
 *   hides it); symlinks are never followed, so no entry can reach outside the tree. (umoci
 *   instead follows a symlink parent inside the root and fails on a file parent; well-formed
 *   layers never have either.)
 * - Hardlinks name a path created earlier in this layer or in a lower one, resolved without
 *   following symlinks; it must exist and not be a directory. A hardlink over its own target
 *   is a no-op; a hardlink's own header attributes are ignored (they are the target's).
 * - The entry "" (the layer's "./") sets the root's attributes.
 * - Symlinks are created 0777 whatever the header says: Linux has no symlink modes and every
 *   unpacker shows 0777.
 *
 * Files are streamed into the filesystem piece by piece (a sparse file's holes stay holes).
 */
import { ascii, byteKey, keyBytes, splitPath, startsWith } from './bytes.ts';
import { HardlinkTargetError, InvalidEntryError, LayerApplyError } from './errors.ts';
import type { TarEntry } from '../tar/types.ts';
import type { Attrs, DirEntryInfo, FileData, FileType, InodeInfo, Timespec } from '../ext4/types.ts';

// ApplyTarget is structural so that any filesystem with these methods (Ext4, the in-memory
// TreeModel) can be driven; the value shapes are src/ext4's.
export type { Attrs, DirEntryInfo, FileData, FileType, InodeInfo, Timespec };

/** What applyLayer needs of a filesystem: the subset of Ext4 it calls. */
export interface ApplyTarget {
  readonly root: number;
  lookup(dir: number, name: Uint8Array): Promise<number | undefined>;
  stat(ino: number): Promise<InodeInfo>;
  readdir(dir: number): Promise<DirEntryInfo[]>;
  mkdir(dir: number, name: Uint8Array, attrs: Attrs): Promise<number>;
  createFile(dir: number, name: Uint8Array, attrs: Attrs, size: number, data: FileData): Promise<number>;
  symlink(dir: number, name: Uint8Array, target: Uint8Array, attrs: Attrs): Promise<number>;
  mknod(dir: number, name: Uint8Array, type: 'chr' | 'blk' | 'fifo' | 'sock', attrs: Attrs,
    rdev?: { major: number; minor: number }): Promise<number>;
  link(dir: number, name: Uint8Array, ino: number): Promise<void>;
  unlink(dir: number, name: Uint8Array): Promise<void>;
  removeTree(dir: number, name: Uint8Array): Promise<void>;
  setAttrs(ino: number, attrs: Attrs): Promise<void>;
}

/** What the applier reads: src/tar's entries. */
export type ApplyEntry = TarEntry;

export interface ApplyStats {
  /** Tar entries read, whiteouts and skipped ones included. */
  entries: number;
  files: number;
  dirs: number;
  /** Whiteouts and opaque markers. */
  whiteouts: number;
  /** File data bytes handed to the filesystem (a sparse file's data segments only). */
  bytes: number;
}

/**
 * Applies one layer's entries onto `fs` (module comment: the semantics). Does not flush.
 * A failure applying an entry is a LayerApplyError naming `opts.name`, the entry path and the
 * cause; a failure of the entry stream itself propagates as it is.
 */
export async function applyLayer(fs: ApplyTarget, entries: AsyncIterable<ApplyEntry>,
  opts?: { name?: string }): Promise<ApplyStats> {
  const layer = new LayerApplier(fs);
  const name = opts?.name ?? 'layer';
  for await (const entry of entries) {
    try {
      await layer.apply(entry);
    } catch (e) {
      throw new LayerApplyError(name, entry.path, e);
    }
  }
  return layer.stats;
}

const WHITEOUT = ascii('.wh.');
const META = ascii('.wh..wh.');
const OPAQUE = ascii('.wh..wh..opq');
const SLASH = '/';
const WH = byteKey(WHITEOUT);
const MAX_NAME = 255;

const IMPLICIT_DIR: Attrs = { mode: 0o755, uid: 0, gid: 0, mtime: { sec: 0, nsec: 0 }, xattrs: new Map() };

/**
 * The state of applying one layer. Paths are keyed by byteKey of the normalized path bytes.
 *
 * What whiteouts must keep (umoci's "upper paths": what this layer wrote and every ancestor
 * of it) is tracked by inode, not by path, so a layer of a million entries costs a set of
 * numbers: an inode this layer created, or a directory it wrote or made a path through, is
 * its own (no entry of a lower layer can name an inode created in this one, and directories
 * have one name); only a hardlink's name is kept by path, since its inode may be a lower one
 * that lower names share.
 */
class LayerApplier {
  readonly stats: ApplyStats = { entries: 0, files: 0, dirs: 0, whiteouts: 0, bytes: 0 };
  readonly #fs: ApplyTarget;
  readonly #upper = new Set<number>();
  readonly #upperLinks = new Set<string>();
  /**
   * Directories resolved in this layer (tar entries come grouped by directory), all in
   * #upper; and those only looked up for whiteouts, which are not. Both are dropped whenever
   * a directory is removed (its inode number may come back as something else).
   */
  readonly #dirs = new Map<string, number>();
  readonly #seen = new Map<string, number>();

  constructor(fs: ApplyTarget) {
    this.#fs = fs;
    this.#dirs.set('', fs.root);
  }

  async apply(e: ApplyEntry): Promise<void> {
    this.stats.entries++;
    // Keys are the normalized path itself (one char per byte): the parent's is everything
    // before the last "/", so an entry costs one conversion, not one per component.
    const key = byteKey(e.path);
    if (key === '') return this.#applyRoot(e);
    const slash = key.lastIndexOf(SLASH);
    const parentKey = slash < 0 ? '' : key.slice(0, slash);
    const base = e.path.subarray(slash + 1);
    checkName(base);
    // Below a .wh. name is nothing a filesystem can hold (AUFS metadata, or a malformed layer).
    if (parentKey.startsWith(WH) || parentKey.includes(SLASH + WH)) return;
    if (startsWith(base, WHITEOUT)) return this.#whiteout(parentKey, base);

    const parent = await this.#makeParents(parentKey);
    const fs = this.#fs;
    const existing = await fs.lookup(parent, base);

    if (e.type === 'hardlink') {
      await this.#hardlink(e, parent, base, existing);
      this.#upperLinks.add(key);
      return;
    }
    let ino: number;
    if (e.type === 'dir') {
      this.stats.dirs++;
      if (existing !== undefined && (await fs.stat(existing)).type === 'dir') {
        await fs.setAttrs(existing, attrsOf(e));
        ino = existing;
      } else {
        if (existing !== undefined) await this.#remove(parent, base, existing);
        ino = await fs.mkdir(parent, base, attrsOf(e));
      }
      this.#dirs.set(key, ino);
    } else {
      if (existing !== undefined) await this.#remove(parent, base, existing);
      const attrs = attrsOf(e);
      switch (e.type) {
        case 'file':
          this.stats.files++;
          this.stats.bytes += e.sparse ? e.sparse.reduce((n, s) => n + s.length, 0) : e.size;
          ino = await fs.createFile(parent, base, attrs, e.size, e.data());
          break;
        case 'symlink':
          ino = await fs.symlink(parent, base, e.linkname, { ...attrs, mode: 0o777 });
          break;
        case 'chr':
        case 'blk':
          ino = await fs.mknod(parent, base, e.type, attrs, { major: e.devmajor, minor: e.devminor });
          break;
        case 'fifo':
          ino = await fs.mknod(parent, base, 'fifo', attrs);
          break;
      }
    }
    this.#upper.add(ino);
  }

  async #applyRoot(e: ApplyEntry): Promise<void> {
    if (e.type !== 'dir') throw new InvalidEntryError(`the layer's root entry is a ${e.type}, not a directory`);
    this.stats.dirs++;
    await this.#fs.setAttrs(this.#fs.root, attrsOf(e));
  }

  async #hardlink(e: ApplyEntry, parent: number, base: Uint8Array, existing: number | undefined): Promise<void> {
    let target = await this.#linkTarget(e.linkname);
    if (existing !== undefined) {
      if (existing === target) return;
      const removedDir = await this.#remove(parent, base, existing);
      // The target may have been inside the directory just removed.
      if (removedDir) target = await this.#linkTarget(e.linkname);
    }
    await this.#fs.link(parent, base, target);
  }

  /** The inode a hardlink names: every component but the last a directory, never following a symlink. */
  async #linkTarget(linkname: Uint8Array): Promise<number> {
    const fs = this.#fs;
    const parts = splitPath(linkname);
    let ino: number | undefined = fs.root;
    for (let i = 0; i < parts.length && ino !== undefined; i++) {
      if (i > 0 && (await fs.stat(ino)).type !== 'dir') ino = undefined;
      else ino = await fs.lookup(ino, parts[i]!);
    }
    if (ino === undefined || parts.length === 0) throw new HardlinkTargetError(linkname, 'missing');
    if ((await fs.stat(ino)).type === 'dir') throw new HardlinkTargetError(linkname, 'directory');
    return ino;
  }

  /** The directory at `key`, made (or made a directory) where it is not one; it and its ancestors become this layer's. */
  async #makeParents(key: string): Promise<number> {
    const cached = this.#dirs.get(key);
    if (cached !== undefined) return cached;
    const fs = this.#fs;
    const slash = key.lastIndexOf(SLASH);
    const up = await this.#makeParents(slash < 0 ? '' : key.slice(0, slash));
    const name = keyBytes(key.slice(slash + 1));
    checkName(name);
    let ino = await fs.lookup(up, name);
    if (ino !== undefined && (await fs.stat(ino)).type !== 'dir') {
      await this.#remove(up, name, ino);
      ino = undefined;
    }
    if (ino === undefined) ino = await fs.mkdir(up, name, IMPLICIT_DIR);
    this.#upper.add(ino);
    this.#dirs.set(key, ino);
    return ino;
  }

  /** The directory at `key` if every component exists and is a directory (whiteouts never create). */
  async #existingDir(key: string): Promise<number | undefined> {
    const cached = this.#dirs.get(key) ?? this.#seen.get(key);
    if (cached !== undefined) return cached;
    const fs = this.#fs;
    let ino: number | undefined = fs.root;
    for (const name of splitPath(keyBytes(key))) {
      if (name.length > MAX_NAME) return undefined;
      ino = await fs.lookup(ino, name);
      if (ino === undefined || (await fs.stat(ino)).type !== 'dir') return undefined;
    }
    this.#seen.set(key, ino);
    return ino;
  }

  async #whiteout(parentKey: string, base: Uint8Array): Promise<void> {
    const isOpaque = base.length === OPAQUE.length && startsWith(base, OPAQUE);
    if (!isOpaque && startsWith(base, META)) return;
    const name = base.subarray(WHITEOUT.length);
    if (!isOpaque && (name.length === 0 || (name[0] === 0x2e && (name.length === 1 || (name.length === 2 && name[1] === 0x2e))))) return;
    this.stats.whiteouts++;
    const dir = await this.#existingDir(parentKey);
    if (dir === undefined) return;
    if (isOpaque) {
      await this.#purgeChildren(dir, parentKey);
      return;
    }
    const ino = await this.#fs.lookup(dir, name);
    if (ino !== undefined) await this.#purge(dir, name, ino, undefined, childKey(parentKey, name));
  }

  /** Removes what the layers below left at `key`: all of it, or, for what this layer wrote, what lies under it. */
  async #purge(dir: number, name: Uint8Array, ino: number, type: FileType | undefined, key: string): Promise<void> {
    if (!this.#upper.has(ino) && !this.#upperLinks.has(key)) {
      await this.#remove(dir, name, ino, type);
      return;
    }
    if ((type ?? (await this.#fs.stat(ino)).type) === 'dir') await this.#purgeChildren(ino, key);
  }

  async #purgeChildren(dir: number, key: string): Promise<void> {
    for (const c of await this.#fs.readdir(dir)) await this.#purge(dir, c.name, c.ino, c.type, childKey(key, c.name));
  }

  /** Removes one entry of any type; says whether it was a directory. */
  async #remove(dir: number, name: Uint8Array, ino: number, type?: FileType): Promise<boolean> {
    const isDir = (type ?? (await this.#fs.stat(ino)).type) === 'dir';
    if (isDir) {
      await this.#fs.removeTree(dir, name);
      this.#dirs.clear();
      this.#seen.clear();
      this.#dirs.set('', this.#fs.root);
    } else {
      await this.#fs.unlink(dir, name);
    }
    return isDir;
  }
}

function childKey(parentKey: string, name: Uint8Array): string {
  return parentKey === '' ? byteKey(name) : parentKey + SLASH + byteKey(name);
}

function checkName(name: Uint8Array): void {
  if (name.length > MAX_NAME) throw new InvalidEntryError(`a name of ${name.length} bytes (ext4 allows ${MAX_NAME})`);
}

function attrsOf(e: ApplyEntry): Attrs {
  return { mode: e.mode & 0o7777, uid: e.uid, gid: e.gid, mtime: e.mtime, atime: e.atime, ctime: e.ctime, xattrs: e.xattrs };
}
