/**
 * The ext4 writer: a filesystem on an Ext4Device (docs/convert.md, convert-interfaces). Metadata
 * goes through the sector-diffing BlockCache and reaches the device at flush; file data is
 * written straight to the device in large coalesced writes as it streams in.
 */
import { Allocator } from './alloc.ts';
import { DataWriter } from './data.ts';
import { BlockCache } from './cache.ts';
import { Directory, FT } from './dir.ts';
import type { DirBlocks, DirOptions } from './dir.ts';
import {
  Ext4ArgumentError, Ext4ExistsError, Ext4NoSpaceError, Ext4NotDirectoryError, Ext4NotFoundError, showName,
} from './errors.ts';
import type { Extent } from './extents.ts';
import { pushRun, readTree, treeBlocksFor, writeTree } from './extents.ts';
import { formatMetadata, geometryForDevice, writeBackups } from './format.ts';
import { Groups } from './groups.ts';
import {
  decodeInode, decodeRdev, emptyInode, encodeInode, encodeRdev, FL_EXTENTS, FL_INDEX, S_IFDIR, S_IFMT, typeBits, typeOf, XATTR_IBODY,
} from './inode.ts';
import type { Inode } from './inode.ts';
import {
  BLOCK_SIZE, FLAGS_UNSIGNED_HASH, INODE_SIZE, LOST_FOUND_INO, ROOT_INO, Superblock,
} from './superblock.ts';
import type { Geometry } from './superblock.ts';
import type { Attrs, DirEntryInfo, Ext4Device, FileData, FileType, FormatOptions, InodeInfo } from './types.ts';
import { layout, toEntries } from './xattr.ts';

const SECTOR = 512;
const LINK_MAX = 65000;
const FT_NAME: readonly FileType[] = ['file', 'file', 'dir', 'chr', 'blk', 'fifo', 'sock', 'symlink'];

/** A directory's block map and its Directory view, kept while the engine runs. */
interface DirState {
  ino: number; pblks: number[]; tree: number[]; blocks: DirBlocks; dir: Directory;
  /** What the inode on disk describes (block count, htree flag): saveDir skips an unchanged one. */
  saved: { count: number; indexed: boolean };
}

export class Ext4 {
  readonly root = ROOT_INO;
  readonly #dev: Ext4Device;
  readonly #cache: BlockCache;
  readonly #geo: Geometry;
  readonly #sb: Superblock;
  readonly #gd: Groups;
  readonly #alloc: Allocator;
  readonly #dirOpts: DirOptions;
  readonly #dirs = new Map<number, DirState>();
  #inodesUsed: number;
  #dataBytes = 0;
  readonly #data: DataWriter;

  private constructor(dev: Ext4Device, cache: BlockCache, geo: Geometry, sb: Superblock, gd: Groups, alloc: Allocator) {
    this.#dev = dev;
    this.#cache = cache;
    this.#geo = geo;
    this.#sb = sb;
    this.#gd = gd;
    this.#alloc = alloc;
    const seed = sb.hashSeed;
    this.#dirOpts = {
      hash: 'half_md4', seed: seed.some((w) => w !== 0) ? seed : undefined,
      unsigned: (sb.flags & FLAGS_UNSIGNED_HASH) !== 0, dirIndex: true,
    };
    this.#inodesUsed = geo.inodes - sb.freeInodes;
    this.#data = new DataWriter(dev, () => alloc.block());
  }

  /** Makes an empty filesystem (root and lost+found) over the whole device; the device must read as zeros. */
  static async format(dev: Ext4Device, opts: FormatOptions): Promise<Ext4> {
    const geo = geometryForDevice(dev.name, dev.size, opts.inodeRatio ?? 16384);
    const cache = new BlockCache(dev);
    const { sb, groups, alloc } = formatMetadata(dev.name, cache, geo, opts);
    const fs = new Ext4(dev, cache, geo, sb, groups, alloc);
    await alloc.initCursor();
    for (let ino = 1; ino < LOST_FOUND_INO; ino++) await alloc.inode(ino === ROOT_INO);
    fs.#inodesUsed = LOST_FOUND_INO - 1;
    const t = { sec: 0, nsec: 0 };
    const rootAttrs: Attrs = { mode: 0o755, uid: 0, gid: 0, mtime: t };
    await fs.#newDir(ROOT_INO, ROOT_INO, rootAttrs);
    const lf = await fs.#allocInode(true);
    await fs.#newDir(lf, ROOT_INO, { mode: 0o700, uid: 0, gid: 0, mtime: t });
    const st = fs.#dirs.get(lf)!;
    for (let i = 1; i < 4; i++) {
      const b = await fs.#appendBlock(st);
      const buf = await fs.#cache.get(st.pblks[b]!);
      new DataView(buf.buffer, buf.byteOffset).setUint16(4, BLOCK_SIZE, true);
    }
    await fs.#saveDir(st);
    await (await fs.#dirState(ROOT_INO)).dir.add({ name: new TextEncoder().encode('lost+found'), ino: lf, fileType: FT.dir });
    await fs.#saveDir(fs.#dirs.get(ROOT_INO)!);
    await fs.#bumpLinks(ROOT_INO, 1);
    fs.#gd.seal();
    await writeBackups((b, o) => dev.write(b, o), geo, sb, groups);
    await fs.flush();
    return fs;
  }

  /** Opens a filesystem this engine can keep consistent (typed Ext4FormatError otherwise). */
  static async open(dev: Ext4Device): Promise<Ext4> {
    const cache = new BlockCache(dev);
    const block0 = await cache.get(0, true);
    const sb = new Superblock(block0.subarray(1024, 2048));
    const geo = sb.check(dev.name, dev.size);
    const gd = await Groups.load(cache, geo, sb.uuid);
    const alloc = new Allocator(dev.name, geo, gd, sb, cache);
    await alloc.initCursor();
    return new Ext4(dev, cache, geo, sb, gd, alloc);
  }

  get stats(): { dataBytes: number; metadataBytes: number; inodesUsed: number; blocksUsed: number } {
    return {
      dataBytes: this.#dataBytes, metadataBytes: this.#cache.written, inodesUsed: this.#inodesUsed,
      blocksUsed: this.#geo.blocks - this.#sb.freeBlocks,
    };
  }

  // ---- inodes ----

  async #inodeSlot(ino: number): Promise<{ block: number; at: number }> {
    if (!Number.isInteger(ino) || ino < 1 || ino > this.#geo.inodes) {
      throw new Ext4NotFoundError(`${this.#dev.name}: inode ${ino} out of range 1..${this.#geo.inodes}`);
    }
    const ipg = this.#geo.inodesPerGroup;
    const g = Math.floor((ino - 1) / ipg);
    const byte = ((ino - 1) % ipg) * INODE_SIZE;
    return { block: this.#gd.inodeTable(g) + Math.floor(byte / BLOCK_SIZE), at: byte % BLOCK_SIZE };
  }

  async #get(ino: number): Promise<Inode> {
    const { block, at } = await this.#inodeSlot(ino);
    const buf = await this.#cache.get(block);
    const inode = decodeInode(buf.subarray(at, at + INODE_SIZE));
    if (inode.links === 0 && inode.mode === 0) throw new Ext4NotFoundError(`${this.#dev.name}: inode ${ino} is not in use`);
    return inode;
  }

  async #put(ino: number, inode: Inode): Promise<void> {
    const { block, at } = await this.#inodeSlot(ino);
    const buf = await this.#cache.get(block);
    encodeInode(inode, buf.subarray(at, at + INODE_SIZE));
    this.#cache.dirty(block);
  }

  async #allocInode(dir: boolean): Promise<number> {
    const ino = await this.#alloc.inode(dir);
    this.#inodesUsed++;
    return ino;
  }

  #fill(inode: Inode, attrs: Attrs, type: FileType): void {
    inode.mode = typeBits(type) | (attrs.mode & 0o7777);
    inode.uid = attrs.uid >>> 0;
    inode.gid = attrs.gid >>> 0;
    inode.mtime = attrs.mtime;
    inode.atime = attrs.atime ?? attrs.mtime;
    inode.ctime = attrs.ctime ?? attrs.mtime;
    inode.crtime = inode.ctime;
  }

  /** Replaces the inode's xattrs (in-inode area, then one external block). */
  async #setXattrs(inode: Inode, xattrs: ReadonlyMap<string, Uint8Array>): Promise<void> {
    const block = layout(this.#dev.name, inode.ibody, toEntries(this.#dev.name, xattrs), BLOCK_SIZE);
    if (inode.fileAcl !== 0) {
      await this.#alloc.freeBlock(inode.fileAcl);
      inode.blocks -= BLOCK_SIZE / SECTOR;
      inode.fileAcl = 0;
    }
    if (block) {
      const b = await this.#alloc.block();
      this.#cache.fresh(b).set(block);
      inode.fileAcl = b;
      inode.blocks += BLOCK_SIZE / SECTOR;
    }
  }

  async #create(dir: number, name: Uint8Array, attrs: Attrs, type: FileType,
    body: (ino: number, inode: Inode) => Promise<void>): Promise<number> {
    const st = await this.#dirState(dir);
    this.#checkName(name);
    if (await st.dir.lookup(name)) throw new Ext4ExistsError(this.#dev.name, dir, name);
    const ino = await this.#allocInode(type === 'dir');
    const inode = emptyInode();
    this.#fill(inode, attrs, type);
    inode.links = 1;
    // A failure here (bad xattrs, a data stream that throws, no space) leaves nothing behind.
    const allocated = this.#alloc.record();
    try {
      if (attrs.xattrs) await this.#setXattrs(inode, attrs.xattrs);
      await body(ino, inode);
    } catch (e) {
      await this.#data.drain().catch(() => {});
      for (const b of allocated.splice(0)) await this.#alloc.freeBlock(b);
      await this.#alloc.freeInode(ino, type === 'dir');
      this.#inodesUsed--;
      throw e;
    } finally {
      this.#alloc.stopRecording();
    }
    await this.#put(ino, inode);
    await st.dir.add({ name, ino, fileType: FT[type] });
    await this.#saveDir(st);
    return ino;
  }

  #checkName(name: Uint8Array): void {
    const bad = name.length === 0 || name.length > 255 || name.includes(0x2f) || name.includes(0) ||
      (name.length === 1 && name[0] === 0x2e) || (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e);
    if (bad) throw new Ext4ArgumentError(`${this.#dev.name}: invalid name "${showName(name)}"`);
  }

  async #bumpLinks(ino: number, delta: number): Promise<void> {
    const inode = await this.#get(ino);
    const dir = (inode.mode & S_IFMT) === S_IFDIR;
    if (dir) {
      // dir_nlink: past LINK_MAX a directory counts 1, and stays 1 (its true count is no longer kept).
      if (inode.links === 1) return;
      inode.links = inode.links + delta > LINK_MAX ? 1 : Math.max(2, inode.links + delta);
    } else {
      if (inode.links + delta > LINK_MAX) throw new Ext4NoSpaceError(`${this.#dev.name}: inode ${ino} has ${inode.links} links already`);
      inode.links += delta;
    }
    await this.#put(ino, inode);
  }

  // ---- directories ----

  async #dirState(ino: number): Promise<DirState> {
    const have = this.#dirs.get(ino);
    if (have) return have;
    const inode = await this.#get(ino);
    if ((inode.mode & S_IFMT) !== S_IFDIR) throw new Ext4NotDirectoryError(`${this.#dev.name}: inode ${ino} is not a directory`);
    const { extents, treeBlocks } = await readTree(this.#dev.name, ino, inode.block, (b) => this.#cache.get(b));
    const pblks: number[] = [];
    for (const e of extents) {
      if (e.lblk !== pblks.length) throw new Ext4NotDirectoryError(`${this.#dev.name}: directory inode ${ino} has a hole at block ${pblks.length}`);
      for (let i = 0; i < e.len; i++) pblks.push(e.pblk + i);
    }
    const st = this.#dirStateOf(ino, pblks, treeBlocks, (inode.flags & FL_INDEX) !== 0);
    this.#dirs.set(ino, st);
    return st;
  }

  #dirStateOf(ino: number, pblks: number[], tree: number[], indexed: boolean): DirState {
    const cache = this.#cache;
    const st = { ino, pblks, tree, saved: { count: pblks.length, indexed } } as DirState;
    const blocks: DirBlocks = {
      name: `${this.#dev.name}: inode ${ino}`,
      blockSize: BLOCK_SIZE,
      get count() { return pblks.length; },
      read: (lblk) => cache.get(pblks[lblk]!),
      dirty: (lblk) => cache.dirty(pblks[lblk]!),
      append: () => this.#appendBlock(st),
    };
    st.blocks = blocks;
    st.dir = new Directory(blocks, this.#dirOpts, indexed);
    return st;
  }

  async #appendBlock(st: DirState): Promise<number> {
    const b = await this.#alloc.block();
    this.#cache.slack(b);
    st.pblks.push(b);
    return st.pblks.length - 1;
  }

  /** Writes a directory inode's size, block count, extent tree and index flag after a change. */
  async #saveDir(st: DirState): Promise<void> {
    if (st.saved.count === st.pblks.length && st.saved.indexed === st.dir.indexed) return;
    st.saved = { count: st.pblks.length, indexed: st.dir.indexed };
    const inode = await this.#get(st.ino);
    const extents: Extent[] = [];
    for (let i = 0; i < st.pblks.length; i++) pushRun(extents, i, st.pblks[i]!, 1);
    while (st.tree.length < treeBlocksFor(extents.length)) {
      const b = await this.#alloc.block();
      this.#cache.slack(b);
      st.tree.push(b);
    }
    await writeTree(inode.block, extents, st.tree, async (b) => {
      this.#cache.dirty(b);
      return this.#cache.get(b);
    });
    inode.size = st.pblks.length * BLOCK_SIZE;
    inode.blocks = (st.pblks.length + st.tree.length + (inode.fileAcl ? 1 : 0)) * (BLOCK_SIZE / SECTOR);
    inode.flags = (inode.flags & ~FL_INDEX) | FL_EXTENTS | (st.dir.indexed ? FL_INDEX : 0);
    await this.#put(st.ino, inode);
  }

  async #newDir(ino: number, parent: number, attrs: Attrs): Promise<void> {
    const inode = emptyInode();
    this.#fill(inode, attrs, 'dir');
    inode.links = 2;
    inode.flags = FL_EXTENTS;
    if (attrs.xattrs) await this.#setXattrs(inode, attrs.xattrs);
    await this.#put(ino, inode);
    const st = this.#dirStateOf(ino, [], [], false);
    this.#dirs.set(ino, st);
    await Directory.init(st.blocks, ino, parent);
    await this.#saveDir(st);
  }

  async lookup(dir: number, name: Uint8Array): Promise<number | undefined> {
    return (await (await this.#dirState(dir)).dir.lookup(name))?.ino;
  }

  async readdir(dir: number): Promise<DirEntryInfo[]> {
    const out: DirEntryInfo[] = [];
    for await (const e of (await this.#dirState(dir)).dir.entries()) {
      out.push({ name: e.name, ino: e.ino, type: FT_NAME[e.fileType] ?? 'file' });
    }
    return out;
  }

  async stat(ino: number): Promise<InodeInfo> {
    const inode = await this.#get(ino);
    const type = typeOf(inode.mode);
    if (!type) throw new Ext4NotFoundError(`${this.#dev.name}: inode ${ino} has no file type (mode 0${inode.mode.toString(8)})`);
    const info: InodeInfo = {
      ino, type, mode: inode.mode & 0o7777, uid: inode.uid, gid: inode.gid, size: inode.size,
      links: inode.links, mtime: inode.mtime,
    };
    if (type === 'chr' || type === 'blk') info.rdev = decodeRdev(inode.block);
    return info;
  }

  async mkdir(dir: number, name: Uint8Array, attrs: Attrs): Promise<number> {
    const parent = await this.#dirState(dir);
    this.#checkName(name);
    if (await parent.dir.lookup(name)) throw new Ext4ExistsError(this.#dev.name, dir, name);
    if (attrs.xattrs) layout(this.#dev.name, new Uint8Array(INODE_SIZE - XATTR_IBODY), toEntries(this.#dev.name, attrs.xattrs), BLOCK_SIZE);
    const ino = await this.#allocInode(true);
    await this.#newDir(ino, dir, attrs);
    await parent.dir.add({ name, ino, fileType: FT.dir });
    await this.#saveDir(parent);
    await this.#bumpLinks(dir, 1);
    return ino;
  }

  async symlink(dir: number, name: Uint8Array, target: Uint8Array, attrs: Attrs): Promise<number> {
    if (target.length === 0 || target.length >= BLOCK_SIZE) {
      throw new Ext4ArgumentError(`${this.#dev.name}: symlink "${showName(name)}" target of ${target.length} bytes (1..${BLOCK_SIZE - 1})`);
    }
    return this.#create(dir, name, attrs, 'symlink', async (_ino, inode) => {
      inode.size = target.length;
      if (target.length < 60) {
        inode.block.set(target);
        return;
      }
      const b = await this.#alloc.block();
      const buf = new Uint8Array(Math.ceil(target.length / SECTOR) * SECTOR);
      buf.set(target);
      await this.#data.write(buf, b * BLOCK_SIZE);
      await writeTree(inode.block, [{ lblk: 0, pblk: b, len: 1 }], [], async () => new Uint8Array(0));
      inode.flags |= FL_EXTENTS;
      inode.blocks += BLOCK_SIZE / SECTOR;
    });
  }

  async mknod(dir: number, name: Uint8Array, type: 'chr' | 'blk' | 'fifo' | 'sock', attrs: Attrs,
    rdev?: { major: number; minor: number }): Promise<number> {
    return this.#create(dir, name, attrs, type, async (_ino, inode) => {
      if (type === 'chr' || type === 'blk') encodeRdev(inode.block, rdev?.major ?? 0, rdev?.minor ?? 0);
    });
  }

  async createFile(dir: number, name: Uint8Array, attrs: Attrs, size: number, data: FileData): Promise<number> {
    if (!Number.isSafeInteger(size) || size < 0) throw new Ext4ArgumentError(`${this.#dev.name}: file "${showName(name)}" size ${size}`);
    return this.#create(dir, name, attrs, 'file', async (_ino, inode) => {
      const { extents, written } = await this.#data.file(showName(name), size, data);
      const tree: number[] = [];
      for (let i = treeBlocksFor(extents.length); i > 0; i--) tree.push(await this.#alloc.block());
      await writeTree(inode.block, extents, tree, async (b) => this.#cache.slack(b));
      let blocks = tree.length;
      for (const e of extents) blocks += e.len;
      inode.size = size;
      inode.flags |= FL_EXTENTS;
      inode.blocks += blocks * (BLOCK_SIZE / SECTOR);
      this.#dataBytes += written;
    });
  }

  async link(dir: number, name: Uint8Array, ino: number): Promise<void> {
    const inode = await this.#get(ino);
    if ((inode.mode & S_IFMT) === S_IFDIR) throw new Ext4NotDirectoryError(`${this.#dev.name}: cannot hard-link directory inode ${ino}`);
    const st = await this.#dirState(dir);
    this.#checkName(name);
    if (await st.dir.lookup(name)) throw new Ext4ExistsError(this.#dev.name, dir, name);
    await this.#bumpLinks(ino, 1);
    await st.dir.add({ name, ino, fileType: FT[typeOf(inode.mode) ?? 'file'] });
    await this.#saveDir(st);
  }

  async unlink(dir: number, name: Uint8Array): Promise<void> {
    const st = await this.#dirState(dir);
    const e = await st.dir.lookup(name);
    if (!e) throw new Ext4NotFoundError(`${this.#dev.name}: "${showName(name)}" not found in directory inode ${dir}`);
    const inode = await this.#get(e.ino);
    if ((inode.mode & S_IFMT) === S_IFDIR) throw new Ext4NotDirectoryError(`${this.#dev.name}: "${showName(name)}" is a directory (use removeTree)`);
    await st.dir.remove(name);
    await this.#saveDir(st);
    await this.#dropLink(e.ino);
  }

  async removeTree(dir: number, name: Uint8Array): Promise<void> {
    const st = await this.#dirState(dir);
    const e = await st.dir.lookup(name);
    if (!e) throw new Ext4NotFoundError(`${this.#dev.name}: "${showName(name)}" not found in directory inode ${dir}`);
    const inode = await this.#get(e.ino);
    if ((inode.mode & S_IFMT) !== S_IFDIR) return this.unlink(dir, name);
    await this.#destroyDir(e.ino);
    await st.dir.remove(name);
    await this.#saveDir(st);
    await this.#bumpLinks(dir, -1);
  }

  async #destroyDir(ino: number): Promise<void> {
    const st = await this.#dirState(ino);
    const children: { ino: number; dir: boolean }[] = [];
    for await (const e of st.dir.entries()) children.push({ ino: e.ino, dir: e.fileType === FT.dir });
    for (const c of children) {
      if (c.dir) await this.#destroyDir(c.ino);
      else await this.#dropLink(c.ino);
    }
    const inode = await this.#get(ino);
    for (const b of [...st.pblks, ...st.tree]) await this.#alloc.freeBlock(b);
    this.#dirs.delete(ino);
    await this.#freeInode(ino, inode, true);
  }

  async #dropLink(ino: number): Promise<void> {
    const inode = await this.#get(ino);
    if (inode.links > 1) {
      inode.links--;
      await this.#put(ino, inode);
      return;
    }
    await this.#data.drain();
    if ((inode.flags & FL_EXTENTS) !== 0) {
      const { extents, treeBlocks } = await readTree(this.#dev.name, ino, inode.block, (b) => this.#cache.get(b));
      for (const e of extents) for (let i = 0; i < e.len; i++) await this.#alloc.freeBlock(e.pblk + i);
      for (const b of treeBlocks) await this.#alloc.freeBlock(b);
    }
    await this.#freeInode(ino, inode, false);
  }

  async #freeInode(ino: number, inode: Inode, dir: boolean): Promise<void> {
    if (inode.fileAcl !== 0) await this.#alloc.freeBlock(inode.fileAcl);
    await this.#put(ino, emptyInode());
    await this.#alloc.freeInode(ino, dir);
    this.#inodesUsed--;
  }

  async setAttrs(ino: number, attrs: Attrs): Promise<void> {
    const inode = await this.#get(ino);
    const type = typeOf(inode.mode)!;
    this.#fill(inode, attrs, type);
    if (attrs.xattrs) await this.#setXattrs(inode, attrs.xattrs);
    await this.#put(ino, inode);
  }

  /** Writes every dirty metadata sector; afterwards the filesystem is consistent on the device. */
  async flush(): Promise<void> {
    await this.#data.drain();
    this.#gd.seal();
    this.#cache.dirty(0);
    await this.#cache.flush();
  }
}
