/**
 * Online compaction of a writable layer (docs/format.md §2.13): the live extents are copied
 * into a new data file in logical order, a new index file gets one entry per live mapping,
 * and the new pair replaces the old one (compact-swap.ts) while reads and writes go on.
 *
 * Data in the append-only data file is never rewritten, so a copied piece stays valid for as
 * long as any mapping points at it: every later mapping into the old file is a sub-range of a
 * mapping that was live when the piece was copied. Copies are therefore remembered by their
 * old file position (a translation table), and rounds repeat without holding writes: each
 * round copies what the live index points at that no earlier round copied (the writes that
 * arrived meanwhile). The last round runs under the device's write hold, so it copies only
 * what arrived during the previous round; then the new index is written, both files are
 * synced, the swap is committed, and the device switches to the new pair before the hold ends.
 */
import { rm, stat, type FileHandle } from 'node:fs/promises';
import { ShortReadError } from '../io/errors.ts';
import { preadFull } from '../io/fd-io.ts';
import { writeFull } from '../io/sink.ts';
import { finishSwap, swapPaths, writeSwapMarker } from './compact-swap.ts';
import { ENTRY_SIZE, HT_SPACE, SECTOR, writeEntry } from './format.ts';
import { IndexLog } from './index-log.ts';
import { wrapWriteError } from './io-errors.ts';
import type { Level0Index } from './level0.ts';
import type { MappingTable } from './table.ts';
import type { WritableFiles } from './writable-files.ts';

export interface CompactOptions {
  /** Called as live data is copied, with (bytes copied, live bytes known so far). */
  onProgress?: (done: number, total: number) => void;
}

export interface CompactResult {
  /** Data file size before (at the swap) and after, header included. */
  dataBytesBefore: number;
  dataBytesAfter: number;
  reclaimed: number;
  /** Live entries in the new index. */
  entries: number;
  /** Copy rounds run (the last one under the write hold). */
  rounds: number;
  /** How long writes were held (milliseconds). */
  holdMs: number;
}

/** What compaction needs of the device it compacts (writable.ts provides it). */
export interface CompactHost {
  /** The pair in use now and its live index (both change only inside `hold`). */
  files(): WritableFiles;
  entries(): Level0Index;
  /** Bytes of the data file known to be written (reads of mapped data stay below it). */
  dataFileBytes(): number;
  /** Runs `fn` once in-flight writes have finished and the log is flushed, with writes, trims and flushes held. */
  hold<T>(fn: () => Promise<T>): Promise<T>;
  /** Under the hold: start using `files` and `log`, appending data at `dataEnd`. */
  install(files: WritableFiles, log: IndexLog, dataEnd: number): Promise<void>;
  /** Under the hold, when the swap was committed but could not be finished: stop accepting writes. */
  fail(e: unknown): void;
}

/** Rounds without the hold, at most; the hold's round copies whatever is left. */
const MAX_FREE_ROUNDS = 4;
/** A round that copied less than this leaves little for the hold: go to it. */
const SMALL_ROUND = 4 << 20;
/** Bytes per read/write of the copy. */
const COPY_CHUNK = 4 << 20;

/** Old file position (sectors) → new file position, for every piece copied. */
class Translation {
  #old: number[] = [];
  #len: number[] = [];
  #new: number[] = [];
  #sorted: Int32Array = new Int32Array(0);

  add(oldM: number, len: number, newM: number): void {
    const k = this.#old.length - 1;
    // Pieces of one long mapping, copied chunk by chunk, become one translation.
    if (k >= 0 && this.#old[k]! + this.#len[k]! === oldM && this.#new[k]! + this.#len[k]! === newM) {
      this.#len[k]! += len;
      return;
    }
    this.#old.push(oldM);
    this.#len.push(len);
    this.#new.push(newM);
  }

  /** Call after a round's adds, before lookups. */
  seal(): void {
    const idx = Int32Array.from(this.#old.keys());
    idx.sort((a, b) => this.#old[a]! - this.#old[b]!);
    this.#sorted = idx;
  }

  /** New position of old sectors [m, m+len), or -1 when they were not copied (as one piece). */
  lookup(m: number, len: number): number {
    const s = this.#sorted;
    let lo = 0;
    let hi = s.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#old[s[mid]!]! <= m) lo = mid + 1;
      else hi = mid;
    }
    if (lo === 0) return -1;
    const k = s[lo - 1]!;
    const o = this.#old[k]!;
    return m + len <= o + this.#len[k]! ? this.#new[k]! + (m - o) : -1;
  }
}

/** Copies the data of `table`'s mappings that `tr` does not cover; returns the bytes copied. */
async function copyRound(
  table: MappingTable,
  tr: Translation,
  from: FileHandle,
  fromPath: string,
  to: FileHandle,
  toPath: string,
  cursor: { at: number },
  buf: Uint8Array,
  progress: () => void,
  done: { bytes: number },
): Promise<number> {
  let copied = 0;
  // A run of pieces contiguous in the old file, copied with one read and one write.
  let runOld = -1;
  let runLen = 0;
  const flushRun = async (): Promise<void> => {
    if (runLen === 0) return;
    const bytes = runLen * SECTOR;
    const view = buf.subarray(0, bytes);
    const n = await preadFull(from.fd, view, runOld * SECTOR);
    if (n !== bytes) throw new ShortReadError(fromPath, runOld * SECTOR, bytes, n);
    try {
      await writeFull(to, view, cursor.at);
    } catch (e) {
      throw wrapWriteError(toPath, 'compaction: copying live data', cursor.at, e);
    }
    tr.add(runOld, runLen, cursor.at / SECTOR);
    cursor.at += bytes;
    copied += bytes;
    done.bytes += bytes;
    progress();
    runLen = 0;
  };
  for (let i = 0; i < table.count; i++) {
    if (table.zeroed[i] === 1) continue;
    let m = table.moffset[i]!;
    let len = table.length[i]!;
    if (tr.lookup(m, len) >= 0) continue;
    while (len > 0) {
      if (runLen > 0 && (runOld + runLen !== m || runLen * SECTOR >= buf.length)) await flushRun();
      const take = Math.min(len, buf.length / SECTOR - runLen);
      if (runLen === 0) runOld = m;
      runLen += take;
      m += take;
      len -= take;
    }
  }
  await flushRun();
  tr.seal();
  return copied;
}

/** Compacts the device behind `host` (see the module comment). */
export async function compactWritable(host: CompactHost, opts: CompactOptions = {}): Promise<CompactResult> {
  const old = host.files();
  const paths = swapPaths(old.dataPath, old.indexPath);
  const created = await old.createSuccessorFiles(paths.newData, paths.newIndex);
  const { data: newData, index: newIndex } = created;
  let installed = false;
  const tr = new Translation();
  tr.seal();
  const cursor = { at: HT_SPACE };
  const done = { bytes: 0 };
  let total = 0;
  const progress = (): void => opts.onProgress?.(done.bytes, Math.max(total, done.bytes));
  const buf = new Uint8Array(COPY_CHUNK);
  try {
    let rounds = 0;
    for (;;) {
      const table = host.entries().toTable();
      total = done.bytes + untranslatedBytes(table, tr);
      rounds++;
      const copied = await copyRound(table, tr, old.data, old.dataPath, newData, paths.newData, cursor, buf, progress, done);
      if (copied < SMALL_ROUND || rounds >= MAX_FREE_ROUNDS) break;
    }
    let holdStart = 0;
    const result = await host.hold(async () => {
      holdStart = performance.now();
      const cur = host.files();
      const table = host.entries().toTable();
      total = done.bytes + untranslatedBytes(table, tr);
      rounds++;
      await copyRound(table, tr, cur.data, cur.dataPath, newData, paths.newData, cursor, buf, progress, done);
      const dataEnd = cursor.at;
      const index = encodeIndex(table, tr, dataEnd / SECTOR);
      try {
        await writeFull(newIndex, index, HT_SPACE);
        await newData.datasync();
        await newIndex.datasync();
      } catch (e) {
        throw wrapWriteError(paths.newIndex, 'compaction: writing the new index', HT_SPACE, e);
      }
      const before = host.dataFileBytes();
      await writeSwapMarker(paths);
      try {
        await finishSwap(paths);
        const files = cur.successor(newData, newIndex, dataEnd, HT_SPACE + index.length);
        const log = await IndexLog.recover(files, true);
        installed = true;
        await host.install(files, log, dataEnd);
      } catch (e) {
        // The marker says the new pair wins: writing on into the old one would lose those writes at the next open.
        host.fail(e);
        throw e;
      }
      return { dataBytesBefore: before, dataBytesAfter: dataEnd, reclaimed: Math.max(0, before - dataEnd), entries: table.count };
    });
    return { ...result, rounds, holdMs: performance.now() - holdStart };
  } finally {
    if (!installed) {
      await Promise.allSettled([newData.close(), newIndex.close()]);
      // Only when the swap never started: the files are an abandoned attempt.
      const marker = await stat(paths.marker).then(
        () => true,
        () => false,
      );
      if (!marker) await Promise.allSettled([rm(paths.newData, { force: true }), rm(paths.newIndex, { force: true })]);
    }
  }
}

function untranslatedBytes(table: MappingTable, tr: Translation): number {
  let n = 0;
  for (let i = 0; i < table.count; i++) if (table.zeroed[i] === 0 && tr.lookup(table.moffset[i]!, table.length[i]!) < 0) n += table.length[i]!;
  return n * SECTOR;
}

/** The new index: `table`'s mappings with data positions translated; zeroed ones point at the data end. */
function encodeIndex(table: MappingTable, tr: Translation, endSector: number): Uint8Array {
  const out = new Uint8Array(table.count * ENTRY_SIZE);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < table.count; i++) {
    const zeroed = table.zeroed[i] === 1;
    const m = zeroed ? endSector : tr.lookup(table.moffset[i]!, table.length[i]!);
    if (m < 0) throw new Error(`compaction: mapping at sector ${table.offset[i]} was not copied`);
    writeEntry(dv, i * ENTRY_SIZE, table.offset[i]!, table.length[i]!, m, zeroed, 0);
  }
  return out;
}
