/**
 * An append-only writable LSMT layer (docs/format.md §2.4): a data file
 * (header flags 3, then data appended) and an index file (header flags 1, then 16-byte
 * entries in write order), optionally on top of a read-only device whose bytes show through
 * wherever this layer has no mapping.
 *
 * Durability protocol: a write's data is written first and its entry is inserted into the
 * in-memory level-0 index only once the data write has completed; entries reach the index
 * file only after an fdatasync of the data file, so an entry on disk never points at data
 * that could still be lost. `flush()` = datasync data, append pending entries, datasync
 * index. Reopening keeps the longest valid prefix of the index log and drops a torn or
 * dangling tail, so every write acknowledged before a completed flush survives a crash and
 * nothing that was never written can appear.
 */
import { open, rm, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { ChainError, ClosedError, FormatError, InvalidArgumentError, NotSupportedError, ObdError, OutOfRangeError, ReadOnlyError, ShortReadError } from '../io/errors.ts';
import { wrapFsError } from '../io/file.ts';
import { WriterLock, assertUnlocked } from '../io/lock.ts';
import { writeFull } from '../io/sink.ts';
import { failAfter, settleAll } from '../io/util.ts';
import type { BlockDevice, ByteSource, DeviceCapabilities, Extent } from '../io/types.ts';
import { declareCapabilities } from '../io/capabilities.ts';
import {
  ENTRY_SIZE,
  FLAG_DATA,
  FLAG_HEADER,
  FLAG_SEALED,
  FLAG_SPARSE,
  HT_SPACE,
  HT_STRUCT_SIZE,
  INVALID_OFFSET,
  MAX_ENTRY_SECTORS,
  MAX_RW_INDEX_ENTRIES,
  SECTOR,
  encodeHeaderTrailer,
  isNullUuid,
  parseHeaderTrailer,
  checkVirtualSize,
  MAX_VIRTUAL_SIZE,
  randomUuid,
  type HeaderTrailer,
} from './format.ts';
import { SyncReadGate, preadFull, pwriteFull } from '../io/fd-io.ts';
import { checkUuid } from './identity.ts';
import { wrapWriteError } from './io-errors.ts';
import { Level0Index } from './level0.ts';
import { RangeLocks } from './range-lock.ts';
import type { MappingTable } from './table.ts';

/** Longest data piece one entry gets, as the reference splits writes (4 MiB). */
export const MAX_IO_SECTORS = (4 << 20) / SECTOR;
/** Pending entries that trigger a background write-back to the index file. */
const WRITEBACK_ENTRIES = 4096;
/** Index bytes read per step when loading. */
const LOAD_CHUNK = 1 << 20;
const HEADER_SECTORS = HT_SPACE / SECTOR;

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

/** What reopening found at the end of the index log. */
export interface RecoveryReport {
  /** Whole entries in the index file before recovery (padding included). */
  entriesOnDisk: number;
  /** Entries dropped because they were torn or pointed past the end of the data file. */
  droppedEntries: number;
  /** Bytes cut from the end of the index file (dropped entries plus a partial entry). */
  droppedBytes: number;
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

interface Files {
  dataPath: string;
  indexPath: string;
  data: FileHandle;
  index: FileHandle;
  /** Held while the layer is open for writing, so no other process writes or commits it. */
  lock?: WriterLock;
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
  readonly recovery: RecoveryReport;
  /** Data-file header (commit takes the virtual size and parent from it). */
  readonly dataHeader: HeaderTrailer;
  /** Source of the data file's bytes (entries' moffsets point into it). */
  readonly dataSource: ByteSource;
  #size: number;
  readonly #data: FileHandle;
  readonly #index: FileHandle;
  readonly #lock: WriterLock | undefined;
  readonly #lower: BlockDevice | undefined;
  readonly #ownsLower: boolean;
  readonly #l0: Level0Index;
  readonly #locks = new RangeLocks();
  /** Lets small reads of the data file skip the thread pool while it is in the page cache. */
  readonly #gate = new SyncReadGate();
  /** Where the next data write goes (bytes, sector-aligned). */
  #dataEnd: number;
  /** End of the data known to be in the file (bytes): zeroed entries point here. */
  #dataLanded: number;
  #indexEnd: number;
  /** Entries not yet in the index file, encoded as on disk. */
  #pending = new Uint8Array(256 * ENTRY_SIZE);
  #pendingDv = new DataView(this.#pending.buffer);
  #pendingCount = 0;
  #dataDirty = false;
  #indexDirty = false;
  #writebackQueued = false;
  #flushChain: Promise<void> = Promise.resolve();
  /** Set when a flush failed: durability can no longer be promised, so writes stop. */
  #broken: ObdError | undefined;
  #closing: Promise<void> | undefined;
  #closed = false;

  private constructor(
    files: Files,
    st: { header: HeaderTrailer; size: number; l0: Level0Index; dataEnd: number; indexEnd: number; recovery: RecoveryReport },
    opts: { lower?: BlockDevice; ownsLower?: boolean; readOnly?: boolean },
  ) {
    this.dataPath = files.dataPath;
    this.indexPath = files.indexPath;
    this.name = files.dataPath;
    this.#data = files.data;
    this.#index = files.index;
    this.#lock = files.lock;
    this.dataHeader = st.header;
    this.uuid = st.header.uuid;
    this.parentUuid = st.header.parentUuid;
    this.#size = st.size;
    this.#l0 = st.l0;
    this.#dataEnd = st.dataEnd;
    this.#dataLanded = st.dataEnd;
    this.#indexEnd = st.indexEnd;
    this.recovery = st.recovery;
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
    if (path.resolve(dataPath) === path.resolve(indexPath)) throw new InvalidArgumentError(`${dataPath}: the data and index files must be different files`);
    const header: HeaderTrailer = {
      flags: FLAG_HEADER | FLAG_DATA,
      indexOffset: 0,
      indexSize: 0,
      virtualSize: vsize,
      uuid: checkUuid('uuid', opts.uuid ?? randomUuid()),
      parentUuid: checkUuid('parent uuid', opts.parentUuid),
      version: 1,
      subVersion: 1,
      userTag: '',
    };
    const flag = opts.overwrite ? 'w+' : 'wx+';
    if (opts.overwrite) await assertUnlocked(dataPath, 'replace it');
    const data = await openFile(dataPath, flag);
    let index: FileHandle;
    let lock: WriterLock;
    try {
      lock = await WriterLock.acquire(dataPath);
    } catch (e) {
      await data.close();
      throw e;
    }
    try {
      index = await openFile(indexPath, flag);
    } catch (e) {
      await data.close();
      await removeQuietly(dataPath);
      await lock.release();
      throw e;
    }
    try {
      await writeFull(data, encodeHeaderTrailer(header), 0);
      await writeFull(index, encodeHeaderTrailer({ ...header, flags: FLAG_HEADER, indexOffset: HT_SPACE }), 0);
      await data.datasync();
      await index.datasync();
      await syncDirs([dataPath, indexPath]);
    } catch (e) {
      await Promise.allSettled([data.close(), index.close()]);
      await removeQuietly(dataPath);
      await removeQuietly(indexPath);
      await lock.release();
      throw wrapWriteError(dataPath, 'creating the writable layer', undefined, e);
    }
    const recovery = { entriesOnDisk: 0, droppedEntries: 0, droppedBytes: 0 };
    return new WritableLayer(
      { dataPath, indexPath, data, index, lock },
      { header, size: vsize, l0: new Level0Index(), dataEnd: HT_SPACE, indexEnd: HT_SPACE, recovery },
      opts,
    );
  }

  /** Opens an existing pair, recovering from a crash (see RecoveryReport). */
  static async open(dataPath: string, indexPath: string, opts: WritableOpenOptions = {}): Promise<WritableLayer> {
    const flag = opts.readOnly ? 'r' : 'r+';
    const data = await openFile(dataPath, flag);
    let index: FileHandle | undefined;
    let lock: WriterLock | undefined;
    try {
      // Recovery truncates a torn tail, so a writer locks first; a reader must not read a
      // layer another process is still changing (unless it asks to, e.g. to inspect it).
      if (!opts.readOnly) lock = await WriterLock.acquire(dataPath);
      else if (!opts.allowWriter) await assertUnlocked(dataPath, 'read it');
      index = await openFile(indexPath, flag);
      const files = { dataPath, indexPath, data, index, lock };
      const st = await loadState(files, !opts.readOnly);
      if (opts.verifyParent && opts.lower) checkParent(dataPath, st.header.parentUuid, opts.lower);
      let size = st.indexHeader.virtualSize;
      if (size === 0 && opts.lower) {
        // As the reference's update_vsize: an unsized upper takes the size of what it covers.
        size = opts.lower.size;
        if (!opts.readOnly) await rewriteVirtualSize(files, st.header, st.indexHeader, size);
      }
      checkVirtualSize(size, st.l0.endSector() * SECTOR, indexPath, 48, false);
      return new WritableLayer(files, { ...st, size }, opts);
    } catch (e) {
      await Promise.allSettled([data.close(), index?.close(), lock?.release()]);
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
      pendingEntries: this.#pendingCount,
    };
  }

  #checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.#size) {
      throw new OutOfRangeError(this.name, offset, length, this.#size);
    }
  }

  #checkWritable(): void {
    if (this.#closing) throw new ClosedError(this.name);
    if (!this.writable) throw new ReadOnlyError(this.name);
    if (this.#broken) throw this.#broken;
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
    if (this.#broken) throw this.#broken;
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
    this.#dataDirty = true;
    if (at + data.length > this.#dataLanded) this.#dataLanded = at + data.length;
    const sectors = data.length / SECTOR;
    for (let done = 0; done < sectors; done += MAX_IO_SECTORS) {
      this.#record(s0 + done, Math.min(MAX_IO_SECTORS, sectors - done), at / SECTOR + done, false);
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
      if (this.#broken) throw this.#broken;
      const a = Math.ceil(offset / SECTOR);
      const b = Math.floor(end / SECTOR);
      if (a >= b) {
        await this.#writeLocked(new Uint8Array(length), offset);
        return;
      }
      if (a * SECTOR > offset) await this.#writeLocked(new Uint8Array(a * SECTOR - offset), offset);
      const moffset = Math.ceil(this.#dataLanded / SECTOR);
      for (let s = a; s < b; s += MAX_ENTRY_SECTORS) this.#record(s, Math.min(MAX_ENTRY_SECTORS, b - s), moffset, true);
      if (end > b * SECTOR) await this.#writeLocked(new Uint8Array(end - b * SECTOR), b * SECTOR);
    });
  }

  /** Inserts one mapping into the level-0 index and queues it for the index file. */
  #record(offset: number, length: number, moffset: number, zeroed: boolean): void {
    this.#l0.insert(offset, length, moffset, zeroed);
    if ((this.#pendingCount + 1) * ENTRY_SIZE > this.#pending.length) {
      const bigger = new Uint8Array(this.#pending.length * 2);
      bigger.set(this.#pending.subarray(0, this.#pendingCount * ENTRY_SIZE));
      this.#pending = bigger;
      this.#pendingDv = new DataView(bigger.buffer);
    }
    const dv = this.#pendingDv;
    const at = this.#pendingCount++ * ENTRY_SIZE;
    dv.setUint32(at, offset >>> 0, true);
    dv.setUint32(at + 4, (Math.floor(offset / 2 ** 32) | (length << 18)) >>> 0, true);
    dv.setUint32(at + 8, moffset >>> 0, true);
    dv.setUint32(at + 12, (Math.floor(moffset / 2 ** 32) | (zeroed ? 1 << 23 : 0)) >>> 0, true);
    if (this.#pendingCount >= WRITEBACK_ENTRIES && !this.#writebackQueued) {
      // Bound memory and replay work without waiting for the caller's flush.
      this.#writebackQueued = true;
      this.#enqueueFlush(false)
        .catch(() => {})
        .finally(() => (this.#writebackQueued = false));
    }
  }

  /** Makes every completed write and trim durable. */
  flush(): Promise<void> {
    if (this.#closing) return Promise.reject(new ClosedError(this.name));
    if (!this.writable) return Promise.resolve();
    return this.#enqueueFlush(true);
  }

  #enqueueFlush(syncIndex: boolean): Promise<void> {
    const p = this.#flushChain.then(() => this.#doFlush(syncIndex));
    this.#flushChain = p.catch(() => {});
    return p;
  }

  async #doFlush(syncIndex: boolean): Promise<void> {
    if (this.#broken) throw this.#broken;
    // Only entries recorded before the data sync starts are covered by it.
    const n = this.#pendingCount;
    let step = 'syncing data';
    try {
      if (this.#dataDirty) {
        this.#dataDirty = false;
        await this.#data.datasync();
      }
      if (n > 0) {
        step = 'appending index entries';
        await writeFull(this.#index, this.#pending.subarray(0, n * ENTRY_SIZE), this.#indexEnd);
        this.#indexEnd += n * ENTRY_SIZE;
        this.#pending.copyWithin(0, n * ENTRY_SIZE, this.#pendingCount * ENTRY_SIZE);
        this.#pendingCount -= n;
        this.#indexDirty = true;
      }
      if (syncIndex && this.#indexDirty) {
        step = 'syncing the index';
        this.#indexDirty = false;
        await this.#index.datasync();
      }
    } catch (e) {
      this.#broken = wrapWriteError(step === 'syncing data' ? this.dataPath : this.indexPath, `${step} (the layer accepts no more writes)`, undefined, e);
      throw this.#broken;
    }
  }

  /** Waits for in-flight writes, flushes, and closes the files (and the lower device if owned). */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.#locks.idle();
      let failure: unknown;
      if (this.writable) {
        try {
          await this.#enqueueFlush(true);
        } catch (e) {
          failure = e;
        }
      }
      this.#closed = true;
      await Promise.allSettled([this.#data.close(), this.#index.close()]);
      await this.#lock?.release();
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

async function openFile(p: string, flag: string): Promise<FileHandle> {
  try {
    return await open(p, flag);
  } catch (e) {
    if ((e as NodeJS.ErrnoException)?.code === 'EEXIST') throw new InvalidArgumentError(`${p}: already exists (refusing to overwrite)`, { cause: e });
    throw wrapFsError(p, e);
  }
}

async function removeQuietly(p: string): Promise<void> {
  await rm(p, { force: true }).catch(() => {});
}

/** Makes the new directory entries durable (a crash right after create keeps the files). */
async function syncDirs(files: string[]): Promise<void> {
  for (const dir of new Set(files.map((f) => path.dirname(path.resolve(f))))) {
    let fh: FileHandle | undefined;
    try {
      fh = await open(dir, 'r');
      await fh.sync();
    } catch {
      // Some filesystems cannot sync a directory; the files themselves are synced.
    } finally {
      await fh?.close();
    }
  }
}

async function readHeader(fh: FileHandle, file: string): Promise<HeaderTrailer> {
  const buf = new Uint8Array(HT_STRUCT_SIZE);
  const { bytesRead } = await fh.read(buf, 0, HT_STRUCT_SIZE, 0);
  if (bytesRead < HT_STRUCT_SIZE) throw new FormatError(file, `too small for an LSMT header: ${bytesRead} bytes`, 0);
  return parseHeaderTrailer(buf, file, 0);
}

interface LoadedState {
  header: HeaderTrailer;
  indexHeader: HeaderTrailer;
  l0: Level0Index;
  dataEnd: number;
  indexEnd: number;
  recovery: RecoveryReport;
}

/** Validates both headers and replays the index log into a level-0 index. */
async function loadState(f: Files, writable: boolean): Promise<LoadedState> {
  const header = await readHeader(f.data, f.dataPath);
  const hf = header.flags;
  if (!(hf & FLAG_HEADER)) throw new FormatError(f.dataPath, `header flags ${hf}: is-header bit (1) not set`, 28);
  if (!(hf & FLAG_DATA)) {
    throw new FormatError(f.dataPath, `header flags ${hf}: this is an index file, not a data file (are DATA and INDEX swapped?)`, 28);
  }
  if (hf & FLAG_SEALED) throw new FormatError(f.dataPath, `header flags ${hf}: this is a sealed (committed) layer, not a writable data file`, 28);
  if (hf & FLAG_SPARSE) {
    throw new NotSupportedError(`${f.dataPath}: sparse writable layers (header flag 16, overlaybd-create -s) are not supported; create an append-mode layer`);
  }
  const indexHeader = await readHeader(f.index, f.indexPath);
  const xf = indexHeader.flags;
  if (!(xf & FLAG_HEADER)) throw new FormatError(f.indexPath, `header flags ${xf}: is-header bit (1) not set`, 28);
  if (xf & FLAG_DATA) throw new FormatError(f.indexPath, `header flags ${xf}: this is a data file, not an index file (are DATA and INDEX swapped?)`, 28);
  if (xf & FLAG_SEALED) throw new FormatError(f.indexPath, `header flags ${xf}: sealed bit set on an index file`, 28);
  if (indexHeader.indexOffset !== HT_SPACE) {
    throw new FormatError(f.indexPath, `index_offset is ${indexHeader.indexOffset}, expected ${HT_SPACE} for a writable index file`, 32);
  }
  if (indexHeader.uuid.toUpperCase() !== header.uuid.toUpperCase()) {
    throw new ChainError(`${f.indexPath}: index file belongs to layer ${indexHeader.uuid}, but ${f.dataPath} is layer ${header.uuid}`);
  }
  const dataSize = (await f.data.stat()).size;
  const indexSize = (await f.index.stat()).size;
  const total = Math.floor(Math.max(0, indexSize - HT_SPACE) / ENTRY_SIZE);
  if (total > MAX_RW_INDEX_ENTRIES) {
    throw new FormatError(f.indexPath, `${total} index entries exceed the limit of ${MAX_RW_INDEX_ENTRIES}`);
  }
  const dataSectors = Math.floor(dataSize / SECTOR);
  const dataEndSector = Math.ceil(dataSize / SECTOR);
  const l0 = new Level0Index();
  let valid = 0;
  const buf = new Uint8Array(LOAD_CHUNK);
  const dv = new DataView(buf.buffer);
  scan: for (let first = 0; first < total; ) {
    const n = Math.min(total - first, LOAD_CHUNK / ENTRY_SIZE);
    const want = n * ENTRY_SIZE;
    const { bytesRead } = await f.index.read(buf, 0, want, HT_SPACE + first * ENTRY_SIZE);
    if (bytesRead !== want) throw new ShortReadError(f.indexPath, HT_SPACE + first * ENTRY_SIZE, want, bytesRead);
    for (let k = 0; k < n; k++) {
      const at = k * ENTRY_SIZE;
      const lo0 = dv.getUint32(at, true);
      const hi0 = dv.getUint32(at + 4, true);
      const lo1 = dv.getUint32(at + 8, true);
      const hi1 = dv.getUint32(at + 12, true);
      const offset = lo0 + (hi0 & 0x3ffff) * 2 ** 32;
      if (offset === INVALID_OFFSET) {
        valid++;
        continue;
      }
      const length = hi0 >>> 18;
      const moffset = lo1 + (hi1 & 0x7fffff) * 2 ** 32;
      const zeroed = ((hi1 >>> 23) & 1) === 1;
      // A log: the first entry that is torn or points past the data ends it.
      if (length === 0 || moffset < HEADER_SECTORS || (zeroed ? moffset > dataEndSector : moffset + length > dataSectors)) break scan;
      l0.insert(offset, length, moffset, zeroed);
      valid++;
    }
    first += n;
  }
  const indexEnd = HT_SPACE + valid * ENTRY_SIZE;
  const recovery: RecoveryReport = { entriesOnDisk: total, droppedEntries: total - valid, droppedBytes: Math.max(0, indexSize - indexEnd) };
  if (writable && indexSize !== indexEnd) {
    // New entries must follow the last good one, or a replay would stop at the garbage.
    try {
      await f.index.truncate(indexEnd);
      await f.index.datasync();
    } catch (e) {
      throw wrapWriteError(f.indexPath, 'cutting a torn index tail', indexEnd, e);
    }
  }
  const dataEnd = Math.max(HT_SPACE, dataEndSector * SECTOR);
  return { header, indexHeader, l0, dataEnd, indexEnd, recovery };
}

async function rewriteVirtualSize(f: Files, header: HeaderTrailer, indexHeader: HeaderTrailer, size: number): Promise<void> {
  try {
    await writeFull(f.data, encodeHeaderTrailer({ ...header, virtualSize: size }), 0);
    await writeFull(f.index, encodeHeaderTrailer({ ...indexHeader, virtualSize: size }), 0);
    await f.data.datasync();
    await f.index.datasync();
  } catch (e) {
    throw wrapWriteError(f.dataPath, 'recording the virtual size', 48, e);
  }
  header.virtualSize = size;
  indexHeader.virtualSize = size;
}
