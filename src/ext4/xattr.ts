/**
 * Extended attributes on disk: the in-inode area (after extra_isize) and one external block,
 * with the entry and block hashes e2fsck verifies. POSIX ACLs arrive in the Linux VFS format
 * (version 2, 8-byte entries) and are stored in ext4's compact format (version 1, 4-byte
 * entries for the tags that carry no id).
 */
import { Ext4ArgumentError, Ext4NoSpaceError } from './errors.ts';

export const XATTR_MAGIC = 0xea020000;
const BLOCK_HEADER = 32;
const ENTRY_HEADER = 16;

const PREFIXES: readonly [string, number][] = [
  ['system.posix_acl_access', 2], ['system.posix_acl_default', 3],
  ['user.', 1], ['trusted.', 4], ['security.', 6], ['system.', 7],
];

export interface XattrEntry { index: number; name: Uint8Array; value: Uint8Array }

/** Splits full names into ext4's (index, suffix) and converts ACL values; sorted as the kernel sorts. */
export function toEntries(device: string, attrs: ReadonlyMap<string, Uint8Array>): XattrEntry[] {
  const out: XattrEntry[] = [];
  for (const [full, value] of attrs) {
    const p = PREFIXES.find(([pre, idx]) => (idx === 2 || idx === 3 ? full === pre : full.startsWith(pre)));
    if (!p) throw new Ext4ArgumentError(`${device}: xattr "${full}" has no namespace ext4 stores (user., trusted., security., system.)`);
    const name = new TextEncoder().encode(full.slice(p[1] === 2 || p[1] === 3 ? full.length : p[0].length));
    if (name.length > 255) throw new Ext4ArgumentError(`${device}: xattr name "${full}" longer than 255 bytes`);
    out.push({ index: p[1], name, value: p[1] === 2 || p[1] === 3 ? aclToDisk(device, full, value) : value });
  }
  out.sort((a, b) => a.index - b.index || a.name.length - b.name.length || Buffer.compare(a.name, b.name));
  return out;
}

function aclToDisk(device: string, name: string, v: Uint8Array): Uint8Array {
  const dv = new DataView(v.buffer, v.byteOffset, v.byteLength);
  if (v.length < 4 || (v.length - 4) % 8 !== 0 || dv.getUint32(0, true) !== 2) {
    throw new Ext4ArgumentError(`${device}: xattr ${name} is not a POSIX ACL in the VFS format (version 2, 8-byte entries)`);
  }
  const parts: number[] = [1, 0, 0, 0];
  for (let at = 4; at < v.length; at += 8) {
    const tag = dv.getUint16(at, true);
    const perm = dv.getUint16(at + 2, true);
    parts.push(tag & 0xff, tag >>> 8, perm & 0xff, perm >>> 8);
    if (tag === 2 || tag === 8) for (let k = 0; k < 4; k++) parts.push(v[at + 4 + k]!);
  }
  return Uint8Array.from(parts);
}

const pad4 = (n: number): number => (n + 3) & ~3;

/** ext2fs_ext_attr_hash_entry: the name, then the value's 32-bit words. */
export function entryHash(e: XattrEntry): number {
  let h = 0;
  for (const c of e.name) h = ((h << 5) ^ (h >>> 27) ^ c) >>> 0;
  const padded = new Uint8Array(pad4(e.value.length));
  padded.set(e.value);
  const dv = new DataView(padded.buffer);
  for (let at = 0; at < padded.length; at += 4) h = ((h << 16) ^ (h >>> 16) ^ dv.getUint32(at, true)) >>> 0;
  return h;
}

function entrySize(e: XattrEntry): number {
  return pad4(ENTRY_HEADER + e.name.length);
}

/**
 * Writes `entries` into a region: entry table at `tableAt`, values packed down from the end,
 * value offsets relative to `base`. Returns false when they do not fit (region untouched).
 */
function place(region: Uint8Array, tableAt: number, base: number, entries: readonly XattrEntry[]): boolean {
  let table = 4; // the terminating zero word
  let values = 0;
  for (const e of entries) {
    table += entrySize(e);
    values += pad4(e.value.length);
  }
  if (tableAt + table + values > region.length) return false;
  const dv = new DataView(region.buffer, region.byteOffset, region.byteLength);
  let at = tableAt;
  let end = region.length;
  for (const e of entries) {
    end -= pad4(e.value.length);
    region.set(e.value, end);
    region[at] = e.name.length;
    region[at + 1] = e.index;
    dv.setUint16(at + 2, e.value.length === 0 ? 0 : end - base, true);
    dv.setUint32(at + 4, 0, true);
    dv.setUint32(at + 8, e.value.length, true);
    dv.setUint32(at + 12, entryHash(e), true);
    region.set(e.name, at + ENTRY_HEADER);
    at += entrySize(e);
  }
  return true;
}

/**
 * Lays out the attributes: as many as fit (in order) into the in-inode area `ibody`
 * (magic + entries), the rest into one block. Returns the block's bytes or undefined.
 */
export function layout(device: string, ibody: Uint8Array, entries: readonly XattrEntry[], blockSize: number): Uint8Array | undefined {
  ibody.fill(0);
  let n = entries.length;
  while (n > 0 && !place(ibody, 4, 4, entries.slice(0, n))) n--;
  if (n > 0) new DataView(ibody.buffer, ibody.byteOffset, 4).setUint32(0, XATTR_MAGIC, true);
  else ibody.fill(0);
  if (n === entries.length) return undefined;
  const rest = entries.slice(n);
  const block = new Uint8Array(blockSize);
  if (!place(block, BLOCK_HEADER, 0, rest)) {
    throw new Ext4NoSpaceError(`${device}: extended attributes need more than the inode and one ${blockSize}-byte block`);
  }
  const dv = new DataView(block.buffer);
  dv.setUint32(0, XATTR_MAGIC, true);
  dv.setUint32(4, 1, true); // refcount
  dv.setUint32(8, 1, true); // blocks
  let h = 0;
  for (const e of rest) h = ((h << 16) ^ (h >>> 16) ^ entryHash(e)) >>> 0;
  dv.setUint32(12, h, true);
  return block;
}
