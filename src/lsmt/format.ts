/**
 * LSMT on-disk structures: the 4096-byte header/trailer and 16-byte index entries
 * (docs/format.md §2.1–2.2). Pure encode/decode; no I/O.
 */
import { FormatError, InvalidArgumentError } from '../io/errors.ts';
import { MAX_DISK_SIZE, readU64, writeU64 } from '../io/util.ts';

export const SECTOR = 512;
export const HT_SPACE = 4096;
export const HT_STRUCT_SIZE = 390;
export const ENTRY_SIZE = 16;
/** Longest extent one entry can describe, in sectors (14-bit length). */
export const MAX_ENTRY_SECTORS = 16383;
/** offset value of padding entries (2^50 − 1). */
export const INVALID_OFFSET = 2 ** 50 - 1;
export const MAX_MOFFSET = 2 ** 55 - 1;
/** The reference refuses sealed indexes larger than this. */
export const MAX_RO_INDEX_ENTRIES = 1_000_000;
export const MAX_RW_INDEX_ENTRIES = 128_000_000;
export const NULL_UUID = '00000000-0000-0000-0000-000000000000';
/**
 * Largest virtual size accepted: the largest disk whose offsets and lengths are exact numbers
 * (the format's 50-bit sector offsets would allow 2^59 bytes).
 */
export const MAX_VIRTUAL_SIZE = MAX_DISK_SIZE;

/**
 * Checks a layer's virtual size (docs/format.md §2.10): a multiple of 512, at most
 * MAX_VIRTUAL_SIZE, and covering everything its index maps (`mappedEnd`, bytes). 0 is accepted
 * only when `allowZero` (a layer whose size comes from the layers below, as the reference's
 * convertor writes them).
 */
export function checkVirtualSize(size: number, mappedEnd: number, file: string, at: number | undefined, allowZero: boolean): void {
  const why =
    size === 0
      ? allowZero
        ? undefined
        : 'is zero'
      : !Number.isSafeInteger(size) || size > MAX_VIRTUAL_SIZE
        ? `exceeds the largest supported size ${MAX_VIRTUAL_SIZE}`
        : size % SECTOR !== 0
          ? 'is not a multiple of 512'
          : size < mappedEnd
            ? `is smaller than the data its index maps (up to byte ${mappedEnd})`
            : undefined;
  if (why) throw new FormatError(file, `virtual size ${size} ${why}`, at);
}

export const MAGIC0 = Uint8Array.of(0x4c, 0x53, 0x4d, 0x54, 0x00, 0x01, 0x02, 0x00);
export const MAGIC1 = Uint8Array.of(0x65, 0x7e, 0x63, 0xd2, 0x94, 0x44, 0x08, 0x4c, 0xa2, 0xd2, 0xc8, 0xec, 0x4f, 0xcf, 0xae, 0x8a);

export const FLAG_HEADER = 1;
export const FLAG_DATA = 2;
export const FLAG_SEALED = 4;
export const FLAG_GC = 8;
export const FLAG_SPARSE = 16;
export const FLAG_INFO_VALID = 32;

export interface HeaderTrailer {
  flags: number;
  /** Bytes. */
  indexOffset: number;
  /** Number of 16-byte entries (padding included). */
  indexSize: number;
  virtualSize: number;
  uuid: string;
  parentUuid: string;
  version: number;
  subVersion: number;
  userTag: string;
}

/** True when the first bytes carry both LSMT magics. */
export function hasLsmtMagic(b: Uint8Array): boolean {
  if (b.length < 24) return false;
  for (let i = 0; i < 8; i++) if (b[i] !== MAGIC0[i]) return false;
  for (let i = 0; i < 16; i++) if (b[8 + i] !== MAGIC1[i]) return false;
  return true;
}

function readCString(b: Uint8Array, off: number, len: number): string {
  let end = off;
  while (end < off + len && b[end] !== 0) end++;
  return Buffer.from(b.buffer, b.byteOffset + off, end - off).toString('latin1');
}

/**
 * Decodes a header or trailer. Checks magic and struct size only; the caller checks the
 * flags it expects for the role the block plays.
 */
export function parseHeaderTrailer(b: Uint8Array, file: string, at: number): HeaderTrailer {
  if (b.length < HT_STRUCT_SIZE) throw new FormatError(file, `LSMT header/trailer truncated (${b.length} bytes)`, at);
  if (!hasLsmtMagic(b)) throw new FormatError(file, 'not an LSMT header/trailer: magic mismatch', at);
  const dv = new DataView(b.buffer, b.byteOffset, b.length);
  const size = dv.getUint32(24, true);
  if (size !== HT_STRUCT_SIZE) throw new FormatError(file, `LSMT struct size is ${size}, expected ${HT_STRUCT_SIZE}`, at + 24);
  return {
    flags: dv.getUint32(28, true),
    indexOffset: readU64(dv, 32),
    indexSize: readU64(dv, 40),
    virtualSize: readU64(dv, 48),
    uuid: readCString(b, 56, 37),
    parentUuid: readCString(b, 93, 37),
    version: b[132]!,
    subVersion: b[133]!,
    userTag: readCString(b, 134, 256),
  };
}

/** Encodes a header/trailer into a fresh 4096-byte block. */
export function encodeHeaderTrailer(ht: HeaderTrailer): Uint8Array {
  const b = new Uint8Array(HT_SPACE);
  const dv = new DataView(b.buffer);
  b.set(MAGIC0, 0);
  b.set(MAGIC1, 8);
  dv.setUint32(24, HT_STRUCT_SIZE, true);
  dv.setUint32(28, ht.flags, true);
  writeU64(dv, 32, ht.indexOffset);
  writeU64(dv, 40, ht.indexSize);
  writeU64(dv, 48, ht.virtualSize);
  b.set(Buffer.from(normalizeUuid(ht.uuid), 'latin1'), 56);
  b.set(Buffer.from(normalizeUuid(ht.parentUuid), 'latin1'), 93);
  b[132] = ht.version;
  b[133] = ht.subVersion;
  const tag = Buffer.from(ht.userTag, 'utf8');
  if (tag.length > 256) throw new InvalidArgumentError(`user tag is ${tag.length} bytes; at most 256 fit`);
  b.set(tag, 134);
  return b;
}

const UUID_RE = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

export function isUuid(s: string): boolean {
  return UUID_RE.test(s);
}

/** Upper-case UUID as the reference writes it; '' means none (the all-zero UUID). */
export function normalizeUuid(s: string | undefined): string {
  if (!s) return NULL_UUID;
  if (!isUuid(s)) throw new InvalidArgumentError(`not a UUID: "${s}" (expected 8-4-4-4-12 hex digits)`);
  return s.toUpperCase();
}

/** True for '' or the all-zero UUID. */
export function isNullUuid(s: string): boolean {
  return s === '' || s === NULL_UUID;
}

/** A random v4 UUID in the reference's upper-case form. */
export function randomUuid(): string {
  return crypto.randomUUID().toUpperCase();
}

/** One index entry. Offsets and lengths are in sectors. */
export interface Mapping {
  offset: number;
  length: number;
  moffset: number;
  zeroed: boolean;
  tag: number;
}

/*
 * The 16-byte entry layout (docs/format.md §2.2) lives here and nowhere else. An entry is
 * read as four little-endian u32 words, lo0 hi0 lo1 hi1 (bytes 0, 4, 8, 12), so no BigInt is
 * involved: offset = bits 0–49 and length = bits 50–63 of lo0:hi0; moffset = bits 0–54,
 * zeroed = bit 55 and tag = bits 56–63 of lo1:hi1. Hot paths (the sealed index loader, the
 * writable log's replay and pending entries) read the words themselves and call the field
 * functions below, which allocate nothing and which V8 inlines; decodeEntry/encodeEntry are
 * the same layout as a Mapping object. test/lsmt/entry-layout.test.ts checks every user
 * against an independent BigInt encoding.
 */

/** Offset field (sectors) from words lo0, hi0; INVALID_OFFSET marks padding. */
export function entryOffset(lo0: number, hi0: number): number {
  return lo0 + (hi0 & 0x3ffff) * 2 ** 32;
}

/** Length field (sectors) from word hi0. */
export function entryLength(hi0: number): number {
  return hi0 >>> 18;
}

/** Moffset field (sectors into the data) from words lo1, hi1. */
export function entryMoffset(lo1: number, hi1: number): number {
  return lo1 + (hi1 & 0x7fffff) * 2 ** 32;
}

/** Zeroed flag from word hi1. */
export function entryZeroed(hi1: number): boolean {
  return (hi1 & 0x800000) !== 0;
}

/** Tag byte from word hi1. */
export function entryTag(hi1: number): number {
  return hi1 >>> 24;
}

/** Writes one entry from its fields at byte `at` of `dv` (the tag is taken modulo 256). */
export function writeEntry(dv: DataView, at: number, offset: number, length: number, moffset: number, zeroed: boolean, tag: number): void {
  dv.setUint32(at, offset >>> 0, true);
  dv.setUint32(at + 4, (Math.floor(offset / 2 ** 32) | (length << 18)) >>> 0, true);
  dv.setUint32(at + 8, moffset >>> 0, true);
  dv.setUint32(at + 12, (Math.floor(moffset / 2 ** 32) | (zeroed ? 1 << 23 : 0) | ((tag & 0xff) << 24)) >>> 0, true);
}

/** Decodes the entry at byte `at` of `dv`. */
export function decodeEntry(dv: DataView, at: number): Mapping {
  const hi0 = dv.getUint32(at + 4, true);
  const hi1 = dv.getUint32(at + 12, true);
  return {
    offset: entryOffset(dv.getUint32(at, true), hi0),
    length: entryLength(hi0),
    moffset: entryMoffset(dv.getUint32(at + 8, true), hi1),
    zeroed: entryZeroed(hi1),
    tag: entryTag(hi1),
  };
}

/** Encodes `m` at byte `at` of `dv`. */
export function encodeEntry(dv: DataView, at: number, m: Mapping): void {
  writeEntry(dv, at, m.offset, m.length, m.moffset, m.zeroed, m.tag);
}

export const PADDING_ENTRY: Mapping = Object.freeze({ offset: INVALID_OFFSET, length: 0, moffset: 0, zeroed: false, tag: 0 });
