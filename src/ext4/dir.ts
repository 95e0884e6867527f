/**
 * ext4 directories: linear blocks of ext4_dir_entry_2 records and the htree index over them.
 *
 * Linear block: records `inode u32, rec_len u16, name_len u8, file_type u8, name`, each
 * 4-byte aligned, the last one's rec_len reaching the block end; a record with inode 0 is free
 * space. Block 0 starts with "." (rec_len 12) and "..".
 *
 * Htree (EXT4_INDEX_FL): block 0 becomes the dx_root — "." and a ".." whose rec_len covers
 * the rest of the block (so linear readers see nothing else), then dx_root_info (8 bytes) and
 * an array of dx_entry {hash u32, block u32} whose first slot holds {limit u16, count u16}
 * instead of a hash (its hash is implicitly 0). With indirect_levels 1 each root entry points to
 * an index node: a free record spanning the block, then the same count/limit array. Index
 * entries point to leaves, which are ordinary linear blocks holding the names whose hash is at
 * least the entry's hash and below the next entry's. Low bit set in an entry's hash means the
 * leaf continues a run of one hash from the leaf before (collisions across a split), so lookups
 * go on into the next leaf while its hash (without that bit) equals theirs.
 *
 * Growth follows the kernel: a one-block directory becomes an htree when its block is full
 * (its entries move to new leaves, block 0 becomes the root); a full leaf splits at its median
 * hash into a new block appended at the end; a full root at level 0 moves its entries into a
 * new index node (level 1); a full index node splits in half. Removal never rebalances (ext4
 * allows empty leaves). e2fsck's pass 2 checks all of this (every block referenced once, one
 * depth for all leaves, each leaf's hashes within its index range), and test/ext4 runs it.
 */
import { FormatError, NoSpaceError, NotSupportedError } from '../io/errors.ts';
import { dirHashInto, HASH_CODE, type HashVersion } from './hash.ts';

export const FT = { unknown: 0, file: 1, dir: 2, chr: 3, blk: 4, fifo: 5, sock: 6, symlink: 7 } as const;

export interface DirEntry { name: Uint8Array; ino: number; fileType: number }

/** The directory's logical blocks as the engine keeps them (its metadata cache). */
export interface DirBlocks {
  /** For error messages (e.g. "image: inode 1234"); default "directory". */
  readonly name?: string;
  readonly blockSize: number;
  readonly count: number;                    // logical blocks the directory has
  read(lblk: number): Promise<Uint8Array>;   // the cached block; mutate in place then dirty()
  dirty(lblk: number): void;
  append(): Promise<number>;                 // a new zeroed block at the end; returns its lblk
}

export interface DirOptions { hash: HashVersion; seed: Uint32Array | undefined; unsigned: boolean; dirIndex: boolean }

/** A directory block does not hold what ext4 requires; `offset` is the byte offset in the directory. */
export class DirCorruptError extends FormatError {}

/** A directory ext4 allows but this code does not handle (3-level htree, siphash). */
export class DirUnsupportedError extends NotSupportedError {}

/** The htree is at its maximum (two levels without large_dir: about 260,000 leaves). */
export class DirFullError extends NoSpaceError {}

const HEADER = 8;
const DOTDOT = 12;
const ROOT_INFO = 24;
const NODE_BASE = 8;
const BLOCK_MASK = 0x0fffffff;
const MAX_LEVELS = 1;
const HASH_VERSIONS: readonly HashVersion[] = ['legacy', 'half_md4', 'tea'];

/** The rec_len a name of `len` bytes needs. */
export function recLenFor(len: number): number {
  return (HEADER + len + 3) & ~3;
}

function u16(b: Uint8Array, o: number): number {
  return b[o] | (b[o + 1] << 8);
}
function u32(b: Uint8Array, o: number): number {
  return (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0;
}
function put16(b: Uint8Array, o: number, v: number): void {
  b[o] = v;
  b[o + 1] = v >>> 8;
}
function put32(b: Uint8Array, o: number, v: number): void {
  b[o] = v;
  b[o + 1] = v >>> 8;
  b[o + 2] = v >>> 16;
  b[o + 3] = v >>> 24;
}

/** rec_len as stored: 64 KiB blocks keep a block-long record as 0xffff (the kernel's encoding). */
function recLen(b: Uint8Array, o: number): number {
  const r = u16(b, o + 4);
  if (b.length < 65536) return r;
  return r === 0xffff || r === 0 ? b.length : (r & 0xfffc) | ((r & 3) << 16);
}
function setRecLen(b: Uint8Array, o: number, len: number): void {
  put16(b, o + 4, len >= 65536 ? 0xffff : len);
}

function writeEntry(b: Uint8Array, o: number, len: number, name: Uint8Array, ino: number, fileType: number): void {
  put32(b, o, ino);
  setRecLen(b, o, len);
  b[o + 6] = name.length;
  b[o + 7] = fileType;
  b.set(name, o + HEADER);
  b.fill(0, o + HEADER + name.length, o + recLenFor(name.length));
}

function nameEquals(b: Uint8Array, o: number, name: Uint8Array): boolean {
  const n = name.length;
  if (b[o + 6] !== n) return false;
  const p = o + HEADER;
  for (let i = 0; i < n; i++) if (b[p + i] !== name[i]) return false;
  return true;
}

/** Where one level of the index is being read: the block, its count/limit offset, the slot. */
interface HashSettings { readonly version: HashVersion; readonly unsigned: boolean }

interface Frame { lblk: number; b: Uint8Array; base: number; at: number }

function count(f: Frame): number {
  return u16(f.b, f.base + 2);
}
function limit(f: Frame): number {
  return u16(f.b, f.base);
}
function hashAt(f: Frame, i: number): number {
  return i === 0 ? 0 : u32(f.b, f.base + 8 * i);
}
function blockAt(f: Frame, i: number): number {
  return u32(f.b, f.base + 8 * i + 4) & BLOCK_MASK;
}

/** Inserts {hash, block} after slot `f.at` (the caller checked count < limit). */
function insertIndex(f: Frame, hash: number, block: number): void {
  const n = count(f);
  const at = f.base + 8 * (f.at + 1);
  f.b.copyWithin(at + 8, at, f.base + 8 * n);
  put32(f.b, at, hash);
  put32(f.b, at + 4, block);
  put16(f.b, f.base + 2, n + 1);
}

/** Initializes an index node (fake free record spanning the block, then count/limit). */
function initNode(b: Uint8Array): void {
  put32(b, 0, 0);
  setRecLen(b, 0, b.length);
  b[6] = 0;
  b[7] = 0;
  put16(b, NODE_BASE, (b.length - NODE_BASE) >>> 3);
}

export class Directory {
  readonly #blocks: DirBlocks;
  readonly #opts: DirOptions;
  readonly #bs: number;
  #indexed: boolean;
  /** Scratch for hashing (the hot path allocates nothing for it). */
  readonly #h = { major: 0, minor: 0 };
  readonly #settings: readonly HashSettings[];

  /** Writes "." and ".." into a new, empty directory (count 0; appends block 0). */
  static async init(blocks: DirBlocks, self: number, parent: number): Promise<void> {
    if (blocks.count !== 0) throw new DirCorruptError(blocks.name ?? 'directory', `init of a directory that already has ${blocks.count} blocks (expected none)`, 0);
    const lblk = await blocks.append();
    const b = await blocks.read(lblk);
    writeEntry(b, 0, DOTDOT, DOT_NAME, self, FT.dir);
    writeEntry(b, DOTDOT, b.length - DOTDOT, DOTDOT_NAME, parent, FT.dir);
    blocks.dirty(lblk);
  }

  constructor(blocks: DirBlocks, opts: DirOptions, indexed: boolean /* the inode's EXT4_INDEX_FL */) {
    this.#blocks = blocks;
    this.#opts = opts;
    this.#bs = blocks.blockSize;
    this.#indexed = indexed;
    this.#settings = [0, 1, 2, 3, 4, 5].map((c) => ({ version: HASH_VERSIONS[c % 3], unsigned: c >= 3 || opts.unsigned }));
  }

  /** True once the directory is an htree (the engine mirrors it into EXT4_INDEX_FL after add). */
  get indexed(): boolean {
    return this.#indexed;
  }

  async lookup(name: Uint8Array): Promise<DirEntry | undefined> {
    const found = await this.#find(name);
    if (found === undefined) return undefined;
    const b = found.b;
    return { name, ino: u32(b, found.o), fileType: b[found.o + 7] };
  }

  /** Adds an entry; the caller guarantees no entry of that name exists. */
  async add(e: DirEntry): Promise<void> {
    if (this.#indexed) return this.#dxAdd(e);
    const n = this.#blocks.count;
    if (n === 0) throw this.#corrupt(0, 0, 'directory has no blocks (not initialized)');
    for (let lblk = 0; lblk < n; lblk++) {
      const b = await this.#blocks.read(lblk);
      if (this.#insert(b, lblk, e)) return this.#blocks.dirty(lblk);
    }
    if (n === 1 && this.#opts.dirIndex) return this.#makeIndexed(e);
    const lblk = await this.#blocks.append();
    const b = await this.#blocks.read(lblk);
    writeEntry(b, 0, b.length, e.name, e.ino, e.fileType);
    this.#blocks.dirty(lblk);
  }

  async remove(name: Uint8Array): Promise<DirEntry | undefined> {
    const found = await this.#find(name);
    if (found === undefined) return undefined;
    const { b, o, lblk } = found;
    const entry = { name, ino: u32(b, o), fileType: b[o + 7] };
    const r = recLen(b, o);
    let prev = -1;
    for (let p = 0; p < o; p += recLen(b, p)) prev = p;
    if (prev >= 0) {
      setRecLen(b, prev, recLen(b, prev) + r);
      b.fill(0, o, o + r);
    } else {
      put32(b, o, 0);
      b.fill(0, o + 6, o + r);
    }
    this.#blocks.dirty(lblk);
    return entry;
  }

  /** Every entry but "." and "..", block by block. Do not add or remove while iterating. */
  async *entries(): AsyncIterable<DirEntry> {
    const n = this.#blocks.count;
    for (let lblk = this.#indexed ? 1 : 0; lblk < n; lblk++) {
      const b = await this.#blocks.read(lblk);
      for (let o = lblk === 0 ? this.#afterDotDot(b) : 0; o < this.#bs;) {
        const r = this.#checked(b, lblk, o);
        const ino = u32(b, o);
        if (ino !== 0) yield { name: b.slice(o + HEADER, o + HEADER + b[o + 6]), ino, fileType: b[o + 7] };
        o += r;
      }
    }
  }

  /** Rewrites ".." (a directory moved to another parent). */
  async setParent(ino: number): Promise<void> {
    const b = await this.#blocks.read(0);
    this.#afterDotDot(b);
    put32(b, DOTDOT, ino);
    this.#blocks.dirty(0);
  }

  // ---- linear blocks ----

  /** Validates the record at `o` and returns its rec_len. */
  #checked(b: Uint8Array, lblk: number, o: number): number {
    const r = recLen(b, o);
    if (r < HEADER || (r & 3) !== 0 || o + r > this.#bs || HEADER + b[o + 6] > r) {
      throw this.#corrupt(lblk, o, `bad directory record: rec_len ${r}, name_len ${b[o + 6]} (expected a multiple of 4 within the ${this.#bs}-byte block holding the name)`);
    }
    return r;
  }

  /** Checks "." and ".." at the start of block 0; returns the offset of the record after "..". */
  #afterDotDot(b: Uint8Array): number {
    if (recLen(b, 0) !== DOTDOT || !nameEquals(b, 0, DOT_NAME) || !nameEquals(b, DOTDOT, DOTDOT_NAME)) {
      throw this.#corrupt(0, 0, 'block 0 does not start with "." (rec_len 12) and ".."');
    }
    return DOTDOT + this.#checked(b, 0, DOTDOT);
  }

  /** Offset of the live record named `name` in one block, or -1. */
  #findIn(b: Uint8Array, lblk: number, start: number, name: Uint8Array): number {
    for (let o = start; o < this.#bs;) {
      const r = this.#checked(b, lblk, o);
      if (nameEquals(b, o, name) && u32(b, o) !== 0) return o;
      o += r;
    }
    return -1;
  }

  /**
   * Puts the entry into free space of the block: the slack after a live record or a free
   * record, first fit (as the kernel's ext4_find_dest_de); when no single gap fits but the
   * block's free bytes do, compacts the block first. False when the block is full.
   */
  #insert(b: Uint8Array, lblk: number, e: DirEntry): boolean {
    const need = recLenFor(e.name.length);
    let free = 0;
    for (let o = 0; o < this.#bs;) {
      const r = this.#checked(b, lblk, o);
      const used = u32(b, o) === 0 ? 0 : recLenFor(b[o + 6]);
      if (r - used >= need) {
        if (used !== 0) setRecLen(b, o, used);
        writeEntry(b, o + used, r - used, e.name, e.ino, e.fileType);
        return true;
      }
      free += r - used;
      o += r;
    }
    if (free < need) return false;
    const end = this.#compact(b, lblk);
    writeEntry(b, end, this.#bs - end, e.name, e.ino, e.fileType);
    return true;
  }

  /**
   * Moves the live records to the front in their order, zeroes the rest and returns where the
   * free space starts; the caller then writes the record that reaches the block end there.
   */
  #compact(b: Uint8Array, lblk: number): number {
    let dst = 0;
    for (let o = 0; o < this.#bs;) {
      const r = this.#checked(b, lblk, o);
      if (u32(b, o) !== 0) {
        const used = recLenFor(b[o + 6]);
        b.copyWithin(dst, o, o + used);
        setRecLen(b, dst, used);
        dst += used;
      }
      o += r;
    }
    b.fill(0, dst);
    return dst;
  }

  // ---- htree ----

  /** The hash a root names: codes 0–2 with the superblock's signedness, 3–5 explicitly unsigned. */
  #hashSettings(root: Uint8Array): HashSettings {
    const code = root[ROOT_INFO + 4];
    if (code <= 5) return this.#settings[code];
    throw new DirUnsupportedError(`${this.#name()}: htree hash version ${code} (siphash or unknown) is not supported`);
  }

  #major(name: Uint8Array, s: HashSettings): number {
    return this.hashOf(name, s.version, s.unsigned);
  }

  /** The major hash of a name; overridden only by tests that need collisions on demand. */
  protected hashOf(name: Uint8Array, version: HashVersion, unsigned: boolean): number {
    dirHashInto(name, version, this.#opts.seed, unsigned, this.#h);
    return this.#h.major;
  }

  /** Reads the root and validates its header; returns its frame and depth. */
  #root(b: Uint8Array): { frame: Frame; levels: number } {
    const dd = this.#afterDotDot(b);
    const infoLen = b[ROOT_INFO + 5];
    const levels = b[ROOT_INFO + 6];
    if (dd !== this.#bs || u32(b, ROOT_INFO) !== 0 || infoLen < 8 || ROOT_INFO + infoLen + 8 > this.#bs) {
      throw this.#corrupt(0, ROOT_INFO, `bad htree root (".." rec_len to ${dd}, reserved ${u32(b, ROOT_INFO)}, info_length ${infoLen}); expected ".." to the block end, 0, ≥ 8`);
    }
    if (levels > MAX_LEVELS) throw new DirUnsupportedError(`${this.#name()}: htree with indirect_levels ${levels} (large_dir) is not supported`);
    const frame = { lblk: 0, b, base: ROOT_INFO + infoLen, at: 0 };
    this.#checkFrame(frame);
    return { frame, levels };
  }

  async #node(lblk: number): Promise<Frame> {
    const frame = { lblk, b: await this.#blocks.read(lblk), base: NODE_BASE, at: 0 };
    if (u32(frame.b, 0) !== 0 || recLen(frame.b, 0) !== this.#bs) throw this.#corrupt(lblk, 0, 'htree index node does not start with a free record spanning the block');
    this.#checkFrame(frame);
    return frame;
  }

  #checkFrame(f: Frame): void {
    const want = (this.#bs - f.base) >>> 3;
    const n = count(f);
    if (limit(f) !== want || n === 0 || n > want) throw this.#corrupt(f.lblk, f.base, `htree index count ${n}, limit ${limit(f)}; expected limit ${want} and 1 ≤ count ≤ limit`);
  }

  /** Binary search: the last slot whose hash ≤ `hash` (slot 0 always qualifies). */
  #seek(f: Frame, hash: number): void {
    let lo = 1;
    let hi = count(f) - 1;
    while (lo <= hi) {
      const m = (lo + hi) >>> 1;
      if (u32(f.b, f.base + 8 * m) > hash) hi = m - 1;
      else lo = m + 1;
    }
    f.at = lo - 1;
  }

  #child(f: Frame): number {
    const lblk = blockAt(f, f.at);
    if (lblk === 0 || lblk >= this.#blocks.count) throw this.#corrupt(f.lblk, f.base + 8 * f.at + 4, `htree entry points to block ${lblk}; expected 1..${this.#blocks.count - 1}`);
    return lblk;
  }

  /** The path from the root to the leaf that would hold `hash`: root frame, then maybe one node. */
  async #probe(b0: Uint8Array, hash: number): Promise<Frame[]> {
    const { frame, levels } = this.#root(b0);
    this.#seek(frame, hash);
    const path = [frame];
    for (let l = 0; l < levels; l++) {
      const node = await this.#node(this.#child(path[l]));
      this.#seek(node, hash);
      path.push(node);
    }
    return path;
  }

  /**
   * Steps the path to the next leaf if it continues `hash` (its index hash without the
   * continuation bit equals it), as the kernel's ext4_htree_next_block does.
   */
  async #next(path: Frame[], hash: number): Promise<boolean> {
    let i = path.length - 1;
    while (++path[i].at >= count(path[i])) {
      if (i === 0) return false;
      i--;
    }
    if ((hashAt(path[i], path[i].at) & ~1) >>> 0 !== hash) return false;
    for (let j = i + 1; j < path.length; j++) path[j] = await this.#node(this.#child(path[j - 1]));
    return true;
  }

  /** The block and offset of the live record named `name`. */
  async #find(name: Uint8Array): Promise<{ b: Uint8Array; lblk: number; o: number } | undefined> {
    if (!this.#indexed) {
      const n = this.#blocks.count;
      for (let lblk = 0; lblk < n; lblk++) {
        const b = await this.#blocks.read(lblk);
        const o = this.#findIn(b, lblk, lblk === 0 ? this.#afterDotDot(b) : 0, name);
        if (o >= 0) return { b, lblk, o };
      }
      return undefined;
    }
    const root = await this.#blocks.read(0);
    const hash = this.#major(name, this.#hashSettings(root));
    const path = await this.#probe(root, hash);
    do {
      const lblk = this.#child(path[path.length - 1]);
      const b = await this.#blocks.read(lblk);
      const o = this.#findIn(b, lblk, 0, name);
      if (o >= 0) return { b, lblk, o };
    } while (await this.#next(path, hash));
    return undefined;
  }

  /**
   * Turns the full one-block directory into an htree: its entries move to a new leaf, which
   * splits at once into two (as the kernel's make_indexed_dir), block 0 becomes the root.
   */
  async #makeIndexed(e: DirEntry): Promise<void> {
    const leaf = await this.#blocks.append();
    const split = await this.#blocks.append();
    const b0 = await this.#blocks.read(0);
    const b1 = await this.#blocks.read(leaf);
    const start = this.#afterDotDot(b0);
    let dst = 0;
    for (let o = start; o < this.#bs;) {
      const r = this.#checked(b0, 0, o);
      if (u32(b0, o) !== 0) {
        const used = recLenFor(b0[o + 6]);
        b1.set(b0.subarray(o, o + used), dst);
        setRecLen(b1, dst, used);
        dst += used;
      }
      o += r;
    }
    const last = this.#lastRecord(b1, dst);
    setRecLen(b1, last, this.#bs - last);

    setRecLen(b0, DOTDOT, this.#bs - DOTDOT);
    b0.fill(0, ROOT_INFO);
    b0[ROOT_INFO + 4] = HASH_CODE[this.#opts.hash];
    b0[ROOT_INFO + 5] = 8;
    const root: Frame = { lblk: 0, b: b0, base: ROOT_INFO + 8, at: 0 };
    put16(b0, root.base, (this.#bs - root.base) >>> 3);
    put16(b0, root.base + 2, 1);
    put32(b0, root.base + 4, leaf);
    this.#indexed = true;

    const hash = this.#splitLeaf(b1, leaf, await this.#blocks.read(split), this.#hashSettings(b0));
    insertIndex(root, hash, split);
    this.#blocks.dirty(0);
    this.#blocks.dirty(leaf);
    this.#blocks.dirty(split);
    return this.#dxAdd(e);
  }

  /** The offset of the last record among the packed records ending at `end`. */
  #lastRecord(b: Uint8Array, end: number): number {
    let last = 0;
    for (let o = 0; o < end; o += recLen(b, o)) last = o;
    return last;
  }

  async #dxAdd(e: DirEntry): Promise<void> {
    const root = await this.#blocks.read(0);
    const settings = this.#hashSettings(root);
    const hash = this.#major(e.name, settings);
    // Each pass either inserts or makes room (splits one leaf or index block), then probes again.
    for (;;) {
      const path = await this.#probe(await this.#blocks.read(0), hash);
      const parent = path[path.length - 1];
      const lblk = this.#child(parent);
      const b = await this.#blocks.read(lblk);
      if (this.#insert(b, lblk, e)) return this.#blocks.dirty(lblk);
      if (count(parent) < limit(parent)) {
        const fresh = await this.#blocks.append();
        const leaf = await this.#blocks.read(lblk);
        const moved = this.#splitLeaf(leaf, lblk, await this.#blocks.read(fresh), settings);
        const again = await this.#reread(parent);
        insertIndex(again, moved, fresh);
        this.#blocks.dirty(lblk);
        this.#blocks.dirty(fresh);
        this.#blocks.dirty(again.lblk);
      } else if (path.length === 1) {
        await this.#addLevel();
      } else {
        await this.#splitNode(path[0], parent);
      }
    }
  }

  /** A frame's block read again (an append may have moved the engine's cached buffers). */
  async #reread(f: Frame): Promise<Frame> {
    return { lblk: f.lblk, b: await this.#blocks.read(f.lblk), base: f.base, at: f.at };
  }

  /** The root is full at level 0: its entries move into a new index node, the root points to it. */
  async #addLevel(): Promise<void> {
    const fresh = await this.#blocks.append();
    const { frame: root } = this.#root(await this.#blocks.read(0));
    const node = await this.#blocks.read(fresh);
    initNode(node);
    const n = count(root);
    node.set(root.b.subarray(root.base + 2, root.base + 8 * n), NODE_BASE + 2);
    root.b.fill(0, root.base + 8, root.base + 8 * n);
    put16(root.b, root.base + 2, 1);
    put32(root.b, root.base + 4, fresh);
    root.b[ROOT_INFO + 6] = 1;
    this.#blocks.dirty(0);
    this.#blocks.dirty(fresh);
  }

  /** A full index node splits in half; the root gets an entry for the upper half. */
  async #splitNode(rootAt: Frame, full: Frame): Promise<void> {
    if (count(rootAt) >= limit(rootAt)) {
      throw new DirFullError(`${this.#name()}: htree is full (${count(rootAt)} index nodes of ${limit(full)} leaves; large_dir is not used)`);
    }
    const fresh = await this.#blocks.append();
    const root = await this.#reread(rootAt);
    const old = await this.#reread(full);
    const nb = await this.#blocks.read(fresh);
    initNode(nb);
    const n = count(old);
    const keep = n >>> 1;
    const hash = u32(old.b, old.base + 8 * keep);
    nb.set(old.b.subarray(old.base + 8 * keep + 4, old.base + 8 * n), NODE_BASE + 4);
    put16(nb, NODE_BASE + 2, n - keep);
    old.b.fill(0, old.base + 8 * keep, old.base + 8 * n);
    put16(old.b, old.base + 2, keep);
    insertIndex(root, hash, fresh);
    this.#blocks.dirty(0);
    this.#blocks.dirty(old.lblk);
    this.#blocks.dirty(fresh);
  }

  /**
   * Moves the upper half (by bytes, in hash order) of a full leaf into the empty block `nb`;
   * returns the index hash for `nb`: the lowest hash moved, with the continuation bit when the
   * entry before it has the same hash (the run continues across the split).
   */
  #splitLeaf(b: Uint8Array, lblk: number, nb: Uint8Array, settings: HashSettings): number {
    const offs: number[] = [];
    const hashes: number[] = [];
    let total = 0;
    for (let o = 0; o < this.#bs;) {
      const r = this.#checked(b, lblk, o);
      if (u32(b, o) !== 0) {
        offs.push(o);
        hashes.push(this.#major(b.subarray(o + HEADER, o + HEADER + b[o + 6]), settings));
        total += recLenFor(b[o + 6]);
      }
      o += r;
    }
    if (offs.length < 2) throw this.#corrupt(lblk, 0, `cannot split a leaf of ${offs.length} entries`);
    // Stable sort: equal hashes keep their block order, so the result depends only on the input.
    const order = offs.map((_, i) => i).sort((x, y) => hashes[x] - hashes[y]);
    let split = 1;
    for (let acc = 0; split < order.length - 1; split++) {
      acc += recLenFor(b[offs[order[split - 1]] + 6]);
      if (acc + recLenFor(b[offs[order[split]] + 6]) / 2 > total / 2) break;
    }
    const boundary = hashes[order[split]];
    const continued = hashes[order[split - 1]] === boundary ? 1 : 0;

    const moved = new Uint8Array(offs.length);
    let dst = 0;
    let last = 0;
    for (let k = split; k < order.length; k++) {
      const o = offs[order[k]];
      const used = recLenFor(b[o + 6]);
      nb.set(b.subarray(o, o + used), dst);
      setRecLen(nb, dst, used);
      moved[order[k]] = 1;
      last = dst;
      dst += used;
    }
    setRecLen(nb, last, this.#bs - last);

    dst = 0;
    for (let i = 0; i < offs.length; i++) {
      if (moved[i]) continue;
      const used = recLenFor(b[offs[i] + 6]);
      b.copyWithin(dst, offs[i], offs[i] + used);
      setRecLen(b, dst, used);
      last = dst;
      dst += used;
    }
    b.fill(0, dst);
    setRecLen(b, last, this.#bs - last);
    return (boundary | continued) >>> 0;
  }

  #name(): string {
    return this.#blocks.name ?? 'directory';
  }

  #corrupt(lblk: number, o: number, what: string): DirCorruptError {
    return new DirCorruptError(this.#name(), `block ${lblk}: ${what}`, lblk * this.#bs + o);
  }
}

const DOT_NAME = new Uint8Array([0x2e]);
const DOTDOT_NAME = new Uint8Array([0x2e, 0x2e]);
