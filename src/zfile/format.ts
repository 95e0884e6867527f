/**
 * ZFile on-disk structures (docs/format.md §3.1–3.3): the 512-byte header/trailer,
 * constants and validation. Pure encode/decode; no I/O.
 */
import { hex, readU64, writeU64 } from '../io/util.ts';
import { rawCrc32c } from './crc.ts';
import { ZFileChecksumError, ZFileFormatError } from './errors.ts';

export { rawCrc32c, blockCrc, BLOCK_CRC_SEED } from './crc.ts';
export { ZFileFormatError, ZFileChecksumError, type ZFileIntegrityKind } from './errors.ts';

/** Bytes reserved for the header and for the trailer. */
export const HT_SPACE = 512;
export const HT_STRUCT_SIZE = 96;

export const MAGIC0 = Uint8Array.of(0x5a, 0x46, 0x69, 0x6c, 0x65, 0x00, 0x01, 0x00);
export const MAGIC1 = Uint8Array.of(0x74, 0x75, 0x6a, 0x69, 0x2e, 0x79, 0x79, 0x66, 0x40, 0x41, 0x6c, 0x69, 0x62, 0x61, 0x62, 0x61);

export const FLAG_HEADER = 0x01;
export const FLAG_DATA = 0x02;
export const FLAG_SEALED = 0x04;
/** The header was rewritten with the final index fields ("info_valid" in the prose spec). */
export const FLAG_OVERWRITTEN = 0x08;
export const FLAG_DIGEST = 0x10;
/** Defined by the reference but never written nor readable. */
export const FLAG_INDEX_COMPRESSED = 0x20;

/** The flag values the reference writes. */
export const HEADER_FLAGS = FLAG_HEADER | FLAG_DATA | FLAG_DIGEST; // 0x13
export const TRAILER_FLAGS = FLAG_DATA | FLAG_SEALED | FLAG_DIGEST; // 0x16
export const OVERWRITTEN_HEADER_FLAGS = FLAG_HEADER | FLAG_DATA | FLAG_OVERWRITTEN | FLAG_DIGEST; // 0x1B

export const ALGO_LZ4 = 1;
export const ALGO_ZSTD = 2;
export type Algorithm = 'lz4' | 'zstd';

/** The zstd level the reference always uses; it records it as level byte 0. */
export const ZSTD_DEFAULT_LEVEL = 3;
/** The reference refuses tables with more blocks than this. */
export const MAX_BLOCKS = 1_000_000_000;
export const MIN_BLOCK_SIZE = 4096;
export const MAX_BLOCK_SIZE = 65536;
/** Extra room over the block size for a stored block: the reference's per-block output buffer. */
export const BLOCK_SLACK = 512;
export const CRC_SIZE = 4;

/** One parsed header or trailer. Sizes and offsets are in bytes unless noted. */
export interface ZFileHeader {
  flags: number;
  /** The stored digest field (raw CRC-32C of the 512 bytes with this field zeroed). */
  digest: number;
  /** Start of the jump table. */
  indexOffset: number;
  /** Number of blocks (u32 table entries), not bytes. */
  indexSize: number;
  originalSize: number;
  /** Raw CRC-32C of the jump-table bytes. */
  indexCrc: number;
  blockSize: number;
  /** 1 = LZ4, 2 = zstd (0 = MINI_LZO, unsupported). */
  algo: number;
  level: number;
  useDict: number;
  dictSize: number;
  /** True when each stored block ends with a 4-byte CRC. */
  verify: boolean;
}

export function algorithmName(algo: number): Algorithm | undefined {
  return algo === ALGO_LZ4 ? 'lz4' : algo === ALGO_ZSTD ? 'zstd' : undefined;
}

export function algorithmCode(name: Algorithm): number {
  return name === 'lz4' ? ALGO_LZ4 : ALGO_ZSTD;
}

/** True when `b` starts with both ZFile magics. */
export function hasZFileMagic(b: Uint8Array): boolean {
  if (b.length < 24) return false;
  for (let i = 0; i < 8; i++) if (b[i] !== MAGIC0[i]) return false;
  for (let i = 0; i < 16; i++) if (b[8 + i] !== MAGIC1[i]) return false;
  return true;
}

/** The digest of a 512-byte header/trailer: raw CRC over all 512 bytes with bytes 28..31 zeroed. */
export function computeDigest(block: Uint8Array): number {
  const copy = Uint8Array.from(block.subarray(0, HT_SPACE));
  copy[28] = copy[29] = copy[30] = copy[31] = 0;
  return rawCrc32c(copy, 0);
}

/**
 * Decodes a header or trailer (`at` = its offset in `file`, for messages). Checks magic and
 * struct size only; role-specific checks live in validateHeader/validateTrailer.
 */
export function parseHeader(b: Uint8Array, file: string, at: number): ZFileHeader {
  if (b.length < HT_SPACE) throw new ZFileFormatError(file, 'header', `truncated: ${b.length} of ${HT_SPACE} bytes`, at);
  if (!hasZFileMagic(b)) throw new ZFileFormatError(file, 'magic', 'ZFile magic not found', at);
  const dv = new DataView(b.buffer, b.byteOffset, HT_SPACE);
  const size = dv.getUint32(24, true);
  if (size !== HT_STRUCT_SIZE) throw new ZFileFormatError(file, 'struct-size', `header struct size is ${size}, expected ${HT_STRUCT_SIZE}`, at + 24);
  return {
    digest: dv.getUint32(28, true),
    flags: readU64(dv, 32),
    indexOffset: readU64(dv, 40),
    indexSize: readU64(dv, 48),
    originalSize: readU64(dv, 56),
    indexCrc: dv.getUint32(64, true),
    blockSize: dv.getUint32(72, true),
    algo: b[76]!,
    level: b[77]!,
    useDict: b[78]!,
    dictSize: dv.getUint32(84, true),
    verify: b[88] !== 0,
  };
}

/** Encodes a header/trailer into 512 bytes; fills in the digest when FLAG_DIGEST is set. */
export function serializeHeader(h: Omit<ZFileHeader, 'digest'>, out = new Uint8Array(HT_SPACE)): Uint8Array {
  out.fill(0, 0, HT_SPACE);
  out.set(MAGIC0, 0);
  out.set(MAGIC1, 8);
  const dv = new DataView(out.buffer, out.byteOffset, HT_SPACE);
  dv.setUint32(24, HT_STRUCT_SIZE, true);
  writeU64(dv, 32, h.flags);
  writeU64(dv, 40, h.indexOffset);
  writeU64(dv, 48, h.indexSize);
  writeU64(dv, 56, h.originalSize);
  dv.setUint32(64, h.indexCrc >>> 0, true);
  dv.setUint32(72, h.blockSize, true);
  out[76] = h.algo;
  out[77] = h.level;
  out[78] = h.useDict;
  dv.setUint32(84, h.dictSize, true);
  out[88] = h.verify ? 1 : 0;
  if (h.flags & FLAG_DIGEST) dv.setUint32(28, computeDigest(out), true);
  return out;
}

/** Throws when the stored digest of `raw` (a parsed header/trailer) does not match. */
export function checkDigest(raw: Uint8Array, h: ZFileHeader, file: string, at: number, role: string): void {
  if (!(h.flags & FLAG_DIGEST)) return;
  const actual = computeDigest(raw);
  if (actual !== h.digest) {
    throw new ZFileChecksumError(file, 'header-digest', -1, at, `${role} digest mismatch: stored ${hex(h.digest)}, computed ${hex(actual)}`);
  }
}

/** Checks the fields that decide how blocks are decoded (shared by header and trailer). */
export function validateCodecFields(h: ZFileHeader, file: string, at: number): void {
  const bs = h.blockSize;
  if (bs < 512 || bs > 1 << 20 || (bs & (bs - 1)) !== 0) {
    throw new ZFileFormatError(file, 'block-size', `block size ${bs} is not a power of two in [512, 1 MiB]`, at + 72);
  }
  if (algorithmName(h.algo) === undefined) {
    throw new ZFileFormatError(file, 'algorithm', `unsupported algorithm ${h.algo} (expected 1 = LZ4 or 2 = zstd)`, at + 76);
  }
  if (h.useDict !== 0) throw new ZFileFormatError(file, 'dictionary', 'files compressed with a dictionary are not supported', at + 78);
  if (h.flags & FLAG_INDEX_COMPRESSED) throw new ZFileFormatError(file, 'index-compressed', 'compressed jump tables are not supported', at + 32);
}

/**
 * Checks the index fields against the file: the table lies inside [blocksStart, limit), the
 * block count fits the limit and matches the original size.
 */
export function validateIndexFields(h: ZFileHeader, file: string, at: number, limit: number): void {
  const start = HT_SPACE + h.dictSize;
  if (h.indexSize > MAX_BLOCKS) throw new ZFileFormatError(file, 'index-size', `${h.indexSize} blocks exceeds the limit ${MAX_BLOCKS}`, at + 48);
  if (!Number.isSafeInteger(h.originalSize)) throw new ZFileFormatError(file, 'original-size', `original size ${h.originalSize} is too large`, at + 56);
  const expectBlocks = Math.ceil(h.originalSize / h.blockSize);
  if (h.indexSize !== expectBlocks) {
    throw new ZFileFormatError(file, 'index-size', `${h.indexSize} blocks for ${h.originalSize} bytes at block size ${h.blockSize} (expected ${expectBlocks})`, at + 48);
  }
  if (h.indexOffset < start || h.indexOffset + 4 * h.indexSize > limit) {
    throw new ZFileFormatError(
      file,
      'index-bounds',
      `jump table [${h.indexOffset}, ${h.indexOffset + 4 * h.indexSize}) is outside the block area [${start}, ${limit})`,
      at + 40,
    );
  }
}

/**
 * The largest stored block the reader accepts: above the LZ4 and zstd worst-case expansion of
 * one block (and the reference writer's `bs + 512` buffer), plus the CRC.
 */
export function maxStoredBlock(blockSize: number): number {
  return blockSize + (blockSize >>> 7) + BLOCK_SLACK + CRC_SIZE;
}
