/**
 * An append-only writable LSMT layer as a block device (docs/format.md §2.4): reads, writes,
 * trims and extents over its current entries, optionally on top of a read-only device whose
 * bytes show through wherever this layer has no mapping. A write appends its data to the
 * data file, then hands the entry to the index log (index-log.ts: when entries become durable,
 * and why a failed flush stops writes); writable-files.ts creates, opens and locks the files.
 */
import type { FileHandle } from 'node:fs/promises';
import { ChainError, ClosedError, InvalidArgumentError, ReadOnlyError, ShortReadError, type ObdError } from '../io/errors.ts';
import { compactWritable, type CompactOptions, type CompactResult } from './compact.ts';
import { checkRange, failAfter, settleAll } from '../io/util.ts';
import type { BlockDevice, ByteSource, DeviceCapabilities, Extent } from '../io/types.ts';
import { declareCapabilities } from '../io/capabilities.ts';
import { HT_SPACE, MAX_ENTRY_SECTORS, SECTOR, isNullUuid, checkVirtualSize, MAX_VIRTUAL_SIZE, type HeaderTrailer } from './format.ts';
import { SyncReadGate, SyncWriteGate, preadFull, pwriteFull } from '../io/fd-io.ts';
import { IndexLog, type RecoveryReport } from './index-log.ts';
import { punchHole } from '../io/holes.ts';
import { SPARSE_BLOCK, SparseLog } from './sparse.ts';
import { wrapWriteError } from './io-errors.ts';
import type { Level0Index } from './level0.ts';
import { RangeLocks } from './range-lock.ts';
import type { Steps } from '../io/slice.ts';
import type { MappingTable } from './table.ts';
import { WritableFiles } from './writable-files.ts';

export type { RecoveryReport, CompactOptions, CompactResult };

/** Longest data piece one entry gets, as the reference splits writes (4 MiB). */
export const MAX_IO_SECTORS = (4 << 20) / SECTOR;

export interface WritableCreateOptions {
  /** Virtual size in bytes, a multiple of 512; 0 takes the lower device's size. */
  virtualSize: number;
  /** Default: a new random uuid, as overlaybd-create does. */
  uuid?: string;
  parentUuid?: string;
  lower?: BlockDevice;
  /** Closing the layer closes `lower` too (default true). */
  ownsLower?: boolean;
  /** Replace existing files (default: refuse, as overlaybd-create does). */
  overwrite?: boolean;
  /** A sparse layer, as overlaybd-create -s (docs/format.md §2.12). */
  sparse?: boolean;
}

export interface WritableOpenOptions {
  lower?: BlockDevice;
  ownsLower?: boolean;
  readOnly?: boolean;
  /** Read-only: open even while another process has the layer open for writing (inspection). */
  allowWriter?: boolean;
  /** Require this layer's parent uuid to be the uuid of the lower stack's top layer. */
  verifyParent?: boolean;
}

export interface WritableStats {
  /** Live mappings in the level-0 index. */
  entries: number;
  /** Bytes of data the live mappings point at. */
  liveDataBytes: number;
  /** Size of the data file, header included. */
  dataFileBytes: number;
  /** Entries written since the last flush (not yet in the index file). */
  pendingEntries: number;
}

export class WritableLayer implements BlockDevice {
  readonly name: string;
  readonly dataPath: string;
  readonly indexPath: string;
  readonly layerCount: number;
  readonly writable: boolean;
  readonly capabilities: DeviceCapabilities;
  readonly uuid: string;
  readonly parentUuid: string;
  /** What opening found at the end of the index log. */
  readonly recovery: RecoveryReport;
  /** Data-file header (commit takes the virtual size and parent from it). */
  readonly dataHeader: HeaderTrailer;
  /** Source of the data file's bytes (entries' moffsets point into it). */
  readonly dataSource: ByteSource;
  #size: number;
  // The pair in use, its log and entries: replaced together, under the write hold, by compact().
  #files: WritableFiles;
  /** The data file (reads and writes go straight to its descriptor). */
  #data: FileHandle;
  #log: IndexLog | SparseLog;
  /** Sparse layer (docs/format.md §2.12): data in place, no index log. */
  readonly #sparse: boolean;
  /** The log's current entries. */
  #l0: Level0Index;
  /** Asynchronous reads in flight on #data: a replaced data file is closed when they are done. */
  #dataReads = { n: 0, retired: undefined as (() => void) | undefined };
  /** Set while writes, trims and flushes are held (compact, resize); they wait for it. */
  #hold: Promise<void> | undefined;
  /** While a compaction runs: every entry appended since its last snapshot (compact.ts). */
  #journal: number[] | undefined;
  /** Requests served so far (a compaction copies more slowly while this moves). */
  #requests = 0;
  /** compact() and resize() run one at a time. */
  #maintenance: Promise<unknown> = Promise.resolve();
  /** Why the layer stopped accepting writes outside the log (a compaction that could not finish its swap). */
  #failed: ObdError | undefined;
  readonly #lower: BlockDevice | undefined;
  readonly #ownsLower: boolean;
  readonly #locks = new RangeLocks();
  /** Lets small reads of the data file skip the thread pool while it is in the page cache. */
  readonly #gate = new SyncReadGate();
  /** Lets small data writes skip the thread pool while the page cache takes them (see SyncWriteGate). */
  readonly #writeGate = new SyncWriteGate();
  /** Where the next data write goes (bytes, sector-aligned). */
  #dataEnd: number;
  /** End of the data known to be in the file (bytes): zeroed entries point here. */
  #dataLanded: number;
  #closing: Promise<void> | undefined;
  #closed = false;

  private constructor(files: WritableFiles, log: IndexLog | SparseLog, size: number, opts: { lower?: BlockDevice; ownsLower?: boolean; readOnly?: boolean }) {
    this.dataPath = files.dataPath;
    this.indexPath = files.indexPath;
    this.name = files.dataPath;
    this.#files = files;
    this.#data = files.data;
    this.#log = log;
    this.#l0 = log.entries;
    this.dataHeader = files.header;
    this.uuid = files.header.uuid;
    this.parentUuid = files.header.parentUuid;
    this.#size = size;
    this.#sparse = files.sparse;
    this.#dataEnd = files.dataEnd;
    this.#dataLanded = files.dataEnd;
    this.recovery = log.recovery;
    this.#lower = opts.lower;
    this.#ownsLower = opts.ownsLower ?? true;
    this.writable = !opts.readOnly;
    this.capabilities = declareCapabilities({ write: this.writable, trim: true, flush: true });
    this.layerCount = (opts.lower?.layerCount ?? 0) + 1;
    const self = this;
    this.dataSource = {
      name: files.dataPath,
      get size() {
        return self.#dataLanded;
      },
      read: (buf, offset) => this.#readData(buf, offset, false),
      tryReadSync: (buf, offset) => this.#gate.read(this.#data.fd, buf, offset),
      tryReadSyncAt: (buf, at, length, offset) => this.#gate.readAt(this.#data.fd, buf, at, length, offset),
      close: async () => {},
    };
  }

  /** Creates a new data + index file pair (refusing to replace existing files unless asked). */
  static async create(dataPath: string, indexPath: string, opts: WritableCreateOptions): Promise<WritableLayer> {
    let vsize = opts.virtualSize;
    if (!Number.isSafeInteger(vsize) || vsize < 0 || vsize % SECTOR !== 0 || vsize > MAX_VIRTUAL_SIZE) {
      throw new InvalidArgumentError(`virtual size ${vsize} must be a whole number of 512-byte sectors, at most ${MAX_VIRTUAL_SIZE}`);
    }
    if (vsize === 0 && opts.lower) vsize = opts.lower.size;
    const files = await WritableFiles.create(dataPath, indexPath, { virtualSize: vsize, uuid: opts.uuid, parentUuid: opts.parentUuid, overwrite: opts.overwrite, sparse: opts.sparse });
    return new WritableLayer(files, opts.sparse ? SparseLog.empty(files) : IndexLog.empty(files), vsize, opts);
  }

  /** Opens an existing pair, recovering from a crash (see RecoveryReport). */
  static async open(dataPath: string, indexPath: string, opts: WritableOpenOptions = {}): Promise<WritableLayer> {
    const files = await WritableFiles.open(dataPath, indexPath, opts);
    try {
      const log = files.sparse ? SparseLog.scan(files) : await IndexLog.recover(files, !opts.readOnly);
      if (opts.verifyParent && opts.lower) checkParent(dataPath, files.header.parentUuid, opts.lower);
      let size = files.indexHeader.virtualSize;
      if (size === 0 && opts.lower) {
        // As the reference's update_vsize: an unsized upper takes the size of what it covers.
        size = opts.lower.size;
        if (!opts.readOnly) await files.setVirtualSize(size);
      }
      checkVirtualSize(size, log.entries.endSector() * SECTOR, indexPath, 48, false);
      return new WritableLayer(files, log, size, opts);
    } catch (e) {
      await files.close();
      throw e;
    }
  }

  get size(): number {
    return this.#size;
  }

  get lower(): BlockDevice | undefined {
    return this.#lower;
  }

  /**
   * Runs `fn` with the files held still: no compaction swaps them meanwhile (writes go on).
   * A table from indexTable() points into `dataSource` only until the next swap, so readers
   * of both (commit) run inside this.
   */
  stable<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.#maintenance.then(fn);
    this.#maintenance = p.catch(() => {});
    return p;
  }

  /** The live level-0 index, sorted and non-overlapping, every entry with layer `layer`. */
  indexTable(layer = 0): MappingTable {
    return this.#l0.toTable(layer);
  }

  /** indexTable as checkpointed work, to build in slices (src/io/slice.ts). */
  indexTableSteps(layer = 0): Steps<MappingTable> {
    return this.#l0.tableSteps(layer);
  }

  stats(): WritableStats {
    return {
      entries: this.#l0.count,
      liveDataBytes: this.#l0.dataSectors() * SECTOR,
      dataFileBytes: this.#dataLanded,
      pendingEntries: this.#log.pendingCount,
    };
  }

  /** Kept beside src/ops: an entry past the virtual size would be recorded in the index for good. */
  #checkRange(offset: number, length: number): void {
    checkRange(this.name, offset, length, this.#size);
  }

  #checkWritable(): void {
    if (this.#closing) throw new ClosedError(this.name);
    if (!this.writable) throw new ReadOnlyError(this.name);
    if (this.#failed) throw this.#failed;
    if (this.#log.broken) throw this.#log.broken;
  }

  /** Waits while writes are held (see #withHold). */
  async #passHold(): Promise<void> {
    while (this.#hold) await this.#hold;
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    if (this.#closed) throw new ClosedError(this.name);
    this.#requests++;
    this.#checkRange(offset, buf.length);
    if (buf.length > 0) await this.#read(buf, offset);
  }

  /** Fills `buf` from this layer's mappings, the lower device in gaps, zeros elsewhere. */
  #read(buf: Uint8Array, offset: number): Promise<void> {
    const end = offset + buf.length;
    let pos = offset;
    let jobs: Promise<unknown>[] | undefined;
    // One pending data-file read, grown while pieces are contiguous in the buffer and file.
    let rBuf = 0;
    let rFile = 0;
    let rLen = 0;
    const gap = (from: number, to: number): void => {
      const lower = this.#lower;
      const lowTo = lower ? Math.min(to, lower.size) : from;
      if (lowTo > from) (jobs ??= []).push(lower!.read(buf.subarray(from - offset, lowTo - offset), from));
      if (to > lowTo) buf.fill(0, Math.max(from, lowTo) - offset, to - offset);
    };
    try {
      this.#l0.visit(Math.floor(offset / SECTOR), Math.ceil(end / SECTOR), (o, l, m, z) => {
        let s = o * SECTOR;
        let fileOff = m * SECTOR;
        if (s < offset) {
          fileOff += offset - s;
          s = offset;
        }
        const e = Math.min((o + l) * SECTOR, end);
        if (s > pos) gap(pos, s);
        if (z) {
          buf.fill(0, s - offset, e - offset);
        } else if (rLen > 0 && rBuf + rLen === s - offset && rFile + rLen === fileOff) {
          rLen += e - s;
        } else {
          if (rLen > 0) (jobs ??= []).push(this.#readData(buf.subarray(rBuf, rBuf + rLen), rFile, true));
          rBuf = s - offset;
          rFile = fileOff;
          rLen = e - s;
        }
        pos = e;
      });
      if (pos < end) gap(pos, end);
    } catch (e) {
      // A lower device that throws at once must not settle this read before the pieces already started.
      return failAfter(jobs, e);
    }
    if (rLen > 0) {
      const last = this.#readData(buf.subarray(rBuf, rBuf + rLen), rFile, true);
      if (!jobs) return last.then(() => {});
      jobs.push(last);
    }
    return jobs ? settleAll(jobs) : Promise.resolve();
  }

  #readData(buf: Uint8Array, fileOff: number, exact: boolean): Promise<number> {
    const check = (done: number): number => {
      if (exact && done !== buf.length) throw new ShortReadError(this.dataPath, fileOff, buf.length, done);
      return done;
    };
    let sync: number | undefined;
    try {
      sync = this.#gate.read(this.#data.fd, buf, fileOff);
      if (sync !== undefined) return Promise.resolve(check(sync));
    } catch (e) {
      return Promise.reject(e);
    }
    const reads = this.#dataReads;
    reads.n++;
    const settled = (): void => {
      if (--reads.n === 0) reads.retired?.();
    };
    return preadFull(this.#data.fd, buf, fileOff).then(
      (n) => (settled(), check(n)),
      (e: unknown) => {
        settled();
        throw e;
      },
    );
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    if (this.#closed) throw new ClosedError(this.name);
    this.#checkRange(offset, length);
    const end = offset + length;
    const mine = this.#lower ? this.#lower.layerCount : 0;
    const parts: (Extent | Promise<Extent[]>)[] = [];
    let pos = offset;
    const gap = (from: number, to: number): void => {
      const lower = this.#lower;
      const lowTo = lower ? Math.min(to, lower.size) : from;
      if (lowTo > from) parts.push(lower!.extents(from, lowTo - from));
      if (to > lowTo) parts.push({ offset: Math.max(from, lowTo), length: to - Math.max(from, lowTo), kind: 'hole', layer: -1 });
    };
    this.#l0.visit(Math.floor(offset / SECTOR), Math.ceil(end / SECTOR), (o, l, _m, z) => {
      const s = Math.max(o * SECTOR, offset);
      const e = Math.min((o + l) * SECTOR, end);
      if (s > pos) gap(pos, s);
      parts.push({ offset: s, length: e - s, kind: z ? 'zero' : 'data', layer: mine });
      pos = e;
    });
    if (pos < end) gap(pos, end);
    const out: Extent[] = [];
    for (const p of await Promise.all(parts)) {
      for (const x of Array.isArray(p) ? p : [p]) {
        const last = out.at(-1);
        if (last && last.kind === x.kind && last.layer === x.layer && last.offset + last.length === x.offset) last.length += x.length;
        else out.push({ ...x });
      }
    }
    return out;
  }

  /** Writes `buf` at any byte offset; partial sectors are completed from the current contents. */
  async write(buf: Uint8Array, offset: number): Promise<void> {
    this.#requests++;
    this.#checkWritable();
    this.#checkRange(offset, buf.length);
    if (buf.length === 0) return;
    if (this.#hold) {
      await this.#passHold();
      this.#checkWritable();
      this.#checkRange(offset, buf.length);
    }
    const [a0, a1] = this.#span(offset, offset + buf.length);
    await this.#locks.run(a0 / SECTOR, a1 / SECTOR, () => this.#writeLocked(buf, offset));
  }

  /**
   * The bytes a write of [offset, end) rewrites: whole sectors, or whole 4 KiB blocks in a
   * sparse layer (where the filesystem allocates whole blocks, so every allocated byte must
   * hold what reads showed), never past the device's end.
   */
  #span(offset: number, end: number): [number, number] {
    const unit = this.#sparse ? SPARSE_BLOCK : SECTOR;
    return [Math.floor(offset / unit) * unit, Math.min(Math.ceil(end / unit) * unit, Math.max(end, this.#size))];
  }

  /** The write itself; the caller holds the range lock of its sectors. */
  async #writeLocked(buf: Uint8Array, offset: number): Promise<void> {
    if (this.#log.broken) throw this.#log.broken;
    const end = offset + buf.length;
    const [a0, a1] = this.#span(offset, end);
    const unit = this.#sparse ? SPARSE_BLOCK : SECTOR;
    const s0 = a0 / SECTOR;
    const head = offset - a0;
    const tail = a1 - end;
    let data = buf;
    if (head !== 0 || tail !== 0) {
      // Partial first and last units are completed from the current contents.
      data = new Uint8Array(a1 - a0);
      const first = Math.min(unit, a1 - a0);
      if (head !== 0) await this.#read(data.subarray(0, first), a0);
      const last = Math.max(a1 - unit, a0);
      if (tail !== 0 && (last >= a0 + first || head === 0)) await this.#read(data.subarray(last - a0), last);
      data.set(buf, head);
    }
    // Append mode: at the data file's end. Sparse: in place, sector x at 4096 + 512·x.
    const at = this.#sparse ? HT_SPACE + a0 : this.#dataEnd;
    if (!this.#sparse) this.#dataEnd += data.length;
    try {
      // Either way the data is written before its entry is appended: the log's order holds.
      if (!this.#writeGate.write(this.#data.fd, data, at)) await pwriteFull(this.#data.fd, data, at);
    } catch (e) {
      throw wrapWriteError(this.dataPath, 'writing data', at, e);
    }
    this.#log.dataWritten();
    if (at + data.length > this.#dataLanded) this.#dataLanded = at + data.length;
    const sectors = data.length / SECTOR;
    for (let done = 0; done < sectors; done += MAX_IO_SECTORS) {
      this.#append(s0 + done, Math.min(MAX_IO_SECTORS, sectors - done), at / SECTOR + done, false);
    }
  }

  /**
   * Discards [offset, offset+length): afterwards it reads as zeros and hides the lower
   * device. Whole sectors become zeroed entries; partial end sectors are written with zeros.
   */
  async trim(offset: number, length: number): Promise<void> {
    this.#requests++;
    this.#checkWritable();
    this.#checkRange(offset, length);
    if (length === 0) return;
    if (this.#hold) {
      await this.#passHold();
      this.#checkWritable();
      this.#checkRange(offset, length);
    }
    const end = offset + length;
    const [a0, a1] = this.#span(offset, end);
    await this.#locks.run(a0 / SECTOR, a1 / SECTOR, async () => {
      if (this.#log.broken) throw this.#log.broken;
      if (this.#sparse) return this.#trimSparse(offset, end);
      const a = Math.ceil(offset / SECTOR);
      const b = Math.floor(end / SECTOR);
      if (a >= b) {
        await this.#writeLocked(new Uint8Array(length), offset);
        return;
      }
      if (a * SECTOR > offset) await this.#writeLocked(new Uint8Array(a * SECTOR - offset), offset);
      const moffset = Math.ceil(this.#dataLanded / SECTOR);
      for (let s = a; s < b; s += MAX_ENTRY_SECTORS) this.#append(s, Math.min(MAX_ENTRY_SECTORS, b - s), moffset, true);
      if (end > b * SECTOR) await this.#writeLocked(new Uint8Array(end - b * SECTOR), b * SECTOR);
    });
  }

  /**
   * A sparse layer records nothing but its file's holes (sparse.ts), so a trim punches holes
   * where the lower device reads as zeros anyway, and writes zeros where the lower device has
   * data (a hole would let that data show through after reopening). Partial blocks get zeros.
   */
  async #trimSparse(offset: number, end: number): Promise<void> {
    const a = Math.ceil(offset / SPARSE_BLOCK) * SPARSE_BLOCK;
    // The device's last block may be partial: punching to the file's end covers it.
    const b = end === this.#size ? end : Math.floor(end / SPARSE_BLOCK) * SPARSE_BLOCK;
    const zeros = async (from: number, to: number): Promise<void> => {
      for (let p = from; p < to; p += MAX_IO_SECTORS * SECTOR) {
        const n = Math.min(MAX_IO_SECTORS * SECTOR, to - p);
        await this.#writeLocked(new Uint8Array(n), p);
      }
    };
    if (a >= b) return zeros(offset, end);
    if (a > offset) await zeros(offset, a);
    const lower = this.#lower;
    const lowTo = lower ? Math.min(b, lower.size) : a;
    const pieces: { from: number; to: number; data: boolean }[] = [];
    if (lowTo > a) for (const x of await lower!.extents(a, lowTo - a)) pieces.push({ from: x.offset, to: x.offset + x.length, data: x.kind === 'data' });
    if (b > Math.max(a, lowTo)) pieces.push({ from: Math.max(a, lowTo), to: b, data: false });
    for (const p of pieces) {
      if (p.data) {
        await zeros(p.from, p.to);
        continue;
      }
      try {
        punchHole(this.#data.fd, this.dataPath, HT_SPACE + p.from, p.to - p.from);
      } catch (e) {
        throw wrapWriteError(this.dataPath, 'punching a hole', HT_SPACE + p.from, e);
      }
      this.#log.dataWritten();
      const s0 = p.from / SECTOR;
      const s1 = Math.ceil(p.to / SECTOR);
      for (let s = s0; s < s1; s += MAX_ENTRY_SECTORS) this.#append(s, Math.min(MAX_ENTRY_SECTORS, s1 - s), HT_SPACE / SECTOR + s, true);
    }
    if (end > b) await zeros(b, end);
  }

  /** Adds an entry to the log (and to a running compaction's journal). */
  #append(offset: number, length: number, moffset: number, zeroed: boolean): void {
    this.#log.append(offset, length, moffset, zeroed);
    this.#journal?.push(offset, length, moffset, zeroed ? 1 : 0);
  }

  /** Makes every completed write and trim durable. */
  flush(): Promise<void> {
    this.#requests++;
    if (this.#closing) return Promise.reject(new ClosedError(this.name));
    if (!this.writable) return Promise.resolve();
    if (this.#hold) return this.#passHold().then(() => this.flush());
    return this.#log.flush();
  }

  /**
   * Runs `fn` with writes, trims and flushes held: new ones wait, in-flight ones finish first,
   * and the log is flushed, so the files hold every completed write when `fn` starts.
   */
  async #withHold<T>(fn: () => Promise<T>): Promise<T> {
    await this.#passHold();
    let release!: () => void;
    this.#hold = new Promise<void>((r) => (release = r));
    try {
      await this.#locks.idle();
      await this.#log.flush();
      return await fn();
    } finally {
      this.#hold = undefined;
      release();
    }
  }

  /** Runs compact() and resize() one after another, never together. */
  #maintain<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.#maintenance.then(() => {
      if (this.#closing) throw new ClosedError(this.name);
      this.#checkWritable();
      return fn();
    });
    this.#maintenance = p.catch(() => {});
    return p;
  }

  /**
   * Rewrites the live extents into new data/index files and swaps them in atomically while
   * reads and writes continue; a crash at any point leaves the old or the new files, each
   * with every acknowledged write (compact.ts, docs/format.md §2.13).
   */
  compact(opts: CompactOptions = {}): Promise<CompactResult> {
    try {
      this.#checkWritable();
    } catch (e) {
      return Promise.reject(e);
    }
    if (this.#sparse) {
      // A sparse layer keeps no dead data: overwrites land in place and trims punch holes.
      const size = this.#dataLanded;
      return this.#maintain(async () => ({ dataBytesBefore: size, dataBytesAfter: size, reclaimed: 0, entries: this.#l0.count, rounds: 0, holdMs: 0 }));
    }
    return this.#maintain(() =>
      compactWritable(
        {
          files: () => this.#files,
          snapshot: () => {
            const journal: number[] = [];
            this.#journal = journal;
            return { table: this.#l0.toTable(), journal };
          },
          stopJournal: () => {
            const j = this.#journal ?? [];
            this.#journal = undefined;
            return j;
          },
          dataFileBytes: () => this.#dataLanded,
          requests: () => this.#requests,
          hold: (fn) => this.#withHold(fn),
          install: (files, log, dataEnd) => this.#install(files, log, dataEnd),
          fail: (e) => (this.#failed = wrapWriteError(this.dataPath, 'compaction could not finish swapping its files (the layer accepts no more writes; reopening finishes the swap)', undefined, e)),
        },
        opts,
      ),
    );
  }

  /** Under the hold: the compacted pair replaces the current one; the old files close once their reads are done. */
  #install(files: WritableFiles, log: IndexLog, dataEnd: number): Promise<void> {
    const old = this.#files;
    const reads = this.#dataReads;
    this.#files = files;
    this.#data = files.data;
    this.#log = log;
    this.#l0 = log.entries;
    this.#dataEnd = dataEnd;
    this.#dataLanded = dataEnd;
    this.#dataReads = { n: 0, retired: undefined };
    // Closing waits for the thread pool; the hold need not.
    if (reads.n === 0) void old.closeHandles();
    else reads.retired = () => void old.closeHandles();
    return Promise.resolve();
  }

  /**
   * Grows (or with shrink: true shrinks, refused if anything is mapped past the new end) the
   * virtual size, durably: both headers record it before this resolves.
   */
  resize(size: number, opts: { shrink?: boolean } = {}): Promise<void> {
    if (!Number.isSafeInteger(size) || size <= 0 || size % SECTOR !== 0 || size > MAX_VIRTUAL_SIZE) {
      return Promise.reject(new InvalidArgumentError(`virtual size ${size} must be a positive multiple of 512, at most ${MAX_VIRTUAL_SIZE}`));
    }
    return this.#maintain(() =>
      this.#withHold(async () => {
        if (size < this.#size && !opts.shrink) {
          throw new InvalidArgumentError(`${this.name}: ${size} is smaller than the virtual size ${this.#size}; shrinking needs shrink (--shrink)`);
        }
        const mapped = this.#l0.endSector() * SECTOR;
        if (size < mapped) throw new InvalidArgumentError(`${this.name}: cannot shrink to ${size}: data is mapped up to byte ${mapped}`);
        await this.#files.setVirtualSize(size);
        this.#size = size;
      }),
    );
  }

  /** Waits for in-flight writes, flushes, and closes the files (and the lower device if owned). */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.#maintenance;
      await this.#passHold();
      await this.#locks.idle();
      let failure: unknown;
      if (this.writable) {
        try {
          await this.#log.flush();
        } catch (e) {
          failure = e;
        }
      }
      this.#closed = true;
      await this.#files.close();
      if (this.#ownsLower && this.#lower) await this.#lower.close();
      if (failure) throw failure;
    })();
    return this.#closing;
  }
}

/** The parent uuid must name the top layer of the lower device (when it has layers with uuids). */
function checkParent(file: string, parentUuid: string, lower: BlockDevice): void {
  const top = lower.uuid;
  if (top === undefined) return;
  if (isNullUuid(parentUuid) || parentUuid.toUpperCase() !== top.toUpperCase()) {
    throw new ChainError(`${file}: parent uuid ${parentUuid} does not match the uuid ${top} of the layer below it (${lower.name})`);
  }
}
