/**
 * The two files of a writable LSMT layer (docs/format.md §2.4) and their lifetime: creating
 * the pair, opening it (checking both headers and taking the writer lock), recording a new
 * virtual size, closing. What is inside the index file past its header is the index log's
 * business (index-log.ts); what the data means is the device's (writable.ts).
 */
import { open, rm, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { syncDirsOf } from '../io/atomic.ts';
import { ChainError, FormatError, InvalidArgumentError } from '../io/errors.ts';
import { wrapFsError } from '../io/file.ts';
import { WriterLock, assertUnlocked, lockHolder } from '../io/lock.ts';
import { recoverSwap, type SwapRecovery } from './compact-swap.ts';
import { writeFull } from '../io/sink.ts';
import {
  FLAG_DATA,
  FLAG_HEADER,
  FLAG_SEALED,
  FLAG_SPARSE,
  HT_SPACE,
  HT_STRUCT_SIZE,
  SECTOR,
  encodeHeaderTrailer,
  parseHeaderTrailer,
  randomUuid,
  type HeaderTrailer,
} from './format.ts';
import { checkUuid } from './identity.ts';
import { isSealedTrailer } from './seal.ts';
import { wrapWriteError } from './io-errors.ts';

export interface FilesCreateOptions {
  /** Bytes, already checked by the caller. */
  virtualSize: number;
  /** Default: a new random uuid, as overlaybd-create does. */
  uuid?: string;
  parentUuid?: string;
  /** Replace existing files (default: refuse, as overlaybd-create does). */
  overwrite?: boolean;
  /** A sparse layer (docs/format.md §2.12): header flag 16, data in place, an empty index file. */
  sparse?: boolean;
}

export interface FilesOpenOptions {
  readOnly?: boolean;
  /** Read-only: open even while another process has the layer open for writing (inspection). */
  allowWriter?: boolean;
}

export class WritableFiles {
  readonly dataPath: string;
  readonly indexPath: string;
  readonly data: FileHandle;
  readonly index: FileHandle;
  /** Data-file header. */
  readonly header: HeaderTrailer;
  readonly indexHeader: HeaderTrailer;
  /** Sizes of the files when they were opened (bytes). */
  readonly dataSize: number;
  readonly indexSize: number;
  /** What opening did about an interrupted compaction (compact-swap.ts). */
  swapRecovery: SwapRecovery = 'none';
  /** Held while the layer is open for writing, so no other process writes or commits it. */
  readonly #lock: WriterLock | undefined;

  private constructor(
    f: { dataPath: string; indexPath: string; data: FileHandle; index: FileHandle; lock: WriterLock | undefined },
    header: HeaderTrailer,
    indexHeader: HeaderTrailer,
    dataSize: number,
    indexSize: number,
  ) {
    this.dataPath = f.dataPath;
    this.indexPath = f.indexPath;
    this.data = f.data;
    this.index = f.index;
    this.#lock = f.lock;
    this.header = header;
    this.indexHeader = indexHeader;
    this.dataSize = dataSize;
    this.indexSize = indexSize;
  }

  /** A sparse layer (header flag 16): data in place, the index file unused (sparse.ts). */
  get sparse(): boolean {
    return (this.header.flags & FLAG_SPARSE) !== 0;
  }

  /** Where appending to the data file resumes: its end rounded up to a sector, past the header. */
  get dataEnd(): number {
    return Math.max(HT_SPACE, Math.ceil(this.dataSize / SECTOR) * SECTOR);
  }

  /**
   * Creates the pair with its two headers, synced along with their directory entries, and
   * holds the writer lock. Refuses existing files unless `overwrite`.
   */
  static async create(dataPath: string, indexPath: string, opts: FilesCreateOptions): Promise<WritableFiles> {
    if (path.resolve(dataPath) === path.resolve(indexPath)) throw new InvalidArgumentError(`${dataPath}: the data and index files must be different files`);
    const header: HeaderTrailer = {
      flags: FLAG_HEADER | FLAG_DATA | (opts.sparse ? FLAG_SPARSE : 0),
      indexOffset: 0,
      indexSize: 0,
      virtualSize: opts.virtualSize,
      uuid: checkUuid('uuid', opts.uuid ?? randomUuid()),
      parentUuid: checkUuid('parent uuid', opts.parentUuid),
      version: 1,
      subVersion: 1,
      userTag: '',
    };
    const indexHeader: HeaderTrailer = { ...header, flags: FLAG_HEADER, indexOffset: HT_SPACE };
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
      // As overlaybd-create -s: the data file spans the whole disk, the index file stays empty.
      if (opts.sparse) await data.truncate(HT_SPACE + opts.virtualSize);
      else await writeFull(index, encodeHeaderTrailer(indexHeader), 0);
      await data.datasync();
      await index.datasync();
      await syncDirsOf([dataPath, indexPath]);
    } catch (e) {
      await Promise.allSettled([data.close(), index.close()]);
      await removeQuietly(dataPath);
      await removeQuietly(indexPath);
      await lock.release();
      throw wrapWriteError(dataPath, 'creating the writable layer', undefined, e);
    }
    return new WritableFiles({ dataPath, indexPath, data, index, lock }, header, indexHeader, opts.sparse ? HT_SPACE + opts.virtualSize : HT_SPACE, opts.sparse ? 0 : HT_SPACE);
  }

  /**
   * Opens an existing pair and checks that both headers are what a writable layer's files
   * carry and belong together. A writer takes the lock first (recovery will cut a torn tail);
   * a reader refuses a layer another process is writing unless `allowWriter`.
   */
  static async open(dataPath: string, indexPath: string, opts: FilesOpenOptions = {}): Promise<WritableFiles> {
    const flag = opts.readOnly ? 'r' : 'r+';
    let data: FileHandle | undefined;
    let index: FileHandle | undefined;
    let lock: WriterLock | undefined;
    try {
      if (!opts.readOnly) lock = await WriterLock.acquire(dataPath);
      else if (!opts.allowWriter) await assertUnlocked(dataPath, 'read it');
      // A compaction's leftovers are settled first, unless a live writer may be compacting now.
      const swap = opts.readOnly && opts.allowWriter && (await lockHolder(dataPath)) !== undefined ? 'none' : await recoverSwap(dataPath, indexPath);
      data = await openFile(dataPath, flag);
      index = await openFile(indexPath, flag);
      const header = await readHeader(data, dataPath);
      checkDataHeader(header, dataPath);
      // A sparse layer's index file is not read (the reference's tool leaves it empty).
      const indexHeader = header.flags & FLAG_SPARSE ? { ...header, flags: FLAG_HEADER, indexOffset: HT_SPACE } : await readHeader(index, indexPath);
      checkIndexHeader(indexHeader, indexPath);
      if (indexHeader.uuid.toUpperCase() !== header.uuid.toUpperCase()) {
        throw new ChainError(`${indexPath}: index file belongs to layer ${indexHeader.uuid}, but ${dataPath} is layer ${header.uuid}`);
      }
      const dataSize = (await data.stat()).size;
      const indexSize = (await index.stat()).size;
      await refuseSealedInPlace(data, dataPath, dataSize, header);
      const files = new WritableFiles({ dataPath, indexPath, data, index, lock }, header, indexHeader, dataSize, indexSize);
      files.swapRecovery = swap;
      return files;
    } catch (e) {
      await Promise.allSettled([data?.close(), index?.close(), lock?.release()]);
      throw e;
    }
  }

  /**
   * Creates the files a compaction writes (compact-swap.ts names them): both headers as this
   * pair's, synced; any leftover of an earlier attempt is replaced. No lock: this pair's covers them.
   */
  async createSuccessorFiles(newData: string, newIndex: string): Promise<{ data: FileHandle; index: FileHandle }> {
    const data = await openFile(newData, 'w+');
    let index: FileHandle | undefined;
    try {
      index = await openFile(newIndex, 'w+');
      await writeFull(data, encodeHeaderTrailer(this.header), 0);
      await writeFull(index, encodeHeaderTrailer(this.indexHeader), 0);
      await data.datasync();
      await index.datasync();
      return { data, index };
    } catch (e) {
      await Promise.allSettled([data.close(), index?.close()]);
      await removeQuietly(newData);
      await removeQuietly(newIndex);
      throw wrapWriteError(newData, 'creating the compacted files', undefined, e);
    }
  }

  /** The pair these handles now are (renamed over this pair's paths), with this pair's lock. */
  successor(data: FileHandle, index: FileHandle, dataSize: number, indexSize: number): WritableFiles {
    return new WritableFiles({ dataPath: this.dataPath, indexPath: this.indexPath, data, index, lock: this.#lock }, this.header, this.indexHeader, dataSize, indexSize);
  }

  /** Closes this pair's handles but keeps the lock (its successor holds it on). */
  async closeHandles(): Promise<void> {
    await Promise.allSettled([this.data.close(), this.index.close()]);
  }

  /** Records a new virtual size in both headers (offset 48), durably. */
  async setVirtualSize(size: number): Promise<void> {
    try {
      if (this.sparse) {
        // As the reference's update_vsize: a sparse data file spans the disk. The file grows
        // before the header says so and shrinks after, so a crash never leaves it short.
        if (size > this.header.virtualSize) await this.data.truncate(HT_SPACE + size);
        await writeFull(this.data, encodeHeaderTrailer({ ...this.header, virtualSize: size }), 0);
        await this.data.sync();
        if (size < this.header.virtualSize) await this.data.truncate(HT_SPACE + size);
        await this.data.sync();
      } else {
        await writeFull(this.data, encodeHeaderTrailer({ ...this.header, virtualSize: size }), 0);
        await writeFull(this.index, encodeHeaderTrailer({ ...this.indexHeader, virtualSize: size }), 0);
        await this.data.datasync();
        await this.index.datasync();
      }
    } catch (e) {
      throw wrapWriteError(this.dataPath, 'recording the virtual size', 48, e);
    }
    this.header.virtualSize = size;
    this.indexHeader.virtualSize = size;
  }

  /** Closes both files, then gives up the writer lock. */
  async close(): Promise<void> {
    await Promise.allSettled([this.data.close(), this.index.close()]);
    await this.#lock?.release();
  }
}

function checkDataHeader(h: HeaderTrailer, file: string): void {
  const f = h.flags;
  if (!(f & FLAG_HEADER)) throw new FormatError(file, `header flags ${f}: is-header bit (1) not set`, 28);
  if (!(f & FLAG_DATA)) throw new FormatError(file, `header flags ${f}: this is an index file, not a data file (are DATA and INDEX swapped?)`, 28);
  if (f & FLAG_SEALED) throw new FormatError(file, `header flags ${f}: this is a sealed (committed) layer, not a writable data file`, 28);
}

function checkIndexHeader(h: HeaderTrailer, file: string): void {
  const f = h.flags;
  if (!(f & FLAG_HEADER)) throw new FormatError(file, `header flags ${f}: is-header bit (1) not set`, 28);
  if (f & FLAG_DATA) throw new FormatError(file, `header flags ${f}: this is a data file, not an index file (are DATA and INDEX swapped?)`, 28);
  if (f & FLAG_SEALED) throw new FormatError(file, `header flags ${f}: sealed bit set on an index file`, 28);
  if (h.indexOffset !== HT_SPACE) throw new FormatError(file, `index_offset is ${h.indexOffset}, expected ${HT_SPACE} for a writable index file`, 32);
}

/** A data file sealed in place (seal.ts) is a read-only layer now: appending would break it. */
async function refuseSealedInPlace(fh: FileHandle, file: string, size: number, header: HeaderTrailer): Promise<void> {
  if (size < 2 * HT_SPACE) return;
  const tail = new Uint8Array(HT_STRUCT_SIZE);
  const { bytesRead } = await fh.read(tail, 0, HT_STRUCT_SIZE, size - HT_SPACE);
  if (bytesRead === HT_STRUCT_SIZE && isSealedTrailer(tail, file, size, header)) {
    throw new FormatError(file, 'this data file was sealed in place (overlaybd-commit --seal, obd commit --seal): open it as a read-only layer, e.g. obd info FILE or obd merge FILE OUT', size - HT_SPACE);
  }
}

async function readHeader(fh: FileHandle, file: string): Promise<HeaderTrailer> {
  const buf = new Uint8Array(HT_STRUCT_SIZE);
  const { bytesRead } = await fh.read(buf, 0, HT_STRUCT_SIZE, 0);
  if (bytesRead < HT_STRUCT_SIZE) throw new FormatError(file, `too small for an LSMT header: ${bytesRead} bytes`, 0);
  return parseHeaderTrailer(buf, file, 0);
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

