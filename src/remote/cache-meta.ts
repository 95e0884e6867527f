/**
 * The blob cache's metadata file, one per cached blob (`<digest>.meta` beside `<digest>.data`):
 * which refill units are held, a CRC32C per unit, the LRU clock, and the key for blobs not
 * named by a digest. Little-endian:
 *
 *   0  magic "OBDCACHE"   8  version (1)   12 unit   16 blob size (u64)   24 flags
 *   28 CRC32C of the whole file with this field zero   32 last use (u64, LRU clock)
 *   40 bitmap (one bit per unit)   then one u32 CRC per unit   then the key (UTF-8, optional)
 *
 * A file that fails any check decodes as undefined: the cache treats it as absent and
 * fetches the blob again, never trusting a field it could not check.
 */
import { readFile } from 'node:fs/promises';
import { crc32c } from '../io/crc.ts';

const MAGIC = Buffer.from('OBDCACHE');
const VERSION = 1;
const HEADER = 40;
/** Every unit is held and the whole blob matched its digest. */
export const FLAG_COMPLETE = 1;

export interface CacheMeta {
  size: number;
  unit: number;
  flags: number;
  lastUse: number;
  bitmap: Uint8Array;
  crcs: Uint32Array;
  key: string | undefined;
}

/** Fresh metadata for a blob of which nothing is held yet. */
export function emptyMeta(size: number, unit: number, lastUse: number, key: string): CacheMeta {
  const units = Math.ceil(size / unit);
  return { size, unit, flags: 0, lastUse, bitmap: new Uint8Array(Math.ceil(units / 8)), crcs: new Uint32Array(units), key };
}

/** Decodes a metadata file's bytes (modified: the CRC field is zeroed); undefined when any check fails. */
export function decodeMeta(b: Buffer): CacheMeta | undefined {
  if (b.length < HEADER || !b.subarray(0, 8).equals(MAGIC) || b.readUInt32LE(8) !== VERSION) return undefined;
  const unit = b.readUInt32LE(12);
  const size = Number(b.readBigUInt64LE(16));
  const stored = b.readUInt32LE(28);
  b.writeUInt32LE(0, 28);
  if (crc32c(b) !== stored || unit === 0) return undefined;
  const units = Math.ceil(size / unit);
  const bm = Math.ceil(units / 8);
  const keyAt = HEADER + bm + units * 4;
  if (b.length < keyAt) return undefined;
  const flags = b.readUInt32LE(24);
  const lastUse = Number(b.readBigUInt64LE(32));
  // Unknown flag bits or a clock past 2^53 are not ours: such a file is dropped like a bad CRC
  // (kept, they broke the LRU clock and made the next publish throw).
  if ((flags & ~FLAG_COMPLETE) !== 0 || !Number.isSafeInteger(lastUse)) return undefined;
  const crcs = new Uint32Array(units);
  for (let i = 0; i < units; i++) crcs[i] = b.readUInt32LE(HEADER + bm + i * 4);
  return {
    size,
    unit,
    flags,
    lastUse,
    bitmap: new Uint8Array(b.subarray(HEADER, HEADER + bm)),
    crcs,
    key: b.length > keyAt ? b.subarray(keyAt).toString('utf8') : undefined,
  };
}

/** Reads and decodes a metadata file; undefined when it is missing or fails a check. */
export async function readMeta(file: string): Promise<CacheMeta | undefined> {
  let b: Buffer;
  try {
    b = await readFile(file);
  } catch {
    return undefined;
  }
  return decodeMeta(b);
}

/**
 * The refill unit a metadata file was written with, read from its header alone (no CRC
 * check): how `obd cache` finds the unit to open a directory with. Undefined when the bytes
 * do not start like metadata or the unit is not a valid refill unit.
 */
export function peekUnit(b: Uint8Array): number | undefined {
  if (b.length < 16 || !Buffer.from(b.buffer, b.byteOffset, 8).equals(MAGIC)) return undefined;
  const u = Buffer.from(b.buffer, b.byteOffset, 16).readUInt32LE(12);
  return u >= 4096 && (u & (u - 1)) === 0 ? u : undefined;
}

export function encodeMeta(m: CacheMeta): Buffer {
  const units = m.crcs.length;
  const key = m.key ? Buffer.from(m.key) : Buffer.alloc(0);
  const b = Buffer.alloc(HEADER + m.bitmap.length + units * 4 + key.length);
  MAGIC.copy(b, 0);
  b.writeUInt32LE(VERSION, 8);
  b.writeUInt32LE(m.unit, 12);
  b.writeBigUInt64LE(BigInt(m.size), 16);
  b.writeUInt32LE(m.flags, 24);
  b.writeBigUInt64LE(BigInt(m.lastUse), 32);
  b.set(m.bitmap, HEADER);
  for (let i = 0; i < units; i++) b.writeUInt32LE(m.crcs[i]!, HEADER + m.bitmap.length + i * 4);
  key.copy(b, HEADER + m.bitmap.length + units * 4);
  b.writeUInt32LE(crc32c(b), 28);
  return b;
}

/** Bytes of blob data the bitmap says are held. */
export function heldBytes(bitmap: Uint8Array, size: number, unit: number): number {
  let n = 0;
  const units = Math.ceil(size / unit);
  for (let i = 0; i < units; i++) if (bitmap[i >> 3]! & (1 << (i & 7))) n += Math.min(unit, size - i * unit);
  return n;
}
