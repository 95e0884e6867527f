/**
 * Online compaction of a writable layer (docs/format.md §2.13): the live extents are copied
 * into a new data file in logical order, a new index file gets one entry per live mapping,
 * and the new pair replaces the old one (compact-swap.ts) while reads and writes go on.
 *
 * Data in the append-only data file is never rewritten, so a copied piece stays valid for as
 * long as any mapping points at it: every later mapping into the old file is a sub-range of a
 * mapping that was live when the piece was copied. Copies are therefore remembered by their
 * old file position (a translation table), and rounds repeat without holding writes: each
 * round snapshots the live index, starts a journal of the entries appended from then on, and
 * copies what the snapshot maps that no earlier round copied. When a round's journal is small,
 * the last snapshot (translated) is written as the new index and synced; then, under the
 * device's write hold, only the journal is left: its data is copied, its entries are appended
 * to the new index in order (the index file is a log, so they override the snapshot as they
 * did in the old one), both files are synced, the swap is committed, and the device switches
 * to the new pair before the hold ends. The hold costs the writes of one round, not the index.
 */
import { rm, stat, type FileHandle } from 'node:fs/promises';
import { ObdError, ShortReadError } from '../io/errors.ts';
import { SyncReadGate, preadFull } from '../io/fd-io.ts';
import { settleAll } from '../io/util.ts';
import { writeFull } from '../io/sink.ts';
import { finishSwap, swapPaths, writeSwapMarker } from './compact-swap.ts';
import { ENTRY_SIZE, HT_SPACE, SECTOR, writeEntry } from './format.ts';
import { IndexLog } from './index-log.ts';
import { wrapWriteError } from './io-errors.ts';
import { Level0Index } from './level0.ts';
import { MappingTable } from './table.ts';
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
  /** The pair in use now (it changes only inside `hold`). */
  files(): WritableFiles;
  /**
   * The live index now, and a journal of every entry appended from now on, as flat
   * (offset, length, moffset, zeroed 0/1) quadruples in append order; a new snapshot starts a
   * new journal.
   */
  snapshot(): { table: MappingTable; journal: number[] };
  /** Ends journaling; returns the current journal (empty if none). */
  stopJournal(): number[];
  /** Bytes of the data file known to be written (reads of mapped data stay below it). */
  dataFileBytes(): number;
  /** Requests (reads, writes, trims, flushes) the device has served so far: while it is busy, copying yields half the time. */
  requests(): number;
  /** Runs `fn` once in-flight writes have finished and the log is flushed, with writes, trims and flushes held. */
  hold<T>(fn: () => Promise<T>): Promise<T>;
  /** Under the hold: start using `files` and `log`, appending data at `dataEnd`. */
  install(files: WritableFiles, log: IndexLog, dataEnd: number): Promise<void>;
  /** Under the hold, when the swap was committed but could not be finished: stop accepting writes. */
  fail(e: unknown): void;
}

/** Rounds without the hold, at most; the hold's round copies whatever is left. */
const MAX_FREE_ROUNDS = 16;
/** Less than this left to copy: take the hold (its round copies it). */
const SMALL_ROUND = 1 << 20;
/** Bytes copied per batch (one write; the event loop gets a turn between batches). */
const COPY_BATCH = 1 << 20;

/** Old file position (sectors) → new file position, for every piece copied. */
class Translation {
  #old: number[] = [];
  #len: number[] = [];
  #new: number[] = [];
  // Sorted by old position, as typed arrays (lookups are the hot loop of the hold).
  #sOld = new Float64Array(0);
  #sLen = new Float64Array(0);
  #sNew = new Float64Array(0);

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
    const n = this.#old.length;
    const idx = Int32Array.from(this.#old.keys());
    idx.sort((a, b) => this.#old[a]! - this.#old[b]!);
    this.#sOld = new Float64Array(n);
    this.#sLen = new Float64Array(n);
    this.#sNew = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const k = idx[i]!;
      this.#sOld[i] = this.#old[k]!;
      this.#sLen[i] = this.#len[k]!;
      this.#sNew[i] = this.#new[k]!;
    }
  }

  /** New position of old sectors [m, m+len), or -1 when they were not copied (as one piece). */
  lookup(m: number, len: number): number {
    const o = this.#sOld;
    let lo = 0;
    let hi = o.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (o[mid]! <= m) lo = mid + 1;
      else hi = mid;
    }
    if (lo === 0) return -1;
    const k = lo - 1;
    return m + len <= o[k]! + this.#sLen[k]! ? this.#sNew[k]! + (m - o[k]!) : -1;
  }
}

/** Copy state shared by the rounds of one compaction. */
interface Copier {
  tr: Translation;
  to: FileHandle;
  toPath: string;
  /** Write position in the new data file (bytes). */
  at: number;
  buf: Uint8Array;
  gate: SyncReadGate;
  done: number;
  progress: () => void;
  requests: () => number;
}

const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Copies the data of `table`'s mappings that the translation does not cover, a batch at a
 * time: the batch's pieces are read (synchronously while the file is in the page cache,
 * joined where contiguous), written with one write, then the event loop gets a turn so the
 * device's own I/O is not starved. Returns the bytes copied.
 */
async function copyRound(c: Copier, table: MappingTable, from: FileHandle, fromPath: string): Promise<number> {
  let copied = 0;
  const cap = c.buf.length / SECTOR;
  // The batch: pieces as (old sector, sectors, buffer sector), joined when contiguous in the old file.
  const pOld: number[] = [];
  const pLen: number[] = [];
  const pAt: number[] = [];
  let used = 0;
  let t0 = performance.now();
  let seen = c.requests();
  const flushBatch = async (): Promise<void> => {
    if (used === 0) return;
    const jobs: Promise<void>[] = [];
    for (let k = 0; k < pOld.length; k++) {
      const view = c.buf.subarray(pAt[k]! * SECTOR, (pAt[k]! + pLen[k]!) * SECTOR);
      const pos = pOld[k]! * SECTOR;
      const n = c.gate.read(from.fd, view, pos);
      if (n === undefined) {
        jobs.push(
          preadFull(from.fd, view, pos).then((got) => {
            if (got !== view.length) throw new ShortReadError(fromPath, pos, view.length, got);
          }),
        );
      } else if (n !== view.length) throw new ShortReadError(fromPath, pos, view.length, n);
    }
    await settleAll(jobs);
    const bytes = used * SECTOR;
    try {
      await writeFull(c.to, c.buf.subarray(0, bytes), c.at);
    } catch (e) {
      throw wrapWriteError(c.toPath, 'compaction: copying live data', c.at, e);
    }
    for (let k = 0; k < pOld.length; k++) c.tr.add(pOld[k]!, pLen[k]!, c.at / SECTOR + pAt[k]!);
    c.at += bytes;
    copied += bytes;
    c.done += bytes;
    c.progress();
    pOld.length = pLen.length = pAt.length = 0;
    used = 0;
    // Requests came in while this batch was copied: give them as much time as the batch took.
    const now = c.requests();
    if (now !== seen) await sleep(Math.min(50, performance.now() - t0));
    else await yieldToLoop();
    seen = c.requests();
    t0 = performance.now();
  };
  for (let i = 0; i < table.count; i++) {
    if (table.zeroed[i] === 1) continue;
    let m = table.moffset[i]!;
    let len = table.length[i]!;
    if (c.tr.lookup(m, len) >= 0) continue;
    while (len > 0) {
      if (used === cap) await flushBatch();
      const take = Math.min(len, cap - used);
      const k = pOld.length - 1;
      if (k >= 0 && pOld[k]! + pLen[k]! === m) pLen[k]! += take;
      else {
        pOld.push(m);
        pLen.push(take);
        pAt.push(used);
      }
      used += take;
      m += take;
      len -= take;
    }
  }
  await flushBatch();
  c.tr.seal();
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
  let total = 0;
  const c: Copier = {
    tr,
    to: newData,
    toPath: paths.newData,
    at: HT_SPACE,
    buf: new Uint8Array(COPY_BATCH),
    gate: new SyncReadGate(),
    done: 0,
    progress: () => opts.onProgress?.(c.done, Math.max(total, c.done)),
    requests: () => host.requests(),
  };
  try {
    // Rounds: each copies what its snapshot maps that no earlier round copied, and the
    // journal of entries appended since the snapshot says what arrived meanwhile.
    let snap = host.snapshot();
    total = untranslatedBytes(snap.table, tr);
    let rounds = 1;
    await copyRound(c, snap.table, old.data, old.dataPath);
    while (rounds < MAX_FREE_ROUNDS && journalDataBytes(snap.journal) >= SMALL_ROUND) {
      snap = host.snapshot();
      total = c.done + untranslatedBytes(snap.table, tr);
      rounds++;
      await copyRound(c, snap.table, old.data, old.dataPath);
    }
    // The new index starts as the last snapshot, written and synced before the hold.
    const base = snap.table;
    const entries = new Level0Index();
    const baseIndex = encodeIndex(base, tr, c.at / SECTOR, entries);
    try {
      await writeFull(newIndex, baseIndex, HT_SPACE);
      await newData.datasync();
      await newIndex.datasync();
    } catch (e) {
      throw wrapWriteError(paths.newIndex, 'compaction: writing the new index', HT_SPACE, e);
    }
    let holdStart = 0;
    const result = await host.hold(async () => {
      holdStart = performance.now();
      // Under the hold only the journal is left: the entries appended since the snapshot, in order.
      const journal = host.stopJournal();
      const cur = host.files();
      const n = journal.length / 4;
      const fresh = new MappingTable(Math.max(1, n));
      for (let k = 0; k < journal.length; k += 4) if (journal[k + 3] === 0) fresh.push(journal[k]!, journal[k + 1]!, journal[k + 2]!, false, 0);
      rounds++;
      await copyRound(c, fresh, cur.data, cur.dataPath);
      const dataEnd = c.at;
      const tail = encodeJournal(journal, tr, dataEnd / SECTOR, entries);
      try {
        await writeFull(newIndex, tail, HT_SPACE + baseIndex.length);
        await newData.datasync();
        await newIndex.datasync();
      } catch (e) {
        throw wrapWriteError(paths.newIndex, 'compaction: writing the new index', HT_SPACE + baseIndex.length, e);
      }
      const before = host.dataFileBytes();
      await writeSwapMarker(paths);
      try {
        await finishSwap(paths);
        const files = cur.successor(newData, newIndex, dataEnd, HT_SPACE + baseIndex.length + tail.length);
        const log = IndexLog.written(files, entries, base.count + n);
        installed = true;
        await host.install(files, log, dataEnd);
      } catch (e) {
        // The marker says the new pair wins: writing on into the old one would lose those writes at the next open.
        host.fail(e);
        throw e;
      }
      return { dataBytesBefore: before, dataBytesAfter: dataEnd, reclaimed: Math.max(0, before - dataEnd), entries: entries.count };
    });
    return { ...result, rounds, holdMs: performance.now() - holdStart };
  } finally {
    host.stopJournal();
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

/** Data bytes the journal's entries point at. */
function journalDataBytes(journal: readonly number[]): number {
  let n = 0;
  for (let k = 0; k < journal.length; k += 4) if (journal[k + 3] === 0) n += journal[k + 1]!;
  return n * SECTOR;
}

/** The journal's entries, translated, as index-file entries in order, replayed into `into` too. */
function encodeJournal(journal: readonly number[], tr: Translation, endSector: number, into: Level0Index): Uint8Array {
  const out = new Uint8Array((journal.length / 4) * ENTRY_SIZE);
  const dv = new DataView(out.buffer);
  for (let k = 0, i = 0; k < journal.length; k += 4, i++) {
    const zeroed = journal[k + 3] === 1;
    const m = zeroed ? endSector : tr.lookup(journal[k + 2]!, journal[k + 1]!);
    if (m < 0) throw new ObdError(`compaction: journal entry at sector ${journal[k]} was not copied`);
    writeEntry(dv, i * ENTRY_SIZE, journal[k]!, journal[k + 1]!, m, zeroed, 0);
    into.insert(journal[k]!, journal[k + 1]!, m, zeroed);
  }
  return out;
}

function untranslatedBytes(table: MappingTable, tr: Translation): number {
  let n = 0;
  for (let i = 0; i < table.count; i++) if (table.zeroed[i] === 0 && tr.lookup(table.moffset[i]!, table.length[i]!) < 0) n += table.length[i]!;
  return n * SECTOR;
}

/** The new index (and its level-0 copy in `into`): `table`'s mappings with data positions translated; zeroed ones point at the data end. */
function encodeIndex(table: MappingTable, tr: Translation, endSector: number, into: Level0Index): Uint8Array {
  const out = new Uint8Array(table.count * ENTRY_SIZE);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < table.count; i++) {
    const zeroed = table.zeroed[i] === 1;
    const m = zeroed ? endSector : tr.lookup(table.moffset[i]!, table.length[i]!);
    if (m < 0) throw new ObdError(`compaction: mapping at sector ${table.offset[i]} was not copied`);
    writeEntry(dv, i * ENTRY_SIZE, table.offset[i]!, table.length[i]!, m, zeroed, 0);
    // Sorted and apart already: each insert appends.
    into.insert(table.offset[i]!, table.length[i]!, m, zeroed);
  }
  return out;
}
