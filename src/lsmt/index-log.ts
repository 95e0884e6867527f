/**
 * The index log of a writable layer (docs/format.md §2.4): the layer's current entries (the
 * level-0 index), the entries not yet in the index file, and the protocol that makes them
 * durable. The device (writable.ts) places data and decides entries; sealing and compaction
 * work on the log through `entries`, `append`, `flush` and what `recover` found.
 *
 * One entry moves through these states, only forward:
 *
 *   written ─append()─▶ pending ─flush: data sync─▶ covered ─index append─▶ logged ─index sync─▶ durable
 *
 *   written  the device's write of the entry's data completed and it called dataWritten()
 *            (a trim's zeroed entry has no data and starts at pending);
 *   pending  append() put it in `entries`, so reads see it, and in the pending buffer,
 *            encoded as in the file;
 *   covered  a flush that began while it was pending fdatasync'd the data file;
 *   logged   that flush wrote it to the index file after the last logged entry;
 *   durable  fdatasync of the index file completed: it survives a crash.
 *
 * So an entry in the file never points at data that could still be lost, and every write
 * completed before a flush() resolved survives a crash. Flushes run one at a time in call
 * order. flush() takes every pending entry to durable; the write-back started every
 * WRITEBACK_ENTRIES pending entries (to bound memory and replay work without waiting for the
 * caller) stops at logged and leaves the index sync to the next flush().
 *
 * Broken: when a data sync, an index append or an index sync fails, the log latches that
 * error in `broken` and throws it from every later flush; the device refuses writes with it.
 * After a failed fsync the kernel may have dropped the dirty pages, so a retry that succeeded
 * would promise durability for data that is gone. Entries already in `entries` stay readable.
 *
 * Recovery (`recover`): the index file is replayed in order into `entries` and the replay
 * stops at the first entry that is torn, has length 0, starts before the data area or points
 * past the end of the data file; a writer cuts the file there, so appends follow the last
 * good entry. Padding entries are skipped. `recovery` says what was dropped.
 */
import { FormatError, ShortReadError, type ObdError } from '../io/errors.ts';
import { SyncWriteGate } from '../io/fd-io.ts';
import { writeFull } from '../io/sink.ts';
import { ENTRY_SIZE, HT_SPACE, INVALID_OFFSET, MAX_RW_INDEX_ENTRIES, SECTOR, entryLength, entryMoffset, entryOffset, entryZeroed, writeEntry } from './format.ts';
import { wrapWriteError } from './io-errors.ts';
import { Level0Index, type EntryLog, type SortKeys } from './level0.ts';
import { sortKeyScale } from './sort-keys.ts';
import type { WritableFiles } from './writable-files.ts';

/** Pending entries that start a background write-back to the index file. */
const WRITEBACK_ENTRIES = 4096;
/** Index bytes read per step when replaying. */
const LOAD_CHUNK = 1 << 20;
const HEADER_SECTORS = HT_SPACE / SECTOR;

/** What reopening found at the end of the index log. */
export interface RecoveryReport {
  /** Whole entries in the index file before recovery (padding included). */
  entriesOnDisk: number;
  /** Entries dropped because they were torn or pointed past the end of the data file. */
  droppedEntries: number;
  /** Bytes cut from the end of the index file (dropped entries plus a partial entry). */
  droppedBytes: number;
}

/**
 * Appends the `count` entries in `dv` to `log` (and their sort keys to `sk`), skipping padding,
 * up to the first that recovery stops at (see Recovery above); returns the entries consumed,
 * padding included, the stopping one not. A synchronous function of its own rather than a
 * loop inside recover(): a commit's process optimizes this loop while it runs (OSR), and that
 * compile, of the whole async recover() around the loop, kept a compiler thread busy 11–32 ms
 * against 4–7 ms for this function (--trace-opt, 4–5 processes each).
 */
function decodeEntries(dv: DataView, count: number, log: EntryLog, sk: SortKeys, dataSectors: number, dataEndSector: number): number {
  const { keys, scale } = sk;
  let maxOffset = sk.maxOffset;
  let used = 0;
  for (; used < count; used++) {
    const at = used * ENTRY_SIZE;
    const hi0 = dv.getUint32(at + 4, true);
    const offset = entryOffset(dv.getUint32(at, true), hi0);
    if (offset === INVALID_OFFSET) continue;
    const length = entryLength(hi0);
    const hi1 = dv.getUint32(at + 12, true);
    const moffset = entryMoffset(dv.getUint32(at + 8, true), hi1);
    const zeroed = entryZeroed(hi1);
    if (length === 0 || moffset < HEADER_SECTORS || (zeroed ? moffset > dataEndSector : moffset + length > dataSectors)) break;
    const k = log.n++;
    keys[k] = offset * scale + k;
    if (offset > maxOffset) maxOffset = offset;
    log.offset[k] = offset;
    log.length[k] = length;
    log.moffset[k] = moffset;
    log.zeroed[k] = zeroed ? 1 : 0;
  }
  sk.maxOffset = maxOffset;
  return used;
}

export class IndexLog {
  /** The current entries, resolved: sorted, non-overlapping, later writes winning. */
  readonly entries: Level0Index;
  readonly recovery: RecoveryReport;
  readonly #files: WritableFiles;
  /** End of the logged entries in the index file (bytes). */
  #indexEnd: number;
  /** Pending entries, encoded as in the file. */
  #pending = new Uint8Array(256 * ENTRY_SIZE);
  #pendingDv = new DataView(this.#pending.buffer);
  #pendingCount = 0;
  #dataDirty = false;
  #indexDirty = false;
  #writebackQueued = false;
  #flushChain: Promise<void> = Promise.resolve();
  #broken: ObdError | undefined;
  /** Small appends (a flush after a few writes) skip the thread pool (see SyncWriteGate). */
  readonly #gate = new SyncWriteGate();

  private constructor(files: WritableFiles, entries: Level0Index, indexEnd: number, recovery: RecoveryReport) {
    this.#files = files;
    this.entries = entries;
    this.#indexEnd = indexEnd;
    this.recovery = recovery;
  }

  /** The log of a new, empty index file. */
  static empty(files: WritableFiles): IndexLog {
    return new IndexLog(files, new Level0Index(), HT_SPACE, { entriesOnDisk: 0, droppedEntries: 0, droppedBytes: 0 });
  }

  /** The log of an index file just written and synced with exactly `entries` (a compaction's). */
  static written(files: WritableFiles, entries: Level0Index, count: number): IndexLog {
    return new IndexLog(files, entries, HT_SPACE + count * ENTRY_SIZE, { entriesOnDisk: count, droppedEntries: 0, droppedBytes: 0 });
  }

  /** Replays the index file (see Recovery above); `writable` cuts a torn or dangling tail. */
  static async recover(files: WritableFiles, writable: boolean): Promise<IndexLog> {
    const { index, indexPath, dataSize, indexSize } = files;
    const total = Math.floor(Math.max(0, indexSize - HT_SPACE) / ENTRY_SIZE);
    if (total > MAX_RW_INDEX_ENTRIES) {
      throw new FormatError(indexPath, `${total} index entries exceed the limit of ${MAX_RW_INDEX_ENTRIES}`);
    }
    const dataSectors = Math.floor(dataSize / SECTOR);
    const dataEndSector = Math.ceil(dataSize / SECTOR);
    // Collected first and resolved in one sweep (Level0Index.fromLog), as replaying would insert them.
    const log: EntryLog = { n: 0, offset: new Float64Array(total), length: new Uint32Array(total), moffset: new Float64Array(total), zeroed: new Uint8Array(total) };
    // The sort keys fromLog needs, packed here rather than in two more passes over the log.
    const sortKeys: SortKeys = { keys: new Float64Array(total), scale: sortKeyScale(total), maxOffset: 0 };
    let valid = 0;
    const buf = new Uint8Array(LOAD_CHUNK);
    const dv = new DataView(buf.buffer);
    for (let first = 0; first < total; ) {
      const n = Math.min(total - first, LOAD_CHUNK / ENTRY_SIZE);
      const want = n * ENTRY_SIZE;
      const { bytesRead } = await index.read(buf, 0, want, HT_SPACE + first * ENTRY_SIZE);
      if (bytesRead !== want) throw new ShortReadError(indexPath, HT_SPACE + first * ENTRY_SIZE, want, bytesRead);
      const used = decodeEntries(dv, n, log, sortKeys, dataSectors, dataEndSector);
      valid += used;
      if (used < n) break;
      first += n;
    }
    const indexEnd = HT_SPACE + valid * ENTRY_SIZE;
    const recovery: RecoveryReport = { entriesOnDisk: total, droppedEntries: total - valid, droppedBytes: Math.max(0, indexSize - indexEnd) };
    if (writable && indexSize !== indexEnd) {
      try {
        await index.truncate(indexEnd);
        await index.datasync();
      } catch (e) {
        throw wrapWriteError(indexPath, 'cutting a torn index tail', indexEnd, e);
      }
    }
    log.sortKeys = sortKeys;
    return new IndexLog(files, Level0Index.fromLog(log), indexEnd, recovery);
  }

  /** Entries not yet in the index file. */
  get pendingCount(): number {
    return this.#pendingCount;
  }

  /** The error that stopped the log, if one did. */
  get broken(): ObdError | undefined {
    return this.#broken;
  }

  /** The device has written data to the data file: the next flush syncs it. */
  dataWritten(): void {
    this.#dataDirty = true;
  }

  /** Adds an entry (sectors) whose data has been written, or a zeroed one. */
  append(offset: number, length: number, moffset: number, zeroed: boolean): void {
    this.entries.insert(offset, length, moffset, zeroed);
    if ((this.#pendingCount + 1) * ENTRY_SIZE > this.#pending.length) {
      const bigger = new Uint8Array(this.#pending.length * 2);
      bigger.set(this.#pending.subarray(0, this.#pendingCount * ENTRY_SIZE));
      this.#pending = bigger;
      this.#pendingDv = new DataView(bigger.buffer);
    }
    // Tag 0: readers reset tags on load anyway (docs/format.md §2.2).
    writeEntry(this.#pendingDv, this.#pendingCount++ * ENTRY_SIZE, offset, length, moffset, zeroed, 0);
    if (this.#pendingCount >= WRITEBACK_ENTRIES && !this.#writebackQueued) {
      this.#writebackQueued = true;
      this.#enqueue(false)
        .catch(() => {})
        .finally(() => (this.#writebackQueued = false));
    }
  }

  /** Makes every entry appended so far durable (after the flushes queued before it). */
  flush(): Promise<void> {
    return this.#enqueue(true);
  }

  #enqueue(syncIndex: boolean): Promise<void> {
    const p = this.#flushChain.then(() => this.#flush(syncIndex));
    this.#flushChain = p.catch(() => {});
    return p;
  }

  async #flush(syncIndex: boolean): Promise<void> {
    if (this.#broken) throw this.#broken;
    // Only entries pending before the data sync starts are covered by it.
    const n = this.#pendingCount;
    const f = this.#files;
    let step = 'syncing data';
    try {
      if (this.#dataDirty) {
        this.#dataDirty = false;
        await f.data.datasync();
      }
      if (n > 0) {
        step = 'appending index entries';
        const bytes = this.#pending.subarray(0, n * ENTRY_SIZE);
        if (!this.#gate.write(f.index.fd, bytes, this.#indexEnd)) await writeFull(f.index, bytes, this.#indexEnd);
        this.#indexEnd += n * ENTRY_SIZE;
        this.#pending.copyWithin(0, n * ENTRY_SIZE, this.#pendingCount * ENTRY_SIZE);
        this.#pendingCount -= n;
        this.#indexDirty = true;
      }
      if (syncIndex && this.#indexDirty) {
        step = 'syncing the index';
        this.#indexDirty = false;
        await f.index.datasync();
      }
    } catch (e) {
      this.#broken = wrapWriteError(step === 'syncing data' ? f.dataPath : f.indexPath, `${step} (the layer accepts no more writes)`, undefined, e);
      throw this.#broken;
    }
  }
}
