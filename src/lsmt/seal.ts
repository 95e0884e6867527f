/**
 * Sealing a writable layer in place, as the reference's close_seal (`overlaybd-commit --seal`,
 * docs/format.md §2.11): the live index is appended to the data file, then a sealed trailer,
 * so the data file itself becomes a read-only layer (garbage data included) that any LSMT
 * reader opens. The header keeps flags 3 (or 19 when sparse), as the reference leaves it.
 *
 * Crash safety: the index is written and synced before the trailer, and the trailer is one
 * block written after that sync. A crash before the trailer is durable leaves a data file
 * with bytes past its data that no entry points at: the pair still opens as a writable layer
 * (those bytes are never read) and sealing can be run again.
 */
import type { FileHandle } from 'node:fs/promises';
import { FormatError } from '../io/errors.ts';
import { IndexLog } from './index-log.ts';
import { SparseLog } from './sparse.ts';
import { WritableFiles } from './writable-files.ts';
import { writeFull } from '../io/sink.ts';
import { ENTRY_SIZE, FLAG_DATA, FLAG_SEALED, FLAG_SPARSE, HT_SPACE, HT_STRUCT_SIZE, SECTOR, encodeHeaderTrailer, parseHeaderTrailer, writeEntry, type HeaderTrailer } from './format.ts';
import { wrapWriteError } from './io-errors.ts';
import type { MappingTable } from './table.ts';

export interface SealStats {
  /** Live entries written into the trailer's index. */
  entries: number;
  /** Where the index starts in the data file (bytes). */
  indexOffset: number;
  /** Size of the sealed data file. */
  fileSize: number;
  virtualSize: number;
  uuid: string;
  parentUuid: string;
}

/**
 * Appends `table` (sorted, non-overlapping) at `dataEnd` (sector-aligned) of the data file and
 * a sealed trailer after it, copying identity and size from the data-file `header`.
 */
export async function sealDataFile(file: FileHandle, dataPath: string, header: HeaderTrailer, table: MappingTable, dataEnd: number): Promise<SealStats> {
  if (dataEnd % SECTOR !== 0 || dataEnd < HT_SPACE) throw new FormatError(dataPath, `data end ${dataEnd} is not a sector boundary past the header`);
  const n = table.count;
  // The reference writes whole sectors of index; the tail past n entries is zeros here.
  const indexBytes = Math.ceil((n * ENTRY_SIZE) / SECTOR) * SECTOR;
  const index = new Uint8Array(indexBytes);
  const dv = new DataView(index.buffer);
  for (let i = 0; i < n; i++) writeEntry(dv, i * ENTRY_SIZE, table.offset[i]!, table.length[i]!, table.moffset[i]!, table.zeroed[i] === 1, 0);
  const trailer: HeaderTrailer = {
    ...header,
    flags: FLAG_DATA | FLAG_SEALED | (header.flags & FLAG_SPARSE),
    indexOffset: dataEnd,
    indexSize: n,
    userTag: '',
  };
  const trailerAt = dataEnd + indexBytes;
  let step = 'writing the index';
  try {
    if (indexBytes > 0) await writeFull(file, index, dataEnd);
    await file.datasync();
    step = 'writing the trailer';
    await writeFull(file, encodeHeaderTrailer(trailer), trailerAt);
    await file.datasync();
  } catch (e) {
    throw wrapWriteError(dataPath, `sealing in place (${step})`, step === 'writing the index' ? dataEnd : trailerAt, e);
  }
  return {
    entries: n,
    indexOffset: dataEnd,
    fileSize: trailerAt + HT_SPACE,
    virtualSize: header.virtualSize,
    uuid: header.uuid,
    parentUuid: header.parentUuid,
  };
}

/**
 * Whether the last 4096 bytes of a data file (`tail`, read at `size − 4096`) are the trailer
 * sealing did: a sealed trailer naming this file's own uuid, whose index ends where it starts.
 * (A guest's last written block could carry LSMT magic; it cannot know the layer's uuid.)
 */
export function isSealedTrailer(tail: Uint8Array, file: string, size: number, header: HeaderTrailer): boolean {
  if (tail.length < HT_STRUCT_SIZE) return false;
  let t: HeaderTrailer;
  try {
    t = parseHeaderTrailer(tail, file, size - HT_SPACE);
  } catch {
    return false;
  }
  const sealed = (t.flags & 1) === 0 && (t.flags & FLAG_DATA) !== 0 && (t.flags & FLAG_SEALED) !== 0;
  const indexEnd = t.indexOffset + Math.ceil((t.indexSize * ENTRY_SIZE) / SECTOR) * SECTOR;
  return sealed && t.uuid.toUpperCase() === header.uuid.toUpperCase() && indexEnd === size - HT_SPACE;
}

/**
 * Seals the writable pair at dataPath/indexPath in place (taking its writer lock, so no
 * server is writing it): its data file becomes a sealed layer. The index file is left as it
 * is, as the reference leaves it.
 */
export async function sealLayer(dataPath: string, indexPath: string): Promise<SealStats> {
  const files = await WritableFiles.open(dataPath, indexPath);
  try {
    const log = files.sparse ? SparseLog.scan(files) : await IndexLog.recover(files, true);
    return await sealDataFile(files.data, dataPath, files.header, log.entries.toTable(), files.dataEnd);
  } finally {
    await files.close();
  }
}
