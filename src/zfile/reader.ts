/**
 * A decompressing view of a zfile: a ByteSource of the original bytes, read at any offset.
 * Opening validates header, trailer and jump table; every block read is CRC-checked (when the
 * file carries CRCs) and its decoded length checked, so corruption is a typed error naming
 * the file, block and offset, never wrong bytes.
 */
import type { ByteSource, IntegrityReport } from '../io/types.ts';
import { ClosedError, OutOfRangeError, ShortReadError } from '../io/errors.ts';
import { hex, isOffset, readable, readAt, readExact, settleAll } from '../io/util.ts';
import { BlockCache, type CacheEntry, type MemoryBudget } from './block-cache.ts';
import { BlockTable } from './block-table.ts';
import { createCodec, type BlockCodec } from './codec.ts';
import { blockCrc, rawCrc32c } from './crc.ts';
import { ZFileChecksumError, ZFileFormatError } from './errors.ts';
import {
  algorithmName,
  checkDigest,
  CRC_SIZE,
  FLAG_DATA,
  FLAG_DIGEST,
  FLAG_HEADER,
  FLAG_OVERWRITTEN,
  FLAG_SEALED,
  hasZFileMagic,
  HT_SPACE,
  maxStoredBlock,
  parseHeader,
  validateCodecFields,
  validateIndexFields,
  ZSTD_DEFAULT_LEVEL,
  type Algorithm,
  type ZFileHeader,
} from './format.ts';

export interface ZFileReaderOptions {
  /** Bytes of decompressed blocks kept for re-reads (default 2 MiB; 0 keeps none). */
  cacheSize?: number;
  /** Keep decompressed blocks under this shared budget instead (cacheSize is then not used). */
  budget?: MemoryBudget;
  /** Check per-block CRCs when the file has them (default true). */
  checkCrc?: boolean;
  /** Name used in errors (default `zfile(<source name>)`). */
  name?: string;
}

/** What `obd zfile info` shows: the authoritative fields plus derived figures. */
export interface ZFileInfo {
  algorithm: Algorithm;
  /** Effective codec level (the zstd level byte 0 means the reference's 3; LZ4 has none). */
  level: number;
  blockSize: number;
  /** Blocks carry a CRC. */
  crc: boolean;
  originalSize: number;
  blocks: number;
  indexOffset: number;
  indexCrc: number;
  dictSize: number;
  /** The header holds the final index fields (flags 0x1B, as `overlaybd-commit -z` writes). */
  headerOverwritten: boolean;
  /** Size of the compressed source (the zfile, without any tar wrapper). */
  compressedSize: number;
  /** Sum of stored block lengths. */
  storedBytes: number;
  /** compressedSize / originalSize. */
  ratio: number;
  header: ZFileHeader;
  trailer: ZFileHeader | null;
}

export interface VerifyOptions {
  /** Also decode every block (default true); false only checks CRCs, like `overlaybd-zfile --verify`. */
  decode?: boolean;
  /** Stop collecting after this many bad blocks (default 100); they are still counted. */
  maxErrors?: number;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
}

export interface VerifyReport {
  ok: boolean;
  blocks: number;
  /** Blocks whose CRC was checked. */
  crcChecked: number;
  /** Blocks decoded. */
  decoded: number;
  errorCount: number;
  errors: ZFileChecksumError[];
}

/** Compressed bytes fetched per source read (several blocks at once). */
const FETCH_MAX = 1 << 20;
/**
 * Compressed bytes per run of the synchronous path: what a file source reads synchronously
 * (SYNC_READ_MAX of SyncReadGate, src/io/fd-io.ts). A larger run is refused by its gate.
 */
const SYNC_RUN_MAX = 256 << 10;
/** Times a bad block is evicted from the source and fetched again before the error stands. */
const BAD_BLOCK_RETRIES = 3;
/** Chunk of the jump table read per request while opening. */
const TABLE_CHUNK = 1 << 20;

/** True when `src` starts with a ZFile header (magic and header flag; 512 bytes read). */
export async function isZFile(src: ByteSource): Promise<boolean> {
  const n = Math.min(HT_SPACE, src.size);
  if (n < 40) return false;
  const b = new Uint8Array(n);
  await readExact(src, b, 0);
  return hasZFileMagic(b) && (b[32]! & FLAG_HEADER) !== 0;
}

/**
 * Compressed bytes of the synchronous read path, shared by every reader (nothing else runs
 * while one uses it), so a stack of many layers holds one, sized to the largest run read.
 */
let scratch = Buffer.alloc(0);

/**
 * Buffers of FETCH_MAX bytes for large runs of the asynchronous path (whole-file reads fetch
 * run after run), reused once a run is decoded; small runs get buffers of their own size.
 */
const runBuffers: Buffer[] = [];
const RUN_BUFFERS_KEPT = 4;
const RUN_POOL_MIN = 64 << 10;

interface Deferred {
  entry: CacheEntry;
  resolve: (d: Uint8Array) => void;
  reject: (e: unknown) => void;
}

export class ZFileReader implements ByteSource {
  readonly name: string;
  /** Uncompressed size. */
  readonly size: number;
  /** The compressed bytes (a file, a tar member, a remote blob). */
  readonly source: ByteSource;
  readonly header: ZFileHeader;
  /** The trailer, when it could be read (always, unless the header was overwritten and the trailer is damaged). */
  readonly trailer: ZFileHeader | null;
  readonly table: BlockTable;
  readonly blockSize: number;
  readonly algorithm: Algorithm;
  /** Blocks carry a CRC. */
  readonly crc: boolean;
  readonly #fields: ZFileHeader;
  readonly #codec: BlockCodec;
  readonly #checkCrc: boolean;
  readonly #cache: BlockCache;
  #closed = false;

  private constructor(src: ByteSource, header: ZFileHeader, trailer: ZFileHeader | null, fields: ZFileHeader, table: BlockTable, opts: ZFileReaderOptions) {
    this.source = src;
    this.name = opts.name ?? `zfile(${src.name})`;
    this.header = header;
    this.trailer = trailer;
    this.#fields = fields;
    this.table = table;
    this.size = fields.originalSize;
    this.blockSize = fields.blockSize;
    this.algorithm = algorithmName(fields.algo)!;
    this.crc = fields.verify;
    this.#codec = createCodec(fields.algo, fields.level);
    this.#checkCrc = opts.checkCrc ?? true;
    const cacheBytes = opts.cacheSize ?? 2 << 20;
    this.#cache = new BlockCache(cacheBytes <= 0 ? 0 : Math.max(4, Math.floor(cacheBytes / fields.blockSize)), fields.blockSize, opts.budget);
  }

  /**
   * Validates the zfile in `src` and loads its jump table. The reader takes ownership of
   * `src` (close() closes it) but does not close it when opening fails.
   */
  static async open(src: ByteSource, opts: ZFileReaderOptions = {}): Promise<ZFileReader> {
    const file = src.name;
    if (src.size < 2 * HT_SPACE) throw new ZFileFormatError(file, 'size', `${src.size} bytes is too small for a zfile (header and trailer need ${2 * HT_SPACE})`);
    const headRaw = await readAt(src, 0, HT_SPACE);
    const header = parseHeader(headRaw, file, 0);
    if (!(header.flags & FLAG_HEADER)) throw new ZFileFormatError(file, 'header-flags', `flags 0x${header.flags.toString(16)} lack the header bit`, 32);
    if (!(header.flags & FLAG_DATA)) throw new ZFileFormatError(file, 'header-flags', `flags 0x${header.flags.toString(16)} lack the data-file bit`, 32);
    checkDigest(headRaw, header, file, 0, 'header');

    const trailerAt = src.size - HT_SPACE;
    const overwritten = (header.flags & FLAG_OVERWRITTEN) !== 0;
    let trailer: ZFileHeader | null = null;
    try {
      const raw = await readAt(src, trailerAt, HT_SPACE);
      trailer = parseHeader(raw, file, trailerAt);
      const bad = trailer.flags & FLAG_HEADER || !(trailer.flags & FLAG_DATA) || !(trailer.flags & FLAG_SEALED);
      if (bad) throw new ZFileFormatError(file, 'trailer-flags', `trailer flags 0x${trailer.flags.toString(16)} must be data + sealed without the header bit`, trailerAt + 32);
      checkDigest(raw, trailer, file, trailerAt, 'trailer');
    } catch (e) {
      // An overwritten header is self-sufficient (the reference never reads the trailer then).
      if (!overwritten) throw e;
      trailer = null;
    }
    const fields = overwritten ? header : trailer!;
    const fieldsAt = overwritten ? 0 : trailerAt;
    validateCodecFields(fields, file, fieldsAt);
    if (!overwritten) {
      for (const [what, a, b] of [
        ['block size', header.blockSize, fields.blockSize],
        ['algorithm', header.algo, fields.algo],
        ['verify', Number(header.verify), Number(fields.verify)],
      ] as const) {
        if (a !== b) throw new ZFileFormatError(file, 'header-trailer', `header ${what} ${a} differs from trailer ${what} ${b}`, trailerAt);
      }
    }
    validateIndexFields(fields, file, fieldsAt, trailerAt);

    const raw = new Uint8Array(fields.indexSize * 4);
    const reads: Promise<void>[] = [];
    for (let at = 0; at < raw.length; at += TABLE_CHUNK) {
      reads.push(readExact(src, raw.subarray(at, Math.min(at + TABLE_CHUNK, raw.length)), fields.indexOffset + at));
    }
    await Promise.all(reads);
    if (fields.flags & FLAG_DIGEST) {
      const crc = rawCrc32c(raw, 0);
      if (crc !== fields.indexCrc) {
        throw new ZFileChecksumError(file, 'index-crc', -1, fields.indexOffset, `jump table CRC mismatch: stored ${hex(fields.indexCrc)}, computed ${hex(crc)}`);
      }
    }
    const table = BlockTable.fromBytes(raw, file, fields.indexOffset, {
      start: HT_SPACE + fields.dictSize,
      end: fields.indexOffset,
      minLength: 1 + (fields.verify ? CRC_SIZE : 0),
      maxLength: maxStoredBlock(fields.blockSize),
    });
    return new ZFileReader(src, header, trailer, fields, table, opts);
  }

  get blockCount(): number {
    return this.table.count;
  }

  get info(): ZFileInfo {
    const f = this.#fields;
    return {
      algorithm: this.algorithm,
      level: this.algorithm === 'zstd' ? f.level || ZSTD_DEFAULT_LEVEL : 0,
      blockSize: f.blockSize,
      crc: f.verify,
      originalSize: f.originalSize,
      blocks: f.indexSize,
      indexOffset: f.indexOffset,
      indexCrc: f.indexCrc,
      dictSize: f.dictSize,
      headerOverwritten: (this.header.flags & FLAG_OVERWRITTEN) !== 0,
      compressedSize: this.source.size,
      storedBytes: f.indexOffset - HT_SPACE - f.dictSize,
      ratio: f.originalSize === 0 ? 0 : this.source.size / f.originalSize,
      header: this.header,
      trailer: this.trailer,
    };
  }

  /** Where block `i` is stored in the source: [offset, offset + length). */
  blockRange(i: number): { offset: number; length: number } {
    return { offset: this.table.offset(i), length: this.table.length(i) };
  }

  read(buf: Uint8Array, offset: number): Promise<number> {
    if (this.#closed) return Promise.reject(new ClosedError(this.name));
    // A bad offset would index the jump table outside it: refused here, sources have no ops layer.
    if (!isOffset(offset)) return Promise.reject(new OutOfRangeError(this.name, offset, buf.length, this.size));
    const n = readable(buf, offset, this.size).length;
    if (n === 0) return Promise.resolve(0);
    return this.#read(buf, offset, n, 0);
  }

  #read(buf: Uint8Array, offset: number, n: number, attempt: number): Promise<number> {
    let p: Promise<number>;
    try {
      const sync = this.#readSync(buf, offset);
      if (sync !== undefined) return Promise.resolve(sync);
      const done = this.#readRange(n === buf.length ? buf : buf.subarray(0, n), offset);
      p = done ? done.then(() => n) : Promise.resolve(n);
    } catch (e) {
      p = Promise.reject(e);
    }
    if (attempt >= BAD_BLOCK_RETRIES || !this.source.evict) return p;
    return p.catch((e: unknown) => {
      if (!this.#refetchable(e)) throw e;
      const { offset: at, length } = this.blockRange(e.block);
      return this.source.evict!(at, length).then(() => this.#read(buf, offset, n, attempt + 1));
    });
  }

  /**
   * A bad block CRC or undecodable block read through a source that can evict is fetched
   * again (up to 3 times, as the reference does): the stored copy may be a corrupt download.
   */
  #refetchable(e: unknown): e is ZFileChecksumError {
    return e instanceof ZFileChecksumError && e.block >= 0 && (e.kind === 'block-crc' || e.kind === 'block-decode') && this.source.evict !== undefined;
  }

  /**
   * Serves a read without a promise when every block it needs is decoded in the cache or the
   * source can read synchronously (a file in the page cache); undefined otherwise, and
   * whenever an asynchronous read of one of its blocks is in flight (read() then waits for it)
   * or a bad block might be fetched again (read() retries).
   */
  tryReadSync(buf: Uint8Array, offset: number): number | undefined {
    if (this.#closed) throw new ClosedError(this.name);
    try {
      return this.#readSync(buf, offset);
    } catch (e) {
      if (this.#refetchable(e)) return undefined;
      throw e;
    }
  }

  #readSync(buf: Uint8Array, offset: number): number | undefined {
    if (!isOffset(offset)) return undefined;
    const out = readable(buf, offset, this.size);
    const n = out.length;
    if (n === 0) return 0;
    const bs = this.blockSize;
    const first = Math.floor(offset / bs);
    const last = Math.floor((offset + n - 1) / bs);
    for (let i = first; i <= last; i++) {
      const e = this.#cache.get(i);
      if (e && !e.data) return undefined;
    }
    const src = this.source;
    for (let i = first; i <= last; ) {
      const e = this.#cache.get(i);
      if (e?.data) {
        copyPart(i * bs, e.data, out, offset);
        i++;
        continue;
      }
      if (!src.tryReadSync) return undefined;
      const j = this.#runEnd(i, last, SYNC_RUN_MAX);
      const bytes = this.table.offset(j) + this.table.length(j) - this.table.offset(i);
      if (scratch.length < bytes) scratch = Buffer.allocUnsafe(2 ** Math.ceil(Math.log2(bytes)));
      const raw = scratch.subarray(0, bytes);
      const at = this.table.offset(i);
      const got = src.tryReadSync(raw, at);
      if (got === undefined) return undefined;
      if (got !== bytes) throw new ShortReadError(src.name, at, bytes, got);
      for (let k = i, p = 0; k <= j; k++) {
        const len = this.table.length(k);
        const start = k * bs;
        const blockLen = Math.min(bs, this.size - start);
        if (start >= offset && start + blockLen <= offset + n) {
          this.#decode(k, raw, p, len, out.subarray(start - offset, start - offset + blockLen));
        } else {
          const block = this.#cache.take(blockLen);
          this.#decode(k, raw, p, len, block);
          this.#cache.put(k, block);
          copyPart(start, block, out, offset);
        }
        p += len;
      }
      i = j + 1;
    }
    return n;
  }

  /** Starts the fetches and copies for `out`; returns undefined when the cache served it all. */
  #readRange(out: Uint8Array, offset: number): Promise<void> | undefined {
    const bs = this.blockSize;
    const last = Math.floor((offset + out.length - 1) / bs);
    let tasks: Promise<void>[] | undefined;
    let only: Promise<void> | undefined;
    for (let i = Math.floor(offset / bs); i <= last; ) {
      let task: Promise<void>;
      const e = this.#cache.get(i);
      if (e) {
        if (e.data) {
          copyPart(i * bs, e.data, out, offset);
          i++;
          continue;
        }
        const at = i * bs;
        task = e.promise.then((d) => copyPart(at, d, out, offset));
        i++;
      } else {
        const j = this.#runEnd(i, last);
        task = this.#fetchRun(i, j, out, offset);
        i = j + 1;
      }
      if (!only) only = task;
      else (tasks ??= [only]).push(task);
    }
    if (!tasks) return only;
    return settleAll(tasks);
  }

  /**
   * The last block of a run from `i`: uncached neighbours up to `last`, at most `max` stored
   * bytes. Synchronous runs stay within what a file source reads synchronously: a larger one
   * would be refused and the whole read, with what it had already decoded, done again async.
   */
  #runEnd(i: number, last: number, max = FETCH_MAX): number {
    let j = i;
    let bytes = this.table.length(i);
    while (j < last && !this.#cache.has(j + 1) && bytes + this.table.length(j + 1) <= max) bytes += this.table.length(++j);
    return j;
  }

  /** Fetches blocks i..j in one source read and decodes them into `out` (or the cache). */
  async #fetchRun(i: number, j: number, out: Uint8Array, offset: number): Promise<void> {
    const bs = this.blockSize;
    const end = offset + out.length;
    let pending: Map<number, Deferred> | undefined;
    for (const k of i === j ? [i] : [i, j]) {
      const start = k * bs;
      if (start >= offset && Math.min(start + bs, this.size) <= end) continue;
      let resolve!: (d: Uint8Array) => void;
      let reject!: (e: unknown) => void;
      const promise = new Promise<Uint8Array>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      promise.catch(() => {});
      (pending ??= new Map()).set(k, { entry: this.#cache.addPending(k, promise), resolve, reject });
    }
    let run: Buffer | undefined;
    try {
      const at = this.table.offset(i);
      const bytes = this.table.offset(j) + this.table.length(j) - at;
      run = bytes > RUN_POOL_MIN && bytes <= FETCH_MAX ? (runBuffers.pop() ?? Buffer.allocUnsafe(FETCH_MAX)) : Buffer.allocUnsafe(bytes);
      const raw = run.subarray(0, bytes);
      await readExact(this.source, raw, at);
      if (this.#closed) throw new ClosedError(this.name);
      for (let k = i, p = 0; k <= j; k++) {
        const len = this.table.length(k);
        const start = k * bs;
        const blockLen = Math.min(bs, this.size - start);
        const d = pending?.get(k);
        const target = d ? this.#cache.take(blockLen) : out.subarray(start - offset, start - offset + blockLen);
        this.#decode(k, raw, p, len, target);
        p += len;
        if (d) {
          this.#cache.complete(k, d.entry, target);
          pending!.delete(k);
          d.resolve(target);
          copyPart(start, target, out, offset);
        }
      }
    } catch (e) {
      if (pending) {
        for (const [k, d] of pending) {
          this.#cache.drop(k, d.entry);
          d.reject(e);
        }
      }
      throw e;
    } finally {
      if (run?.length === FETCH_MAX && runBuffers.length < RUN_BUFFERS_KEPT) runBuffers.push(run);
    }
  }

  /**
   * CRC-checks and decodes stored block `k`, `len` bytes at `at` of `raw`, into `target`
   * (exactly its decoded size). One view of the compressed bytes serves the CRC and the codec:
   * this runs once per block, and each view is an allocation.
   */
  #decode(k: number, raw: Uint8Array, at: number, len: number, target: Uint8Array, checkCrc = this.#checkCrc): void {
    const comp = raw.subarray(at, at + (this.crc ? len - CRC_SIZE : len));
    if (this.crc && checkCrc) this.#checkBlockCrc(k, raw, at + comp.length, comp, len);
    const got = this.#codec.decompress(comp, target);
    if (got !== target.length) {
      const why = got < 0 ? `${this.algorithm} data is corrupt` : `decoded ${got} bytes, expected ${target.length}`;
      throw new ZFileChecksumError(this.source.name, 'block-decode', k, this.table.offset(k), `${why} (stored block of ${len} bytes)`);
    }
  }

  /** Checks `comp` (block `k`, stored in `len` bytes) against the CRC stored at `crcAt` of `raw`. */
  #checkBlockCrc(k: number, raw: Uint8Array, crcAt: number, comp: Uint8Array, len: number): void {
    const want = (raw[crcAt]! | (raw[crcAt + 1]! << 8) | (raw[crcAt + 2]! << 16) | (raw[crcAt + 3]! << 24)) >>> 0;
    const got = blockCrc(comp);
    if (got !== want) {
      throw new ZFileChecksumError(this.source.name, 'block-crc', k, this.table.offset(k), `CRC mismatch: stored ${hex(want)}, computed ${hex(got)} (stored block of ${len} bytes)`);
    }
  }

  /**
   * Checks every block: its CRC when present and, unless `decode` is false, that it decodes to
   * its exact size. Bad blocks are collected, not thrown; source read failures are thrown.
   */
  async verify(opts: VerifyOptions = {}): Promise<VerifyReport> {
    if (this.#closed) throw new ClosedError(this.name);
    const decode = opts.decode ?? true;
    const maxErrors = opts.maxErrors ?? 100;
    const report: VerifyReport = { ok: true, blocks: this.blockCount, crcChecked: 0, decoded: 0, errorCount: 0, errors: [] };
    const scratch = new Uint8Array(this.blockSize);
    const runs: [number, number][] = [];
    for (let i = 0; i < this.blockCount; ) {
      let j = i;
      let bytes = this.table.length(i);
      while (j + 1 < this.blockCount && bytes + this.table.length(j + 1) <= 4 * FETCH_MAX) bytes += this.table.length(++j);
      runs.push([i, j]);
      i = j + 1;
    }
    const fetch = ([i, j]: [number, number]) => {
      const at = this.table.offset(i);
      return readAt(this.source, at, this.table.offset(j) + this.table.length(j) - at);
    };
    let next = runs.length > 0 ? fetch(runs[0]!) : undefined;
    try {
      for (let r = 0; r < runs.length; r++) {
        const raw = await next!;
        next = r + 1 < runs.length ? fetch(runs[r + 1]!) : undefined;
        const [i, j] = runs[r]!;
        for (let k = i, p = 0; k <= j; k++) {
          const len = this.table.length(k);
          const at = p;
          p += len;
          try {
            if (this.crc) {
              this.#checkBlockCrc(k, raw, at + len - CRC_SIZE, raw.subarray(at, at + len - CRC_SIZE), len);
              report.crcChecked++;
            }
            if (decode) {
              this.#decode(k, raw, at, len, scratch.subarray(0, Math.min(this.blockSize, this.size - k * this.blockSize)), false);
              report.decoded++;
            }
          } catch (e) {
            if (!(e instanceof ZFileChecksumError)) throw e;
            report.errorCount++;
            if (report.errors.length < maxErrors) report.errors.push(e);
          }
        }
        opts.onProgress?.(Math.min(this.size, (j + 1) * this.blockSize), this.size);
      }
    } catch (e) {
      next?.catch(() => {});
      throw e;
    }
    report.ok = report.errorCount === 0;
    return report;
  }

  /** The check `obd verify` runs: every block's CRC where they are stored, else a decode of every block. */
  async checkIntegrity(): Promise<IntegrityReport> {
    const z = await this.verify({ decode: !this.crc });
    if (z.ok) return { ok: true, detail: `${z.blocks} blocks, ${z.crcChecked} CRCs checked${z.decoded ? `, ${z.decoded} decoded` : ''}` };
    return { ok: false, detail: `${z.errorCount} bad blocks: ${z.errors.slice(0, 3).map((e) => e.message).join('; ')}` };
  }

  /** Drops cached blocks and closes the source. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#cache.clear();
    await this.source.close();
  }
}

/** Copies the part of a block (starting at byte `blockStart`) that falls in out's range. */
function copyPart(blockStart: number, data: Uint8Array, out: Uint8Array, offset: number): void {
  const from = Math.max(offset, blockStart);
  const to = Math.min(offset + out.length, blockStart + data.length);
  if (to > from) out.set(data.subarray(from - blockStart, to - blockStart), from - offset);
}
