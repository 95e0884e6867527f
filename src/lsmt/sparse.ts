/**
 * The log of a sparse writable layer (docs/format.md §2.12, `overlaybd-create -s`): there is
 * none on disk. Sector x lives at byte 4096 + 512·x of the data file, so the file's data
 * extents are the mappings; opening rebuilds them with SEEK_DATA / SEEK_HOLE, as the
 * reference does, and the index file is ignored. It offers the surface of IndexLog that the
 * device uses (entries, append, flush, broken), so writable.ts treats both alike.
 *
 * Durability: a flush fsyncs the data file (data and the holes punched by trims). A write
 * not yet flushed may survive a crash in part, whole filesystem blocks at a time — which is
 * why the device writes whole 4 KiB blocks into a sparse layer (see writable.ts).
 */
import type { ObdError } from '../io/errors.ts';
import { dataExtents } from '../io/holes.ts';
import { HT_SPACE, MAX_ENTRY_SECTORS, SECTOR } from './format.ts';
import type { RecoveryReport } from './index-log.ts';
import { wrapWriteError } from './io-errors.ts';
import { Level0Index } from './level0.ts';
import type { WritableFiles } from './writable-files.ts';

/** The block a sparse layer is written in: a filesystem block, so every allocated block holds the bytes reads saw. */
export const SPARSE_BLOCK = 4096;

export class SparseLog {
  readonly entries: Level0Index;
  readonly recovery: RecoveryReport = { entriesOnDisk: 0, droppedEntries: 0, droppedBytes: 0 };
  readonly #files: WritableFiles;
  #dirty = false;
  #chain: Promise<void> = Promise.resolve();
  #broken: ObdError | undefined;

  private constructor(files: WritableFiles, entries: Level0Index) {
    this.#files = files;
    this.entries = entries;
  }

  /** A new sparse layer: no data yet. */
  static empty(files: WritableFiles): SparseLog {
    return new SparseLog(files, new Level0Index());
  }

  /** The mappings of an existing sparse data file: one per data extent past the header, cut at the entry length limit. */
  static scan(files: WritableFiles): SparseLog {
    const l0 = new Level0Index();
    // Past the virtual size nothing can be read: a longer file is not this layer's data.
    const endSector = (HT_SPACE + files.header.virtualSize) / SECTOR;
    for (const [b, e] of dataExtents(files.data.fd, files.dataPath, HT_SPACE)) {
      const first = Math.floor(b / SECTOR);
      const last = Math.min(Math.ceil(e / SECTOR), endSector);
      for (let m = first; m < last; m += MAX_ENTRY_SECTORS) l0.insert(m - HT_SPACE / SECTOR, Math.min(MAX_ENTRY_SECTORS, last - m), m, false);
    }
    return new SparseLog(files, l0);
  }

  get pendingCount(): number {
    return 0;
  }

  get broken(): ObdError | undefined {
    return this.#broken;
  }

  /** Data was written or a hole punched: the next flush syncs the file. */
  dataWritten(): void {
    this.#dirty = true;
  }

  append(offset: number, length: number, moffset: number, zeroed: boolean): void {
    this.entries.insert(offset, length, moffset, zeroed);
  }

  flush(): Promise<void> {
    const p = this.#chain.then(() => this.#flush());
    this.#chain = p.catch(() => {});
    return p;
  }

  async #flush(): Promise<void> {
    if (this.#broken) throw this.#broken;
    if (!this.#dirty) return;
    this.#dirty = false;
    try {
      // fsync, not fdatasync: punched holes are metadata a read depends on.
      await this.#files.data.sync();
    } catch (e) {
      this.#broken = wrapWriteError(this.#files.dataPath, 'syncing data (the layer accepts no more writes)', undefined, e);
      throw this.#broken;
    }
  }
}
