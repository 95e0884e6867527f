/**
 * The 256-byte ext4 inode: decode into a plain record, encode back. Times carry the extra
 * epoch bits (2) and nanoseconds (30) of the large inode; sizes and block counts their high
 * halves (large_file, huge_file: i_blocks counts 512-byte units).
 */
import type { FileType, Timespec } from './types.ts';
import { EXTRA_ISIZE, INODE_SIZE } from './superblock.ts';

export const S_IFMT = 0xf000;
export const S_IFSOCK = 0xc000;
export const S_IFLNK = 0xa000;
export const S_IFREG = 0x8000;
export const S_IFBLK = 0x6000;
export const S_IFDIR = 0x4000;
export const S_IFCHR = 0x2000;
export const S_IFIFO = 0x1000;

export const FL_INDEX = 0x1000;
export const FL_HUGE_FILE = 0x40000;
export const FL_EXTENTS = 0x80000;

/** Where the in-inode xattr area starts (after the 128-byte base and extra_isize). */
export const XATTR_IBODY = 128 + EXTRA_ISIZE;

const TYPE_BITS: Record<FileType, number> = {
  file: S_IFREG, dir: S_IFDIR, symlink: S_IFLNK, chr: S_IFCHR, blk: S_IFBLK, fifo: S_IFIFO, sock: S_IFSOCK,
};

export function typeBits(type: FileType): number {
  return TYPE_BITS[type];
}

export function typeOf(mode: number): FileType | undefined {
  switch (mode & S_IFMT) {
    case S_IFREG: return 'file';
    case S_IFDIR: return 'dir';
    case S_IFLNK: return 'symlink';
    case S_IFCHR: return 'chr';
    case S_IFBLK: return 'blk';
    case S_IFIFO: return 'fifo';
    case S_IFSOCK: return 'sock';
    default: return undefined;
  }
}

export interface Inode {
  /** Type and permission bits. */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  links: number;
  atime: Timespec;
  ctime: Timespec;
  mtime: Timespec;
  crtime: Timespec;
  dtime: number;
  /** In 512-byte units. */
  blocks: number;
  flags: number;
  /** i_block: extent root, fast symlink target or device number (60 bytes). */
  block: Uint8Array;
  generation: number;
  /** The external xattr block, 0 if none. */
  fileAcl: number;
  /** The in-inode xattr area (bytes XATTR_IBODY..256). */
  ibody: Uint8Array;
}

export function emptyInode(): Inode {
  const t = { sec: 0, nsec: 0 };
  return {
    mode: 0, uid: 0, gid: 0, size: 0, links: 0, atime: t, ctime: t, mtime: t, crtime: t,
    dtime: 0, blocks: 0, flags: 0, block: new Uint8Array(60), generation: 0, fileAcl: 0,
    ibody: new Uint8Array(INODE_SIZE - XATTR_IBODY),
  };
}

const TWO32 = 2 ** 32;

function decodeTime(v: DataView, at: number, extraAt: number | undefined): Timespec {
  const lo = v.getInt32(at, true);
  if (extraAt === undefined) return { sec: lo, nsec: 0 };
  const extra = v.getUint32(extraAt, true);
  return { sec: lo + (extra & 3) * TWO32, nsec: extra >>> 2 };
}

/** Seconds representable with 2 epoch bits: [-2^31, 2^34 - 2^31). */
const MIN_SEC = -(2 ** 31);
const MAX_SEC = 2 ** 34 - 2 ** 31 - 1;

function encodeTime(v: DataView, at: number, extraAt: number, t: Timespec): void {
  const sec = Math.min(MAX_SEC, Math.max(MIN_SEC, Math.trunc(t.sec)));
  const lo = sec | 0;
  const epoch = ((sec - lo) / TWO32) & 3;
  v.setInt32(at, lo, true);
  const nsec = Math.min(999_999_999, Math.max(0, Math.trunc(t.nsec)));
  v.setUint32(extraAt, (epoch | (nsec << 2)) >>> 0, true);
}

export function decodeInode(buf: Uint8Array): Inode {
  const v = new DataView(buf.buffer, buf.byteOffset, INODE_SIZE);
  const extra = v.getUint16(0x80, true);
  const has = (end: number) => 128 + extra >= end;
  return {
    mode: v.getUint16(0x0, true),
    uid: (v.getUint16(0x2, true) | (v.getUint16(0x78, true) << 16)) >>> 0,
    gid: (v.getUint16(0x18, true) | (v.getUint16(0x7a, true) << 16)) >>> 0,
    size: v.getUint32(0x6c, true) * TWO32 + v.getUint32(0x4, true),
    links: v.getUint16(0x1a, true),
    atime: decodeTime(v, 0x8, has(0x90) ? 0x8c : undefined),
    ctime: decodeTime(v, 0xc, has(0x88) ? 0x84 : undefined),
    mtime: decodeTime(v, 0x10, has(0x8c) ? 0x88 : undefined),
    crtime: has(0x98) ? decodeTime(v, 0x90, 0x94) : { sec: 0, nsec: 0 },
    dtime: v.getUint32(0x14, true),
    blocks: v.getUint16(0x74, true) * TWO32 + v.getUint32(0x1c, true),
    flags: v.getUint32(0x20, true),
    block: buf.slice(0x28, 0x64),
    generation: v.getUint32(0x64, true),
    fileAcl: v.getUint16(0x76, true) * TWO32 + v.getUint32(0x68, true),
    ibody: buf.slice(XATTR_IBODY, INODE_SIZE),
  };
}

/** Writes `ino` over the 256 bytes at `buf` (every byte is rewritten). */
export function encodeInode(ino: Inode, buf: Uint8Array): void {
  buf.fill(0, 0, INODE_SIZE);
  const v = new DataView(buf.buffer, buf.byteOffset, INODE_SIZE);
  v.setUint16(0x0, ino.mode, true);
  v.setUint16(0x2, ino.uid & 0xffff, true);
  v.setUint32(0x4, ino.size >>> 0, true);
  encodeTime(v, 0x8, 0x8c, ino.atime);
  encodeTime(v, 0xc, 0x84, ino.ctime);
  encodeTime(v, 0x10, 0x88, ino.mtime);
  encodeTime(v, 0x90, 0x94, ino.crtime);
  v.setUint32(0x14, ino.dtime, true);
  v.setUint16(0x18, ino.gid & 0xffff, true);
  v.setUint16(0x1a, ino.links, true);
  v.setUint32(0x1c, ino.blocks >>> 0, true);
  v.setUint32(0x20, ino.flags, true);
  buf.set(ino.block, 0x28);
  v.setUint32(0x64, ino.generation, true);
  v.setUint32(0x68, ino.fileAcl >>> 0, true);
  v.setUint32(0x6c, Math.floor(ino.size / TWO32), true);
  v.setUint16(0x74, Math.floor(ino.blocks / TWO32), true);
  v.setUint16(0x76, Math.floor(ino.fileAcl / TWO32), true);
  v.setUint16(0x78, ino.uid >>> 16, true);
  v.setUint16(0x7a, ino.gid >>> 16, true);
  v.setUint16(0x80, EXTRA_ISIZE, true);
  buf.set(ino.ibody, XATTR_IBODY);
}

/** Device numbers in i_block as the kernel and mke2fs write them: old encoding when it fits. */
export function encodeRdev(block: Uint8Array, major: number, minor: number): void {
  const v = new DataView(block.buffer, block.byteOffset, 60);
  block.fill(0);
  if (major < 256 && minor < 256) v.setUint32(0, (major << 8) | minor, true);
  else v.setUint32(4, ((minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12)) >>> 0, true);
}

export function decodeRdev(block: Uint8Array): { major: number; minor: number } {
  const v = new DataView(block.buffer, block.byteOffset, 60);
  const old = v.getUint32(0, true);
  if (old !== 0) return { major: (old >>> 8) & 0xff, minor: old & 0xff };
  const n = v.getUint32(4, true);
  return { major: (n >>> 8) & 0xfff, minor: (n & 0xff) | ((n >>> 12) & 0xfff00) };
}
