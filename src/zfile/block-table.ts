/**
 * The jump table turned into block positions. On disk it is N × u32 stored lengths; here each
 * block gets a u32 offset relative to a u64 base kept every GROUP blocks, so a lookup is two
 * typed-array reads and memory stays at ~8 bytes per block.
 */
import { ZFileFormatError } from './errors.ts';

const GROUP_SHIFT = 10;
const GROUP = 1 << GROUP_SHIFT;

export interface BlockTableLimits {
  /** Offset of block 0 (512 + dict_size). */
  start: number;
  /** Where the table says the blocks end (index_offset). */
  end: number;
  /** Smallest legal stored length (1 byte of codec output, plus the CRC when present). */
  minLength: number;
  maxLength: number;
}

export class BlockTable {
  readonly count: number;
  /** Stored length of each block (compressed bytes, plus 4 when blocks carry a CRC). */
  readonly lengths: Uint32Array;
  readonly #base: Float64Array;
  readonly #rel: Uint32Array;

  private constructor(lengths: Uint32Array, base: Float64Array, rel: Uint32Array) {
    this.count = lengths.length;
    this.lengths = lengths;
    this.#base = base;
    this.#rel = rel;
  }

  /**
   * Builds the table from the raw jump-table bytes (`tableAt` = their offset in `file`, for
   * messages). Every length must lie in [minLength, maxLength] and the blocks must end exactly
   * where the table starts.
   */
  static fromBytes(raw: Uint8Array, file: string, tableAt: number, lim: BlockTableLimits): BlockTable {
    const n = raw.length >>> 2;
    const dv = new DataView(raw.buffer, raw.byteOffset, raw.length);
    const lengths = new Uint32Array(n);
    const base = new Float64Array(Math.ceil(n / GROUP));
    const rel = new Uint32Array(n);
    let pos = lim.start;
    let groupBase = pos;
    for (let i = 0; i < n; i++) {
      if ((i & (GROUP - 1)) === 0) {
        groupBase = pos;
        base[i >>> GROUP_SHIFT] = pos;
      }
      const len = dv.getUint32(i * 4, true);
      if (len < lim.minLength || len > lim.maxLength) {
        throw new ZFileFormatError(file, 'block-length', `block ${i} has stored length ${len}, expected ${lim.minLength}..${lim.maxLength}`, tableAt + i * 4);
      }
      lengths[i] = len;
      rel[i] = pos - groupBase;
      pos += len;
    }
    if (pos !== lim.end) {
      throw new ZFileFormatError(file, 'index-sum', `blocks end at ${pos} but the jump table starts at ${lim.end}`, tableAt);
    }
    return new BlockTable(lengths, base, rel);
  }

  /** Offset in the compressed file of block `i` (0 ≤ i < count). */
  offset(i: number): number {
    return this.#base[i >>> GROUP_SHIFT]! + this.#rel[i]!;
  }

  /** Stored length of block `i`. */
  length(i: number): number {
    return this.lengths[i]!;
  }
}
