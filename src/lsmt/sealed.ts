/**
 * Opening a sealed (committed) LSMT layer: header and trailer validation, index loading
 * (docs/format.md §2.3). The result is a parsed layer; reading goes
 * through a Stack (a single layer is a stack of one).
 */
import { FormatError } from '../io/errors.ts';
import type { ByteSource } from '../io/types.ts';
import { readAt } from '../io/util.ts';
import { runSliced, runSync, STEP, type Steps } from '../io/slice.ts';
import {
  ENTRY_SIZE,
  FLAG_DATA,
  FLAG_HEADER,
  FLAG_SEALED,
  HT_SPACE,
  HT_STRUCT_SIZE,
  INVALID_OFFSET,
  MAX_RO_INDEX_ENTRIES,
  SECTOR,
  checkVirtualSize,
  entryLength,
  entryMoffset,
  entryOffset,
  entryZeroed,
  parseHeaderTrailer,
  type HeaderTrailer,
} from './format.ts';
import type { Layer } from './layer.ts';
import { MappingTable } from './table.ts';

/** An LSMT sealed layer: a Layer plus the header and trailer it was read from. */
export interface SealedLayer extends Layer {
  readonly header: HeaderTrailer;
  readonly trailer: HeaderTrailer;
  /** Entries on disk including padding. */
  readonly indexEntriesOnDisk: number;
}

/** Parses and validates a sealed layer read from `src`. Fails with a FormatError naming the check. */
export async function openSealedLayer(src: ByteSource): Promise<SealedLayer> {
  const file = src.name;
  if (src.size < HT_STRUCT_SIZE) throw new FormatError(file, `too small for an LSMT layer: ${src.size} bytes`);
  const header = parseHeaderTrailer(await readAt(src, 0, HT_STRUCT_SIZE), file, 0);
  if (!(header.flags & FLAG_HEADER)) throw new FormatError(file, `header flags ${header.flags}: is-header bit (1) not set`, 28);
  if (!(header.flags & FLAG_DATA)) {
    throw new FormatError(file, `header flags ${header.flags}: data-file bit (2) not set — this is a writable layer's index file, not a sealed layer`, 28);
  }
  if (src.size < 2 * HT_SPACE) {
    throw new FormatError(file, `too small for a sealed LSMT layer: ${src.size} bytes, a header and a trailer need ${2 * HT_SPACE}`);
  }
  const trailerAt = src.size - HT_SPACE;
  let trailer: HeaderTrailer;
  try {
    trailer = parseHeaderTrailer(await readAt(src, trailerAt, HT_STRUCT_SIZE), file, trailerAt);
  } catch (e) {
    if (e instanceof FormatError && !(header.flags & FLAG_SEALED)) {
      throw new FormatError(file, 'no LSMT trailer: this looks like the data file of an unsealed writable layer (commit it first)', trailerAt, { cause: e });
    }
    throw e;
  }
  const tf = trailer.flags;
  if (tf & FLAG_HEADER) throw new FormatError(file, `trailer flags ${tf}: is-header bit set, expected a trailer`, trailerAt + 28);
  if (!(tf & FLAG_DATA)) throw new FormatError(file, `trailer flags ${tf}: data-file bit (2) not set`, trailerAt + 28);
  if (!(tf & FLAG_SEALED)) throw new FormatError(file, `trailer flags ${tf}: sealed bit (4) not set`, trailerAt + 28);
  if (trailer.indexSize > MAX_RO_INDEX_ENTRIES) {
    throw new FormatError(file, `trailer index_size ${trailer.indexSize} exceeds the limit of ${MAX_RO_INDEX_ENTRIES} entries`, trailerAt + 40);
  }
  if (trailer.indexOffset < HT_SPACE || trailer.indexOffset % SECTOR !== 0) {
    throw new FormatError(file, `trailer index_offset ${trailer.indexOffset} must be a multiple of 512 and at least ${HT_SPACE}`, trailerAt + 32);
  }
  const indexBytes = trailer.indexSize * ENTRY_SIZE;
  if (trailer.indexOffset + indexBytes > trailerAt) {
    throw new FormatError(file, `index [${trailer.indexOffset}, +${indexBytes}) runs past the trailer at ${trailerAt}`, trailerAt + 32);
  }
  // In slices: a live snapshot opens its committed layer on the thread that serves I/O.
  const index = await runSliced(decodeSteps(await readAt(src, trailer.indexOffset, indexBytes), file, trailer.indexOffset, trailer.indexOffset / SECTOR));
  checkVirtualSize(trailer.virtualSize, tableEnd(index) * SECTOR, file, trailerAt + 48, true);
  return {
    source: src,
    header,
    trailer,
    index,
    indexEntriesOnDisk: trailer.indexSize,
    virtualSize: trailer.virtualSize,
    uuid: trailer.uuid,
    parentUuid: header.parentUuid,
    description: header.userTag,
  };
}

/**
 * Decodes a sealed index: drops padding, resets tags, and checks order and that every
 * entry's data lies in [sector 8, dataEnd). Reads each entry's words in place and decodes
 * them with format.ts's field functions (no Mapping object per entry).
 */
export function decodeSealedIndex(bytes: Uint8Array, file: string, fileOffset: number, dataEndSector: number): MappingTable {
  return runSync(decodeSteps(bytes, file, fileOffset, dataEndSector));
}

function* decodeSteps(bytes: Uint8Array, file: string, fileOffset: number, dataEndSector: number): Steps<MappingTable> {
  const n = bytes.length / ENTRY_SIZE;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const t = new MappingTable(Math.max(1, n));
  let prevEnd = 0;
  for (let i = 0; i < n; i++) {
    if (i % STEP === STEP - 1) yield;
    const at = i * ENTRY_SIZE;
    const hi0 = dv.getUint32(at + 4, true);
    const offset = entryOffset(dv.getUint32(at, true), hi0);
    if (offset === INVALID_OFFSET) continue;
    const length = entryLength(hi0);
    if (length === 0) continue;
    const hi1 = dv.getUint32(at + 12, true);
    const moffset = entryMoffset(dv.getUint32(at + 8, true), hi1);
    const zeroed = entryZeroed(hi1);
    const where = fileOffset + at;
    if (offset < prevEnd) {
      throw new FormatError(file, `index entry ${i} (offset ${offset}, length ${length} sectors) overlaps or precedes the previous entry ending at ${prevEnd}: index not sorted`, where);
    }
    if (moffset < HT_SPACE / SECTOR || (zeroed ? moffset > dataEndSector : moffset + length > dataEndSector)) {
      throw new FormatError(
        file,
        `index entry ${i} points at sectors [${moffset}, ${moffset + (zeroed ? 0 : length)}) outside the data area [8, ${dataEndSector})`,
        where,
      );
    }
    prevEnd = offset + length;
    t.push(offset, length, moffset, zeroed, 0);
  }
  return t;
}

/** End of the last mapping of a sorted table (sectors; 0 when empty). */
export function tableEnd(t: MappingTable): number {
  return t.count > 0 ? t.offset[t.count - 1]! + t.length[t.count - 1]! : 0;
}
