/**
 * Extent trees: the 60-byte root in i_block (up to 4 entries) and, for files with more
 * extents, leaf and index blocks of 340 entries each, packed full from the left so e2fsck
 * finds the tree neither deeper nor wider than it needs to be.
 */
import { Ext4FormatError } from './errors.ts';
import { BLOCK_SIZE } from './superblock.ts';

export const EXTENT_MAGIC = 0xf30a;
/** Longest initialized extent. */
export const MAX_EXTENT = 32768;
const ROOT_MAX = 4;
const BLOCK_MAX = Math.floor((BLOCK_SIZE - 12) / 12);

export interface Extent {
  lblk: number;
  pblk: number;
  len: number;
}

/** Appends a run, merging it into the last extent when both are contiguous. */
export function pushRun(list: Extent[], lblk: number, pblk: number, len: number): void {
  while (len > 0) {
    const last = list[list.length - 1];
    if (last && last.lblk + last.len === lblk && last.pblk + last.len === pblk && last.len < MAX_EXTENT) {
      const n = Math.min(len, MAX_EXTENT - last.len);
      last.len += n;
      lblk += n; pblk += n; len -= n;
      continue;
    }
    const n = Math.min(len, MAX_EXTENT);
    list.push({ lblk, pblk, len: n });
    lblk += n; pblk += n; len -= n;
  }
}

/** Blocks a tree over `count` extents needs (0 when the root holds them). */
export function treeBlocksFor(count: number): number {
  let total = 0;
  let n = count;
  while (n > ROOT_MAX) {
    n = Math.ceil(n / BLOCK_MAX);
    total += n;
  }
  return total;
}

function header(v: DataView, at: number, entries: number, max: number, depth: number): void {
  v.setUint16(at, EXTENT_MAGIC, true);
  v.setUint16(at + 2, entries, true);
  v.setUint16(at + 4, max, true);
  v.setUint16(at + 6, depth, true);
  v.setUint32(at + 8, 0, true);
}

function entry(v: DataView, at: number, first: number, target: number, len: number, leaf: boolean): void {
  v.setUint32(at, first, true);
  if (leaf) {
    v.setUint16(at + 4, len, true);
    v.setUint16(at + 6, Math.floor(target / 2 ** 32), true);
    v.setUint32(at + 8, target >>> 0, true);
  } else {
    v.setUint32(at + 4, target >>> 0, true);
    v.setUint16(at + 8, Math.floor(target / 2 ** 32), true);
    v.setUint16(at + 10, 0, true);
  }
}

/**
 * Writes the tree for `extents` into the 60-byte root and the given tree blocks (exactly
 * treeBlocksFor(extents.length) of them, leaves first); `blockBuf` yields each block's cached
 * buffer, which the caller marks dirty.
 */
export async function writeTree(root: Uint8Array, extents: readonly Extent[], treeBlocks: readonly number[],
  blockBuf: (pblk: number) => Promise<Uint8Array>): Promise<void> {
  // Each level: the (first lblk, target) pairs it points at.
  let level: { first: number; target: number; len: number }[] = extents.map((e) => ({ first: e.lblk, target: e.pblk, len: e.len }));
  let depth = 0;
  let next = 0;
  while (level.length > ROOT_MAX) {
    const up: typeof level = [];
    for (let i = 0; i < level.length; i += BLOCK_MAX) {
      const pblk = treeBlocks[next++]!;
      const buf = await blockBuf(pblk);
      buf.fill(0);
      const v = new DataView(buf.buffer, buf.byteOffset, BLOCK_SIZE);
      const part = level.slice(i, i + BLOCK_MAX);
      header(v, 0, part.length, BLOCK_MAX, depth);
      part.forEach((p, k) => entry(v, 12 + 12 * k, p.first, p.target, p.len, depth === 0));
      up.push({ first: part[0]!.first, target: pblk, len: 0 });
    }
    level = up;
    depth++;
  }
  if (next !== treeBlocks.length) throw new Error(`extent tree: ${treeBlocks.length} blocks given, ${next} used`);
  root.fill(0);
  const v = new DataView(root.buffer, root.byteOffset, 60);
  header(v, 0, level.length, ROOT_MAX, depth);
  level.forEach((p, k) => entry(v, 12 + 12 * k, p.first, p.target, p.len, depth === 0));
}

/** Reads a whole tree: its extents in logical order and the blocks the tree itself uses. */
export async function readTree(device: string, ino: number, root: Uint8Array,
  readBlock: (pblk: number) => Promise<Uint8Array>): Promise<{ extents: Extent[]; treeBlocks: number[] }> {
  const extents: Extent[] = [];
  const treeBlocks: number[] = [];
  const walk = async (buf: Uint8Array, max: number, where: string): Promise<void> => {
    const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    if (v.getUint16(0, true) !== EXTENT_MAGIC) throw new Ext4FormatError(device, `inode ${ino}: bad extent header magic in ${where}`);
    const n = v.getUint16(2, true);
    const depth = v.getUint16(6, true);
    if (n > max || depth > 5) throw new Ext4FormatError(device, `inode ${ino}: bad extent header in ${where}`);
    for (let k = 0; k < n; k++) {
      const at = 12 + 12 * k;
      if (depth === 0) {
        let len = v.getUint16(at + 4, true);
        if (len > MAX_EXTENT) len -= MAX_EXTENT; // unwritten extent: still owns its blocks
        extents.push({ lblk: v.getUint32(at, true), len, pblk: v.getUint16(at + 6, true) * 2 ** 32 + v.getUint32(at + 8, true) });
      } else {
        const child = v.getUint16(at + 8, true) * 2 ** 32 + v.getUint32(at + 4, true);
        treeBlocks.push(child);
        await walk(await readBlock(child), BLOCK_MAX, `block ${child}`);
      }
    }
  };
  await walk(root, ROOT_MAX, 'i_block');
  return { extents, treeBlocks };
}
