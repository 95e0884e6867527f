/**
 * Block and inode allocation over the group bitmaps, keeping the free counts of the group
 * descriptors and the superblock and the uninit_bg flags in step.
 *
 * Blocks come from a cursor that starts past the highest block in use, so a new layer's data
 * lands where no lower layer wrote (its delta holds only new data); only at the end of the
 * device does it wrap to first-fit. Inodes are first-fit (lowest free number).
 */
import type { BlockCache } from './cache.ts';
import { Ext4NoSpaceError } from './errors.ts';
import { BG_BLOCK_UNINIT, BG_INODE_UNINIT, clearBit, setBit, setBits, testBit } from './groups.ts';
import type { Groups } from './groups.ts';
import { BLOCKS_PER_GROUP, BLOCK_SIZE, groupBlocks, hasSuper } from './superblock.ts';
import type { Geometry, Superblock } from './superblock.ts';

export class Allocator {
  readonly #dev: string;
  readonly #geo: Geometry;
  readonly #gd: Groups;
  readonly #sb: Superblock;
  readonly #cache: BlockCache;
  #cursor = 0;
  #blocksUsed = 0;
  #recording: number[] | undefined;

  constructor(dev: string, geo: Geometry, gd: Groups, sb: Superblock, cache: BlockCache) {
    this.#dev = dev;
    this.#geo = geo;
    this.#gd = gd;
    this.#sb = sb;
    this.#cache = cache;
  }

  /** Blocks allocated (less freed) through this allocator. */
  get blocksUsed(): number {
    return this.#blocksUsed;
  }

  /** Marks the fixed metadata of group g (backup superblock/GDT, bitmaps and inode tables of its flex lying in it) in `map`, or counts it. */
  metadata(g: number, map?: Uint8Array): number {
    const first = g * BLOCKS_PER_GROUP;
    const end = first + groupBlocks(this.#geo, g);
    let n = 0;
    const mark = (b: number, len: number): void => {
      const lo = Math.max(b, first);
      const hi = Math.min(b + len, end);
      if (hi <= lo) return;
      n += hi - lo;
      if (map) setBits(map, lo - first, hi - first);
    };
    if (hasSuper(g)) mark(first, 1 + this.#geo.gdtBlocks);
    const flex0 = g - (g % this.#geo.flexSize);
    for (let h = flex0; h < Math.min(this.#geo.groups, flex0 + this.#geo.flexSize); h++) {
      mark(this.#gd.blockBitmap(h), 1);
      mark(this.#gd.inodeBitmap(h), 1);
      mark(this.#gd.inodeTable(h), this.#geo.itableBlocks);
    }
    return n;
  }

  /** Puts the cursor past the highest block any group shows in use beyond its fixed metadata. */
  async initCursor(): Promise<void> {
    for (let g = this.#geo.groups - 1; g >= 0; g--) {
      const used = groupBlocks(this.#geo, g) - this.#gd.freeBlocks(g);
      if (used <= this.metadata(g) && g > 0) continue;
      const map = await this.#blockBitmap(g);
      let i = groupBlocks(this.#geo, g) - 1;
      while (i > 0 && !testBit(map, i)) i--;
      this.#cursor = g * BLOCKS_PER_GROUP + i + 1;
      return;
    }
  }

  /** The group's block bitmap, built from its metadata first if the group was BLOCK_UNINIT. */
  async #blockBitmap(g: number): Promise<Uint8Array> {
    const blk = this.#gd.blockBitmap(g);
    if ((this.#gd.flags(g) & BG_BLOCK_UNINIT) === 0) return this.#cache.get(blk, true);
    const map = this.#cache.fresh(blk, undefined, true);
    this.metadata(g, map);
    setBits(map, groupBlocks(this.#geo, g), BLOCK_SIZE * 8);
    this.#gd.setFlags(g, this.#gd.flags(g) & ~BG_BLOCK_UNINIT);
    return map;
  }

  async #inodeBitmap(g: number): Promise<Uint8Array> {
    const blk = this.#gd.inodeBitmap(g);
    if ((this.#gd.flags(g) & BG_INODE_UNINIT) === 0) return this.#cache.get(blk, true);
    const map = this.#cache.fresh(blk, undefined, true);
    setBits(map, this.#geo.inodesPerGroup, BLOCK_SIZE * 8);
    this.#gd.setFlags(g, this.#gd.flags(g) & ~BG_INODE_UNINIT);
    return map;
  }

  /** From now on every block allocated is also appended to the returned list (for undoing a failed create). */
  record(): number[] {
    this.#recording = [];
    return this.#recording;
  }

  stopRecording(): void {
    this.#recording = undefined;
  }

  /** One free block: the first at or after the cursor, else the first on the device. */
  async block(): Promise<number> {
    let b = await this.#findFree(this.#cursor);
    if (b < 0) b = await this.#findFree(0);
    if (b < 0) throw new Ext4NoSpaceError(`${this.#dev}: no free block left (${this.#geo.blocks} blocks)`);
    const g = Math.floor(b / BLOCKS_PER_GROUP);
    setBit(await this.#blockBitmap(g), b - g * BLOCKS_PER_GROUP);
    this.#cache.dirty(this.#gd.blockBitmap(g));
    this.#gd.setFreeBlocks(g, this.#gd.freeBlocks(g) - 1);
    this.#sb.freeBlocks = this.#sb.freeBlocks - 1;
    this.#cursor = b + 1;
    this.#blocksUsed++;
    this.#recording?.push(b);
    return b;
  }

  async #findFree(from: number): Promise<number> {
    for (let g = Math.floor(from / BLOCKS_PER_GROUP); g < this.#geo.groups; g++) {
      if (this.#gd.freeBlocks(g) === 0) continue;
      const map = await this.#blockBitmap(g);
      const n = groupBlocks(this.#geo, g);
      let i = Math.max(0, from - g * BLOCKS_PER_GROUP);
      while (i < n) {
        if ((i & 7) === 0 && map[i >>> 3] === 0xff) { i += 8; continue; }
        if (!testBit(map, i)) return g * BLOCKS_PER_GROUP + i;
        i++;
      }
    }
    return -1;
  }

  async freeBlock(b: number): Promise<void> {
    const g = Math.floor(b / BLOCKS_PER_GROUP);
    const map = await this.#blockBitmap(g);
    clearBit(map, b - g * BLOCKS_PER_GROUP);
    this.#cache.dirty(this.#gd.blockBitmap(g));
    this.#cache.forget(b);
    this.#gd.setFreeBlocks(g, this.#gd.freeBlocks(g) + 1);
    this.#sb.freeBlocks = this.#sb.freeBlocks + 1;
    this.#blocksUsed--;
  }

  /** The lowest free inode number. */
  async inode(dir: boolean): Promise<number> {
    const ipg = this.#geo.inodesPerGroup;
    for (let g = 0; g < this.#geo.groups; g++) {
      if (this.#gd.freeInodes(g) === 0) continue;
      const map = await this.#inodeBitmap(g);
      let i = 0;
      while (i + 8 <= ipg && map[i >>> 3] === 0xff) i += 8;
      while (i < ipg && testBit(map, i)) i++;
      if (i === ipg) continue;
      setBit(map, i);
      this.#cache.dirty(this.#gd.inodeBitmap(g));
      this.#gd.setFreeInodes(g, this.#gd.freeInodes(g) - 1);
      if (dir) this.#gd.setUsedDirs(g, this.#gd.usedDirs(g) + 1);
      if (i >= ipg - this.#gd.itableUnused(g)) this.#gd.setItableUnused(g, ipg - i - 1);
      this.#sb.freeInodes = this.#sb.freeInodes - 1;
      return g * ipg + i + 1;
    }
    throw new Ext4NoSpaceError(`${this.#dev}: no free inode left (${this.#geo.inodes} inodes)`);
  }

  async freeInode(ino: number, dir: boolean): Promise<void> {
    const ipg = this.#geo.inodesPerGroup;
    const g = Math.floor((ino - 1) / ipg);
    clearBit(await this.#inodeBitmap(g), (ino - 1) % ipg);
    this.#cache.dirty(this.#gd.inodeBitmap(g));
    this.#gd.setFreeInodes(g, this.#gd.freeInodes(g) + 1);
    if (dir) this.#gd.setUsedDirs(g, this.#gd.usedDirs(g) - 1);
    this.#sb.freeInodes = this.#sb.freeInodes + 1;
  }
}
