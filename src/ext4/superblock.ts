/**
 * The ext4 superblock (1024 bytes at byte 1024 of the device) and the geometry it implies.
 * Field offsets follow the kernel's struct ext4_super_block (../shared/spec/ and the kernel's
 * Documentation/filesystems/ext4/super.rst).
 */
import { Ext4FormatError } from './errors.ts';

export const SUPERBLOCK_OFFSET = 1024;
export const MAGIC = 0xef53;
export const BLOCK_SIZE = 4096;
export const INODE_SIZE = 256;
export const EXTRA_ISIZE = 32;
export const DESC_SIZE = 64;
export const BLOCKS_PER_GROUP = 32768;
export const LOG_GROUPS_PER_FLEX = 4;
export const FIRST_INO = 11;
export const ROOT_INO = 2;
export const LOST_FOUND_INO = 11;

export const COMPAT_EXT_ATTR = 0x8;
export const COMPAT_DIR_INDEX = 0x20;
export const INCOMPAT_FILETYPE = 0x2;
export const INCOMPAT_EXTENTS = 0x40;
export const INCOMPAT_64BIT = 0x80;
export const INCOMPAT_FLEX_BG = 0x200;
export const RO_COMPAT_SPARSE_SUPER = 0x1;
export const RO_COMPAT_LARGE_FILE = 0x2;
export const RO_COMPAT_HUGE_FILE = 0x8;
export const RO_COMPAT_GDT_CSUM = 0x10;
export const RO_COMPAT_DIR_NLINK = 0x20;
export const RO_COMPAT_EXTRA_ISIZE = 0x40;

export const COMPAT = COMPAT_EXT_ATTR | COMPAT_DIR_INDEX;
export const INCOMPAT = INCOMPAT_FILETYPE | INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG;
export const RO_COMPAT = RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE | RO_COMPAT_HUGE_FILE |
  RO_COMPAT_GDT_CSUM | RO_COMPAT_DIR_NLINK | RO_COMPAT_EXTRA_ISIZE;

export const FLAGS_SIGNED_HASH = 0x1;
export const FLAGS_UNSIGNED_HASH = 0x2;
export const HASH_HALF_MD4 = 1;

/** Byte offsets of the fields this engine reads or writes. */
const F = {
  inodesCount: 0x0, blocksLo: 0x4, rBlocksLo: 0x8, freeBlocksLo: 0xc, freeInodes: 0x10,
  firstDataBlock: 0x14, logBlockSize: 0x18, logClusterSize: 0x1c, blocksPerGroup: 0x20,
  clustersPerGroup: 0x24, inodesPerGroup: 0x28, maxMntCount: 0x36, magic: 0x38, state: 0x3a,
  errors: 0x3c, revLevel: 0x4c, firstIno: 0x54, inodeSize: 0x58, blockGroupNr: 0x5a,
  compat: 0x5c, incompat: 0x60, roCompat: 0x64, uuid: 0x68, volumeName: 0x78,
  reservedGdt: 0xce, hashSeed: 0xec, defHashVersion: 0xfc, descSize: 0xfe, firstMetaBg: 0x104,
  blocksHi: 0x150, rBlocksHi: 0x154, freeBlocksHi: 0x158, minExtraIsize: 0x15c,
  wantExtraIsize: 0x15e, flags: 0x160, logGroupsPerFlex: 0x174,
} as const;

/** What the allocator and layout need, fixed for the life of a filesystem. */
export interface Geometry {
  blocks: number;
  groups: number;
  inodesPerGroup: number;
  inodes: number;
  gdtBlocks: number;
  itableBlocks: number;
  flexSize: number;
}

export function geometryFor(blocks: number, inodeRatio: number): Geometry {
  const groups = Math.ceil(blocks / BLOCKS_PER_GROUP);
  const perBlock = BLOCK_SIZE / INODE_SIZE;
  let ipg = Math.ceil(Math.floor(blocks * BLOCK_SIZE / inodeRatio) / groups);
  ipg = Math.max(16, Math.min(BLOCK_SIZE * 8, Math.ceil(ipg / perBlock) * perBlock));
  while (ipg * groups > 0xffffffff) ipg -= perBlock;
  return {
    blocks, groups, inodesPerGroup: ipg, inodes: ipg * groups,
    gdtBlocks: Math.ceil(groups * DESC_SIZE / BLOCK_SIZE),
    itableBlocks: ipg / perBlock,
    flexSize: 1 << LOG_GROUPS_PER_FLEX,
  };
}

/** Blocks in group g (the last group may be short). */
export function groupBlocks(geo: Geometry, g: number): number {
  return g === geo.groups - 1 ? geo.blocks - g * BLOCKS_PER_GROUP : BLOCKS_PER_GROUP;
}

function isPowerOf(n: number, base: number): boolean {
  while (n > 1 && n % base === 0) n /= base;
  return n === 1;
}

/** sparse_super: groups 0, 1 and powers of 3, 5 and 7 carry a superblock and GDT copy. */
export function hasSuper(g: number): boolean {
  return g <= 1 || isPowerOf(g, 3) || isPowerOf(g, 5) || isPowerOf(g, 7);
}

/** A view of the superblock's fields over its 1024 bytes (inside cached block 0). */
export class Superblock {
  readonly bytes: Uint8Array;
  readonly #v: DataView;
  constructor(bytes: Uint8Array) {
    this.bytes = bytes;
    this.#v = new DataView(bytes.buffer, bytes.byteOffset, 1024);
  }
  #u64(lo: number, hi: number): number {
    return this.#v.getUint32(hi, true) * 2 ** 32 + this.#v.getUint32(lo, true);
  }
  #set64(lo: number, hi: number, value: number): void {
    this.#v.setUint32(lo, value >>> 0, true);
    this.#v.setUint32(hi, Math.floor(value / 2 ** 32), true);
  }
  get blocks(): number { return this.#u64(F.blocksLo, F.blocksHi); }
  get freeBlocks(): number { return this.#u64(F.freeBlocksLo, F.freeBlocksHi); }
  set freeBlocks(n: number) { this.#set64(F.freeBlocksLo, F.freeBlocksHi, n); }
  get freeInodes(): number { return this.#v.getUint32(F.freeInodes, true); }
  set freeInodes(n: number) { this.#v.setUint32(F.freeInodes, n, true); }
  get inodesCount(): number { return this.#v.getUint32(F.inodesCount, true); }
  get inodesPerGroup(): number { return this.#v.getUint32(F.inodesPerGroup, true); }
  get uuid(): Uint8Array { return this.bytes.subarray(F.uuid, F.uuid + 16); }
  get hashSeed(): Uint32Array {
    const seed = new Uint32Array(4);
    for (let i = 0; i < 4; i++) seed[i] = this.#v.getUint32(F.hashSeed + 4 * i, true);
    return seed;
  }
  get defHashVersion(): number { return this.bytes[F.defHashVersion]!; }
  get flags(): number { return this.#v.getUint32(F.flags, true); }
  get compat(): number { return this.#v.getUint32(F.compat, true); }

  /** Writes a fresh superblock for `geo` (every time field 0: determinism). */
  init(geo: Geometry, uuid: Uint8Array, seed: Uint8Array, label: Uint8Array): void {
    const v = this.#v;
    this.bytes.fill(0);
    v.setUint32(F.inodesCount, geo.inodes, true);
    this.#set64(F.blocksLo, F.blocksHi, geo.blocks);
    v.setUint32(F.firstDataBlock, 0, true);
    v.setUint32(F.logBlockSize, 2, true);
    v.setUint32(F.logClusterSize, 2, true);
    v.setUint32(F.blocksPerGroup, BLOCKS_PER_GROUP, true);
    v.setUint32(F.clustersPerGroup, BLOCKS_PER_GROUP, true);
    v.setUint32(F.inodesPerGroup, geo.inodesPerGroup, true);
    v.setUint16(F.maxMntCount, 0xffff, true);
    v.setUint16(F.magic, MAGIC, true);
    v.setUint16(F.state, 1, true);
    v.setUint16(F.errors, 1, true);
    v.setUint32(F.revLevel, 1, true);
    v.setUint32(F.firstIno, FIRST_INO, true);
    v.setUint16(F.inodeSize, INODE_SIZE, true);
    v.setUint32(F.compat, COMPAT, true);
    v.setUint32(F.incompat, INCOMPAT, true);
    v.setUint32(F.roCompat, RO_COMPAT, true);
    this.bytes.set(uuid, F.uuid);
    this.bytes.set(label, F.volumeName);
    this.bytes.set(seed, F.hashSeed);
    this.bytes[F.defHashVersion] = HASH_HALF_MD4;
    v.setUint16(F.descSize, DESC_SIZE, true);
    v.setUint16(F.minExtraIsize, EXTRA_ISIZE, true);
    v.setUint16(F.wantExtraIsize, EXTRA_ISIZE, true);
    v.setUint32(F.flags, FLAGS_SIGNED_HASH, true);
    this.bytes[F.logGroupsPerFlex] = LOG_GROUPS_PER_FLEX;
  }

  /** A copy for the backup in group g (s_block_group_nr = g). */
  backup(g: number): Uint8Array {
    const copy = this.bytes.slice(0, 1024);
    new DataView(copy.buffer).setUint16(F.blockGroupNr, g, true);
    return copy;
  }

  /** Checks that this engine can write the filesystem; returns its geometry. */
  check(device: string, deviceSize: number): Geometry {
    const v = this.#v;
    const at = (field: number): number => SUPERBLOCK_OFFSET + field;
    const want = (ok: boolean, field: number, what: string): void => {
      if (!ok) throw new Ext4FormatError(device, what, at(field));
    };
    want(v.getUint16(F.magic, true) === MAGIC, F.magic, `no ext4 superblock (magic ${v.getUint16(F.magic, true).toString(16)}, expected ef53)`);
    want(v.getUint32(F.revLevel, true) === 1, F.revLevel, 'expected revision 1 (dynamic)');
    want(v.getUint32(F.logBlockSize, true) === 2, F.logBlockSize, 'only 4 KiB blocks are supported');
    want(v.getUint32(F.logClusterSize, true) === 2, F.logClusterSize, 'bigalloc is not supported');
    want(v.getUint32(F.firstDataBlock, true) === 0, F.firstDataBlock, 'expected first data block 0');
    want(v.getUint32(F.blocksPerGroup, true) === BLOCKS_PER_GROUP, F.blocksPerGroup, `expected ${BLOCKS_PER_GROUP} blocks per group`);
    want(v.getUint16(F.inodeSize, true) === INODE_SIZE, F.inodeSize, `expected ${INODE_SIZE}-byte inodes`);
    want(v.getUint16(F.descSize, true) === DESC_SIZE, F.descSize, `expected ${DESC_SIZE}-byte group descriptors`);
    want(v.getUint32(F.firstIno, true) === FIRST_INO, F.firstIno, `expected first inode ${FIRST_INO}`);
    want(v.getUint16(F.minExtraIsize, true) <= EXTRA_ISIZE, F.minExtraIsize, `expected extra_isize ≤ ${EXTRA_ISIZE}`);
    const unknown = (have: number, allowed: number) => (have & ~allowed) >>> 0;
    const compat = v.getUint32(F.compat, true);
    const incompat = v.getUint32(F.incompat, true);
    const ro = v.getUint32(F.roCompat, true);
    want(unknown(compat, COMPAT) === 0, F.compat, `unsupported compat features 0x${unknown(compat, COMPAT).toString(16)} (journal, resize_inode, … cannot be kept consistent)`);
    want(unknown(incompat, INCOMPAT) === 0, F.incompat, `unsupported incompat features 0x${unknown(incompat, INCOMPAT).toString(16)}`);
    want((incompat & INCOMPAT) === INCOMPAT, F.incompat, 'expected filetype, extents, 64bit and flex_bg');
    want(unknown(ro, RO_COMPAT) === 0, F.roCompat, `unsupported ro_compat features 0x${unknown(ro, RO_COMPAT).toString(16)} (metadata_csum, …)`);
    want((ro & RO_COMPAT_GDT_CSUM) !== 0 && (ro & RO_COMPAT_SPARSE_SUPER) !== 0, F.roCompat, 'expected sparse_super and uninit_bg (gdt_csum)');
    want(v.getUint16(F.reservedGdt, true) === 0, F.reservedGdt, 'reserved GDT blocks are not supported');
    want(v.getUint16(F.state, true) === 1, F.state, 'filesystem not clean (run e2fsck)');
    const blocks = this.blocks;
    want(blocks * BLOCK_SIZE <= deviceSize, F.blocksLo, `filesystem of ${blocks} blocks is larger than the device (${deviceSize} bytes)`);
    const groups = Math.ceil(blocks / BLOCKS_PER_GROUP);
    const ipg = v.getUint32(F.inodesPerGroup, true);
    want(ipg > 0 && ipg % 16 === 0 && ipg <= BLOCK_SIZE * 8, F.inodesPerGroup, 'bad inodes per group');
    want(ipg * groups === v.getUint32(F.inodesCount, true), F.inodesCount, 'inodes count ≠ groups × inodes per group');
    return {
      blocks, groups, inodesPerGroup: ipg, inodes: ipg * groups,
      gdtBlocks: Math.ceil(groups * DESC_SIZE / BLOCK_SIZE),
      itableBlocks: ipg / (BLOCK_SIZE / INODE_SIZE),
      flexSize: 1 << this.bytes[F.logGroupsPerFlex]!,
    };
  }
}
