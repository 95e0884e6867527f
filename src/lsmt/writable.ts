/**
 * An append-only writable LSMT layer as a block device (docs/format.md §2.4): reads, writes,
 * trims and extents over its current entries, optionally on top of a read-only device whose
 * bytes show through wherever this layer has no mapping. A write appends its data to the
 * data file, then hands the entry to the index log (index-log.ts: when entries become durable,
 * and why a failed flush stops writes); writable-files.ts creates, opens and locks the files.
 */
import type { FileHandle } from 'node:fs/promises';
import { ChainError, ClosedError, InvalidArgumentError, ReadOnlyError, ShortReadError } from '../io/errors.ts';
import { checkRange, failAfter, settleAll } from '../io/util.ts';
import type { BlockDevice, ByteSource, DeviceCapabilities, Extent } from '../io/types.ts';
import { declareCapabilities } from '../io/capabilities.ts';
import { MAX_ENTRY_SECTORS, SECTOR, isNullUuid, checkVirtualSize, MAX_VIRTUAL_SIZE, type HeaderTrailer } from './format.ts';
import { SyncReadGate, preadFull, pwriteFull } from '../io/fd-io.ts';
import { IndexLog, type RecoveryReport } from './index-log.ts';
import { wrapWriteError } from './io-errors.ts';
import type { Level0Index } from './level0.ts';
import { RangeLocks } from './range-lock.ts';
import type { MappingTable } from './table.ts';
import { WritableFiles } from './writable-files.ts';

export type { RecoveryReport };

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
  readonly #files: WritableFiles;
  /** The data file (reads and writes go straight to its descriptor). */
  readonly #data: FileHandle;
  readonly #log: IndexLog;
  /** The log's current entries. */
  readonly #l0: Level0Index;
  readonly #lower: BlockDevice | undefined;
  readonly #ownsLower: boolean;
  readonly #locks = new RangeLocks();
  /** Lets small reads of the data file skip the thread pool while it is in the page cache. */
  readonly #gate = new SyncReadGate();
  /** Where the next data write goes (bytes, sector-aligned). */
  #dataEnd: number;
  /** End of the data known to be in the file (bytes): zeroed entries point here. */
  #dataLanded: number;
  #closing: Promise<void> | undefined;
  #closed = false;

  private constructor(files: WritableFiles, log: IndexLog, size: number, opts: { lower?: BlockDevice; ownsLower?: boolean; readOnly?: boolean }) {
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
    const files = await WritableFiles.create(dataPath, indexPath, { virtualSize: vsize, uuid: opts.uuid, parentUuid: opts.parentUuid, overwrite: opts.overwrite });
    return new WritableLayer(files, IndexLog.empty(files), vsize, opts);
  }

  /** Opens an existing pair, recovering from a crash (see RecoveryReport). */
  static async open(dataPath: string, indexPath: string, opts: WritableOpenOptions = {}): Promise<WritableLayer> {
    const files = await WritableFiles.open(dataPath, indexPath, opts);
    try {
      const log = await IndexLog.recover(files, !opts.readOnly);
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

  /** The live level-0 index, sorted and non-overlapping, every entry with layer `layer`. */
  indexTable(layer = 0): MappingTable {
    return this.#l0.toTable(layer);
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
    if (this.#log.broken) throw this.#log.broken;
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    if (this.#closed) throw new ClosedError(this.name);
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
    return preadFull(this.#data.fd, buf, fileOff).then(check);
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
    this.#checkWritable();
    this.#checkRange(offset, buf.length);
    if (buf.length === 0) return;
    const s0 = Math.floor(offset / SECTOR);
    const s1 = Math.ceil((offset + buf.length) / SECTOR);
    await this.#locks.run(s0, s1, () => this.#writeLocked(buf, offset));
  }

  /** The write itself; the caller holds the range lock of its sectors. */
  async #writeLocked(buf: Uint8Array, offset: number): Promise<void> {
    if (this.#log.broken) throw this.#log.broken;
    const end = offset + buf.length;
    const s0 = Math.floor(offset / SECTOR);
    const s1 = Math.ceil(end / SECTOR);
    const head = offset - s0 * SECTOR;
    const tail = s1 * SECTOR - end;
    let data = buf;
    if (head !== 0 || tail !== 0) {
      data = new Uint8Array((s1 - s0) * SECTOR);
      if (head !== 0) await this.#read(data.subarray(0, SECTOR), s0 * SECTOR);
      if (tail !== 0 && (s1 - 1 > s0 || head === 0)) await this.#read(data.subarray(data.length - SECTOR), (s1 - 1) * SECTOR);
      data.set(buf, head);
    }
    const at = this.#dataEnd;
    this.#dataEnd += data.length;
    try {
      await pwriteFull(this.#data.fd, data, at);
    } catch (e) {
      throw wrapWriteError(this.dataPath, 'writing data', at, e);
    }
    this.#log.dataWritten();
    if (at + data.length > this.#dataLanded) this.#dataLanded = at + data.length;
    const sectors = data.length / SECTOR;
    for (let done = 0; done < sectors; done += MAX_IO_SECTORS) {
      this.#log.append(s0 + done, Math.min(MAX_IO_SECTORS, sectors - done), at / SECTOR + done, false);
    }
  }

  /**
   * Discards [offset, offset+length): afterwards it reads as zeros and hides the lower
   * device. Whole sectors become zeroed entries; partial end sectors are written with zeros.
   */
  async trim(offset: number, length: number): Promise<void> {
    this.#checkWritable();
    this.#checkRange(offset, length);
    if (length === 0) return;
    const end = offset + length;
    const s0 = Math.floor(offset / SECTOR);
    const s1 = Math.ceil(end / SECTOR);
    await this.#locks.run(s0, s1, async () => {
      if (this.#log.broken) throw this.#log.broken;
      const a = Math.ceil(offset / SECTOR);
      const b = Math.floor(end / SECTOR);
      if (a >= b) {
        await this.#writeLocked(new Uint8Array(length), offset);
        return;
      }
      if (a * SECTOR > offset) await this.#writeLocked(new Uint8Array(a * SECTOR - offset), offset);
      const moffset = Math.ceil(this.#dataLanded / SECTOR);
      for (let s = a; s < b; s += MAX_ENTRY_SECTORS) this.#log.append(s, Math.min(MAX_ENTRY_SECTORS, b - s), moffset, true);
      if (end > b * SECTOR) await this.#writeLocked(new Uint8Array(end - b * SECTOR), b * SECTOR);
    });
  }

  /** Makes every completed write and trim durable. */
  flush(): Promise<void> {
    if (this.#closing) return Promise.reject(new ClosedError(this.name));
    if (!this.writable) return Promise.resolve();
    return this.#log.flush();
  }

  /** Waits for in-flight writes, flushes, and closes the files (and the lower device if owned). */
  close(): Promise<void> {
    this.#closing ??= (async () => {
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
