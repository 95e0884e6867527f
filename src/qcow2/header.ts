/**
 * The qcow2 header and header extensions (docs/qcow2.md, from qemu's qcow2.txt): versions
 * 2 and 3, all big-endian. Parsing validates what reading relies on
 * and refuses what it cannot honour, naming the file, offset and expectation.
 */
import { FormatError } from '../io/errors.ts';
import type { ByteSource } from '../io/types.ts';
import { readAt } from '../io/util.ts';
import { Qcow2UnsupportedError, UncleanImageError } from './errors.ts';

export const QCOW2_MAGIC = 0x514649fb;

export const INCOMPAT_DIRTY = 1 << 0;
export const INCOMPAT_CORRUPT = 1 << 1;
export const INCOMPAT_DATA_FILE = 1 << 2;
export const INCOMPAT_COMPRESSION = 1 << 3;
export const INCOMPAT_EXTL2 = 1 << 4;
const INCOMPAT_KNOWN = 0x1f;
const MAX_L1_ENTRIES = (32 << 20) / 8;

const EXT_END = 0;
const EXT_BACKING_FORMAT = 0xe2792aca;
const EXT_FEATURE_NAMES = 0x6803f857;
const EXT_CRYPTO = 0x0537be77;
const EXT_DATA_FILE = 0x44415441;

export type CompressionType = 'zlib' | 'zstd';

export interface Qcow2Header {
  version: 2 | 3;
  clusterBits: number;
  clusterSize: number;
  /** Virtual size in bytes. */
  size: number;
  l1Size: number;
  l1Offset: number;
  incompatible: number;
  compression: CompressionType;
  /** Extended L2 entries: 32 subclusters per cluster. */
  extendedL2: boolean;
  /** The backing file name as stored (not resolved), if any. */
  backingFile?: string;
  /** The backing format header extension ('raw', 'qcow2', …), if present. */
  backingFormat?: string;
}

export interface HeaderOptions {
  /** Read an image whose dirty or corrupt bit is set. */
  force?: boolean;
}

/** True when `head` starts with the qcow2 magic. */
export function hasQcow2Magic(head: Uint8Array): boolean {
  return head.length >= 4 && new DataView(head.buffer, head.byteOffset, 4).getUint32(0) === QCOW2_MAGIC;
}

/** Big-endian u64 as a number; throws when it does not fit in 53 bits. */
function u64(dv: DataView, at: number, file: string, what: string): number {
  const hi = dv.getUint32(at);
  if (hi >= 2 ** 21) throw new FormatError(file, `${what} ${hi.toString(16)}${dv.getUint32(at + 4).toString(16).padStart(8, '0')}h is beyond 2^53`, at);
  return hi * 2 ** 32 + dv.getUint32(at + 4);
}

/** Reads and validates the header, its extensions and the backing file name of `src`. */
export async function readHeader(src: ByteSource, opts: HeaderOptions = {}): Promise<Qcow2Header> {
  const file = src.name;
  if (src.size < 72) throw new FormatError(file, `file of ${src.size} bytes is too small for a qcow2 header (72 bytes)`, 0);
  const fixed = await readAt(src, 0, Math.min(src.size, 112));
  const dv = new DataView(fixed.buffer, fixed.byteOffset, fixed.length);
  if (!hasQcow2Magic(fixed)) throw new FormatError(file, 'not a qcow2 image (no QFI\\xfb magic)', 0);
  const version = dv.getUint32(4);
  if (version !== 2 && version !== 3) throw new FormatError(file, `qcow2 version ${version}, expected 2 or 3`, 4);
  const backingOffset = u64(dv, 8, file, 'backing file offset');
  const backingSize = dv.getUint32(16);
  const clusterBits = dv.getUint32(20);
  if (clusterBits < 9 || clusterBits > 21) throw new FormatError(file, `cluster_bits ${clusterBits}, expected 9 (512 B) to 21 (2 MiB)`, 20);
  const clusterSize = 2 ** clusterBits;
  const size = u64(dv, 24, file, 'virtual size');
  const crypt = dv.getUint32(32);
  const l1Size = dv.getUint32(36);
  const l1Offset = u64(dv, 40, file, 'L1 table offset');

  let incompatible = 0;
  let incompatHigh = 0;
  let headerLength = 72;
  let compression: CompressionType = 'zlib';
  if (version === 3) {
    if (fixed.length < 104) throw new FormatError(file, `file of ${src.size} bytes is too small for a version 3 header (104 bytes)`, 0);
    incompatHigh = dv.getUint32(72);
    incompatible = dv.getUint32(76);
    headerLength = dv.getUint32(100);
    if (headerLength < 104 || headerLength % 8 !== 0 || headerLength > clusterSize) {
      throw new FormatError(file, `header_length ${headerLength}, expected a multiple of 8 from 104 to the cluster size`, 100);
    }
    if (headerLength > 104) {
      const ct = fixed[104]!;
      if (ct === 1) compression = 'zstd';
      else if (ct !== 0) throw new Qcow2UnsupportedError(file, `compression type ${ct}`, 'only zlib (0) and zstd (1) are known');
    }
    if ((incompatible & INCOMPAT_COMPRESSION) !== 0 !== (compression !== 'zlib')) {
      throw new FormatError(file, `the compression type bit says ${incompatible & INCOMPAT_COMPRESSION ? 'non-zlib' : 'zlib'} but compression_type is ${compression}`, 104);
    }
  }

  // Extensions lie between the header and the end of the first cluster.
  const extEnd = Math.min(clusterSize, src.size);
  const area = await readAt(src, 0, extEnd);
  const adv = new DataView(area.buffer, area.byteOffset, area.length);
  const names = new Map<number, string>();
  let backingFormat: string | undefined;
  let dataFile = false;
  let cryptoExt = false;
  const text = (at: number, n: number) => new TextDecoder().decode(area.subarray(at, at + n));
  for (let at = headerLength; ; ) {
    if (at + 8 > extEnd) throw new FormatError(file, `header extensions run past the first cluster (${extEnd} bytes) without an end marker`, at);
    const type = adv.getUint32(at);
    const len = adv.getUint32(at + 4);
    if (type === EXT_END) break;
    if (at + 8 + len > extEnd) throw new FormatError(file, `header extension ${type.toString(16)}h of ${len} bytes runs past the first cluster`, at);
    const data = at + 8;
    if (type === EXT_BACKING_FORMAT) backingFormat = text(data, len);
    else if (type === EXT_DATA_FILE) dataFile = true;
    else if (type === EXT_CRYPTO) cryptoExt = true;
    else if (type === EXT_FEATURE_NAMES) {
      for (let e = data; e + 48 <= data + len; e += 48) {
        if (area[e] === 0) names.set(area[e + 1]!, text(e + 2, 46).replace(/\0.*$/s, ''));
      }
    }
    at = data + Math.ceil(len / 8) * 8;
  }

  const unknown = incompatible & ~INCOMPAT_KNOWN;
  if (unknown !== 0 || incompatHigh !== 0) {
    const bits = [...Array(64).keys()].filter((b) => (b < 32 ? unknown & (2 ** b) : incompatHigh & (2 ** (b - 32))));
    throw new Qcow2UnsupportedError(file, `incompatible feature ${bits.map((b) => names.get(b) ?? `bit ${b}`).join(', ')}`, 'unknown to this reader');
  }
  if (crypt !== 0 || cryptoExt) {
    throw new Qcow2UnsupportedError(file, `encryption (${crypt === 1 ? 'AES' : crypt === 2 ? 'LUKS' : `method ${crypt}`})`, 'decrypt it first: qemu-img convert --object secret,... -O qcow2');
  }
  if (incompatible & INCOMPAT_DATA_FILE || dataFile) {
    throw new Qcow2UnsupportedError(file, 'an external data file', 'the guest data lives in another file; import that raw file, or merge it in with qemu-img convert');
  }
  if (!opts.force) {
    if (incompatible & INCOMPAT_CORRUPT) throw new UncleanImageError(file, 'corrupt');
    if (incompatible & INCOMPAT_DIRTY) throw new UncleanImageError(file, 'dirty');
  }
  const extendedL2 = (incompatible & INCOMPAT_EXTL2) !== 0;
  if (extendedL2 && clusterBits < 14) throw new FormatError(file, `extended L2 entries need clusters of at least 16 KiB, not ${clusterSize} bytes`, 20);

  const l2Entries = clusterSize / (extendedL2 ? 16 : 8);
  const needL1 = Math.ceil(size / clusterSize / l2Entries);
  // qemu's own limit; it also bounds what a hostile header can make us allocate.
  if (l1Size > MAX_L1_ENTRIES) throw new FormatError(file, `L1 table of ${l1Size} entries is larger than qemu's limit of ${MAX_L1_ENTRIES} (32 MiB)`, 36);
  if (l1Size < needL1) throw new FormatError(file, `L1 table of ${l1Size} entries cannot map the virtual size ${size} (needs ${needL1})`, 36);
  if (l1Size > 0 && (l1Offset % clusterSize !== 0 || l1Offset === 0 || l1Offset + l1Size * 8 > src.size)) {
    throw new FormatError(file, `L1 table at ${l1Offset} (${l1Size} entries) is not cluster-aligned inside the file of ${src.size} bytes`, 40);
  }

  let backingFile: string | undefined;
  if (backingOffset !== 0) {
    if (backingSize === 0 || backingSize > 1023 || backingOffset + backingSize > src.size) {
      throw new FormatError(file, `backing file name of ${backingSize} bytes at ${backingOffset}, expected 1 to 1023 bytes inside the file`, 16);
    }
    backingFile = new TextDecoder().decode(await readAt(src, backingOffset, backingSize));
  }
  return {
    version,
    clusterBits,
    clusterSize,
    size,
    l1Size,
    l1Offset,
    incompatible,
    compression,
    extendedL2,
    ...(backingFile === undefined ? {} : { backingFile }),
    ...(backingFormat === undefined ? {} : { backingFormat }),
  };
}
