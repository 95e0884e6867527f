/**
 * Block group descriptors (64 bytes each, 64bit layout) with their uninit_bg crc16, and the
 * bitmap helpers. The descriptor table lives in pinned cache blocks 1..gdtBlocks; a changed
 * descriptor gets its checksum recomputed once, at flush.
 */
import type { BlockCache } from './cache.ts';
import { BLOCK_SIZE, DESC_SIZE } from './superblock.ts';
import type { Geometry } from './superblock.ts';

export const BG_INODE_UNINIT = 0x1;
export const BG_BLOCK_UNINIT = 0x2;
export const BG_INODE_ZEROED = 0x4;

const PER_BLOCK = BLOCK_SIZE / DESC_SIZE;

// CRC-16 (poly 0x8005, reflected: 0xa001), as e2fsprogs' ext2fs_crc16 and the kernel's crc16.
const CRC16 = (() => {
  const t = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xa001 : c >>> 1;
    t[i] = c;
  }
  return t;
})();

export function crc16(crc: number, data: Uint8Array): number {
  for (let i = 0; i < data.length; i++) crc = (crc >>> 8) ^ CRC16[(crc ^ data[i]!) & 0xff]!;
  return crc;
}

export class Groups {
  readonly #geo: Geometry;
  readonly #blocks: Uint8Array[];
  readonly #views: DataView[];
  readonly #uuidCrc: number;
  readonly #changed = new Set<number>();
  readonly #cache: BlockCache;

  private constructor(cache: BlockCache, geo: Geometry, uuid: Uint8Array, blocks: Uint8Array[]) {
    this.#cache = cache;
    this.#geo = geo;
    this.#blocks = blocks;
    this.#views = blocks.map((b) => new DataView(b.buffer, b.byteOffset, b.byteLength));
    this.#uuidCrc = crc16(0xffff, uuid);
  }

  /** The descriptor table of a filesystem being opened (read through the cache, pinned). */
  static async load(cache: BlockCache, geo: Geometry, uuid: Uint8Array): Promise<Groups> {
    const blocks: Uint8Array[] = [];
    for (let i = 0; i < geo.gdtBlocks; i++) blocks.push(await cache.get(1 + i, true));
    return new Groups(cache, geo, uuid, blocks);
  }

  /** An empty table for a fresh format. */
  static fresh(cache: BlockCache, geo: Geometry, uuid: Uint8Array, zero: Uint8Array): Groups {
    const blocks: Uint8Array[] = [];
    for (let i = 0; i < geo.gdtBlocks; i++) blocks.push(cache.fresh(1 + i, zero, true));
    return new Groups(cache, geo, uuid, blocks);
  }

  #u32(g: number, lo: number, hi: number): number {
    const v = this.#views[Math.floor(g / PER_BLOCK)]!;
    const at = (g % PER_BLOCK) * DESC_SIZE;
    return v.getUint32(at + hi, true) * 2 ** 32 + v.getUint32(at + lo, true);
  }
  #u16(g: number, lo: number, hi: number): number {
    const v = this.#views[Math.floor(g / PER_BLOCK)]!;
    const at = (g % PER_BLOCK) * DESC_SIZE;
    return v.getUint16(at + hi, true) * 65536 + v.getUint16(at + lo, true);
  }
  #set32(g: number, lo: number, hi: number, n: number): void {
    const v = this.#views[Math.floor(g / PER_BLOCK)]!;
    const at = (g % PER_BLOCK) * DESC_SIZE;
    v.setUint32(at + lo, n >>> 0, true);
    v.setUint32(at + hi, Math.floor(n / 2 ** 32), true);
    this.#changed.add(g);
  }
  #set16(g: number, lo: number, hi: number, n: number): void {
    const v = this.#views[Math.floor(g / PER_BLOCK)]!;
    const at = (g % PER_BLOCK) * DESC_SIZE;
    v.setUint16(at + lo, n & 0xffff, true);
    v.setUint16(at + hi, n >>> 16, true);
    this.#changed.add(g);
  }

  blockBitmap(g: number): number { return this.#u32(g, 0x0, 0x20); }
  inodeBitmap(g: number): number { return this.#u32(g, 0x4, 0x24); }
  inodeTable(g: number): number { return this.#u32(g, 0x8, 0x28); }
  freeBlocks(g: number): number { return this.#u16(g, 0xc, 0x2c); }
  freeInodes(g: number): number { return this.#u16(g, 0xe, 0x2e); }
  usedDirs(g: number): number { return this.#u16(g, 0x10, 0x30); }
  itableUnused(g: number): number { return this.#u16(g, 0x1c, 0x32); }
  flags(g: number): number {
    return this.#views[Math.floor(g / PER_BLOCK)]!.getUint16((g % PER_BLOCK) * DESC_SIZE + 0x12, true);
  }

  setLocations(g: number, blockBitmap: number, inodeBitmap: number, inodeTable: number): void {
    this.#set32(g, 0x0, 0x20, blockBitmap);
    this.#set32(g, 0x4, 0x24, inodeBitmap);
    this.#set32(g, 0x8, 0x28, inodeTable);
  }
  setFreeBlocks(g: number, n: number): void { this.#set16(g, 0xc, 0x2c, n); }
  setFreeInodes(g: number, n: number): void { this.#set16(g, 0xe, 0x2e, n); }
  setUsedDirs(g: number, n: number): void { this.#set16(g, 0x10, 0x30, n); }
  setItableUnused(g: number, n: number): void { this.#set16(g, 0x1c, 0x32, n); }
  setFlags(g: number, flags: number): void {
    this.#views[Math.floor(g / PER_BLOCK)]!.setUint16((g % PER_BLOCK) * DESC_SIZE + 0x12, flags, true);
    this.#changed.add(g);
  }

  /** The descriptor's stored checksum matches its content. */
  checksumOk(g: number): boolean {
    const v = this.#views[Math.floor(g / PER_BLOCK)]!;
    return v.getUint16((g % PER_BLOCK) * DESC_SIZE + 0x1e, true) === this.#checksum(g);
  }

  #checksum(g: number): number {
    const block = this.#blocks[Math.floor(g / PER_BLOCK)]!;
    const at = (g % PER_BLOCK) * DESC_SIZE;
    const nr = new Uint8Array(4);
    new DataView(nr.buffer).setUint32(0, g, true);
    let crc = crc16(this.#uuidCrc, nr);
    crc = crc16(crc, block.subarray(at, at + 0x1e));
    return crc16(crc, block.subarray(at + 0x20, at + DESC_SIZE));
  }

  /** Recomputes the checksums of changed descriptors and marks their blocks dirty. */
  seal(): void {
    for (const g of this.#changed) {
      const i = Math.floor(g / PER_BLOCK);
      this.#views[i]!.setUint16((g % PER_BLOCK) * DESC_SIZE + 0x1e, this.#checksum(g), true);
      this.#cache.dirty(1 + i);
    }
    this.#changed.clear();
  }

  /** The table's bytes (for the backup copies written at format). */
  tableBlocks(): readonly Uint8Array[] {
    return this.#blocks;
  }

  get count(): number {
    return this.#geo.groups;
  }
}

export function testBit(map: Uint8Array, i: number): boolean {
  return (map[i >>> 3]! & (1 << (i & 7))) !== 0;
}
export function setBit(map: Uint8Array, i: number): void {
  map[i >>> 3]! |= 1 << (i & 7);
}
export function clearBit(map: Uint8Array, i: number): void {
  map[i >>> 3]! &= ~(1 << (i & 7));
}
export function setBits(map: Uint8Array, from: number, to: number): void {
  for (let i = from; i < to; i++) setBit(map, i);
}
