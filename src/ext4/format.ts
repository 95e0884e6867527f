/**
 * mkfs: the geometry for a device and the fixed metadata of a fresh filesystem (superblock and
 * its sparse_super backups, group descriptors, flex_bg-packed bitmaps and inode tables).
 * Groups never touched stay BLOCK_UNINIT / INODE_UNINIT holes; the first group of each flex,
 * which holds its flex's bitmaps and tables, and the last group get an initialized block bitmap
 * (as mke2fs does).
 */
import type { BlockCache } from './cache.ts';
import { Ext4ArgumentError, Ext4NoSpaceError } from './errors.ts';
import { BG_BLOCK_UNINIT, BG_INODE_UNINIT, BG_INODE_ZEROED, Groups, setBits } from './groups.ts';
import { Allocator } from './alloc.ts';
import { BLOCKS_PER_GROUP, BLOCK_SIZE, geometryFor, groupBlocks, hasSuper, Superblock } from './superblock.ts';
import type { Geometry } from './superblock.ts';
import type { FormatOptions } from './types.ts';

/** Fixed blocks of group g when it starts a flex of `n` groups (bitmaps + tables) plus its backup. */
function overhead(geo: Geometry, g: number): number {
  const n = g % geo.flexSize === 0 ? Math.min(geo.flexSize, geo.groups - g) : 0;
  return (hasSuper(g) ? 1 + geo.gdtBlocks : 0) + n * (2 + geo.itableBlocks);
}

/** The geometry for `size` bytes; a last group too small for its metadata is dropped, as mke2fs does. */
export function geometryForDevice(device: string, size: number, inodeRatio: number): Geometry {
  let blocks = Math.floor(size / BLOCK_SIZE);
  if (blocks > 2 ** 32 * BLOCKS_PER_GROUP) throw new Ext4ArgumentError(`${device}: ${size} bytes is too large for ext4`);
  for (let tries = 0; tries < 3; tries++) {
    const geo = geometryFor(blocks, inodeRatio);
    const last = geo.groups - 1;
    if (groupBlocks(geo, last) >= overhead(geo, last) + 64) return geo;
    if (last === 0) break;
    blocks = last * BLOCKS_PER_GROUP;
  }
  throw new Ext4NoSpaceError(`${device}: ${size} bytes is too small for an ext4 filesystem`);
}

export interface Formatted { geo: Geometry; sb: Superblock; groups: Groups; alloc: Allocator }

/** Lays out and caches (dirty) every fixed metadata block of a fresh filesystem. */
export function formatMetadata(device: string, cache: BlockCache, geo: Geometry, opts: FormatOptions): Formatted {
  if (opts.uuid.length !== 16) throw new Ext4ArgumentError(`${device}: uuid must be 16 bytes, got ${opts.uuid.length}`);
  const seed = opts.hashSeed ?? opts.uuid;
  if (seed.length !== 16) throw new Ext4ArgumentError(`${device}: hash seed must be 16 bytes, got ${seed.length}`);
  const label = new TextEncoder().encode(opts.label ?? '');
  if (label.length > 16) throw new Ext4ArgumentError(`${device}: label "${opts.label}" longer than 16 bytes`);
  const zero = new Uint8Array(BLOCK_SIZE);
  const block0 = cache.fresh(0, zero, true);
  const sb = new Superblock(block0.subarray(1024, 2048));
  sb.init(geo, opts.uuid, seed, label);
  const groups = Groups.fresh(cache, geo, opts.uuid, zero);
  for (let f = 0; f < geo.groups; f += geo.flexSize) {
    const n = Math.min(geo.flexSize, geo.groups - f);
    const start = f * BLOCKS_PER_GROUP + (hasSuper(f) ? 1 + geo.gdtBlocks : 0);
    for (let i = 0; i < n; i++) {
      groups.setLocations(f + i, start + i, start + n + i, start + 2 * n + i * geo.itableBlocks);
    }
  }
  const alloc = new Allocator(device, geo, groups, sb, cache);
  let free = 0;
  for (let g = 0; g < geo.groups; g++) {
    const meta = alloc.metadata(g);
    const blocks = groupBlocks(geo, g);
    groups.setFreeBlocks(g, blocks - meta);
    groups.setFreeInodes(g, geo.inodesPerGroup);
    groups.setItableUnused(g, geo.inodesPerGroup);
    let flags = BG_INODE_UNINIT | BG_INODE_ZEROED;
    if (g % geo.flexSize === 0 || g === geo.groups - 1) {  // e2fsck wants the last group's bitmap initialized
      const map = cache.fresh(groups.blockBitmap(g), zero, true);
      alloc.metadata(g, map);
      setBits(map, blocks, BLOCK_SIZE * 8);
    } else {
      flags |= BG_BLOCK_UNINIT;
    }
    groups.setFlags(g, flags);
    free += blocks - meta;
  }
  sb.freeBlocks = free;
  sb.freeInodes = geo.inodes;
  return { geo, sb, groups, alloc };
}

/** Writes the superblock and descriptor table copies of the sparse_super backup groups. */
export async function writeBackups(write: (buf: Uint8Array, offset: number) => Promise<void>, geo: Geometry,
  sb: Superblock, groups: Groups): Promise<void> {
  const table = Buffer.concat(groups.tableBlocks());
  for (let g = 1; g < geo.groups; g++) {
    if (!hasSuper(g)) continue;
    const at = g * BLOCKS_PER_GROUP * BLOCK_SIZE;
    await write(sb.backup(g), at);
    await write(table, at + BLOCK_SIZE);
  }
}
