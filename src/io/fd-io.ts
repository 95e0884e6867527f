/**
 * Positional reads and writes on a raw file descriptor through the callback fs API. The
 * FileHandle promise methods cost several times more per call (measured: 16k scattered
 * 4 KiB reads take ~70–150 ms through FileHandle.read, ~19 ms through fs.read), which
 * dominates small-block commits and NBD-sized I/O.
 */
import { read, readSync, write, writeSync } from 'node:fs';
import { msNow } from './clock.ts';

function readOnce(fd: number, buf: Uint8Array, at: number, len: number, pos: number): Promise<number> {
  return new Promise((resolve, reject) => read(fd, buf, at, len, pos, (e, n) => (e ? reject(e) : resolve(n))));
}

/** Reads into all of `buf` from `pos`, stopping early only at end of file; resolves the count. */
export async function preadFull(fd: number, buf: Uint8Array, pos: number): Promise<number> {
  let done = await readOnce(fd, buf, 0, buf.length, pos);
  while (done < buf.length) {
    const n = await readOnce(fd, buf, done, buf.length - done, pos + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}

/**
 * Writes all of `buf` at `pos`. One promise and one callback per call whatever the number of
 * short writes: this is every NBD write's path, where each extra async frame is garbage.
 */
export function pwriteFull(fd: number, buf: Uint8Array, pos: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let done = 0;
    const step = (e: NodeJS.ErrnoException | null, n: number): void => {
      if (e) return reject(e);
      done += n;
      if (done < buf.length) write(fd, buf, done, buf.length - done, pos + done, step);
      else resolve();
    };
    write(fd, buf, 0, buf.length, pos, step);
  });
}

/** Synchronous pwriteFull, for a thread whose only job is the write (a snapshot's background commit). */
export function pwriteFullSync(fd: number, buf: Uint8Array, pos: number): void {
  let done = 0;
  while (done < buf.length) done += writeSync(fd, buf, done, buf.length - done, pos + done);
}

/** Synchronous readFull, for batch jobs (see copy.ts) where per-call cost dominates. */
export function preadFullSync(fd: number, buf: Uint8Array, pos: number): number {
  return preadRangeSync(fd, buf, 0, buf.length, pos);
}

/** preadFullSync into buf[at, at + length), for callers that would otherwise make a view per read. */
function preadRangeSync(fd: number, buf: Uint8Array, at: number, length: number, pos: number): number {
  let done = 0;
  while (done < length) {
    const n = readSync(fd, buf, at + done, length - done, pos + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}

/**
 * SyncReadGate.readAt times one call in this many: a clock read costs 0.1–0.3 µs, two per
 * 2 µs pread were a fifth of a commit's 16k reads (measured).
 */
const READ_SAMPLE = 4;
/** Reads up to this size may be served synchronously (see SyncReadGate). */
const SYNC_READ_MAX = 256 * 1024;
/** A synchronous read slower than this probably came from the disk, not the page cache. */
const SLOW_READ_MS = 0.25;
/** Slow reads in a row that mean the disk is being hit (one alone is a preemption or a fault). */
const SLOW_READ_RUN = 4;
/**
 * Writes up to this size may be synchronous (see SyncWriteGate). Into the page cache a 64 KiB
 * pwrite costs 12–20 µs, about what handing it to the thread pool costs the calling thread
 * alone (20–30 µs, measured on tmpfs and ext4), so the event loop is never held longer than
 * the dispatch would have held it; larger writes go to the pool, where they overlap other work.
 */
const SYNC_WRITE_MAX = 64 * 1024;
/** A write slower than this was throttled (dirty-page write-back) or faulted, not a memcpy. */
const SLOW_WRITE_MS = 1;
/** One throttled write is enough: the next one would be throttled too, on the event loop. */
const SLOW_WRITE_RUN = 1;
/** How long I/O stays asynchronous once it turned slow. */
const ASYNC_BACKOFF_MS = 1000;

/**
 * Decides when small file I/O may be synchronous: whether a call fits, and after a run of
 * slow calls, a second of asynchronous I/O so a slow disk stalls the event loop a few calls
 * at most. Each gate (one per kind of I/O on one file) keeps its own state.
 */
class SyncGate {
  #until: number;
  #slowRun = 0;
  readonly #max: number;
  readonly #slowMs: number;
  readonly #run: number;
  readonly #now: () => number;
  constructor(max: number, slowMs: number, run: number, enabled: boolean, now: () => number) {
    this.#until = enabled ? 0 : Infinity;
    this.#max = max;
    this.#slowMs = slowMs;
    this.#run = run;
    this.#now = now;
  }
  /** The start time when a call of `length` bytes may go synchronous now, else undefined. */
  protected admit(length: number): number | undefined {
    if (length > this.#max) return undefined;
    // One clock read serves both the back-off check and the timing (each costs ~45 ns).
    const t0 = this.#now();
    return this.#until > t0 ? undefined : t0;
  }
  /** Whether a call of `length` bytes may go synchronous, without reading the clock while not backing off. */
  protected admitUntimed(length: number): boolean {
    if (length > this.#max) return false;
    return this.#until === 0 || this.admit(length) !== undefined;
  }
  /** Records how long the synchronous call begun at `t0` took. */
  protected done(t0: number): void {
    const t1 = this.#now();
    if (t1 - t0 <= this.#slowMs) this.#slowRun = 0;
    else if (++this.#slowRun >= this.#run) {
      this.#until = t1 + ASYNC_BACKOFF_MS;
      this.#slowRun = 0;
    }
  }
}

/**
 * Decides when a file read may be synchronous. From the page cache a pread costs ~1 µs where
 * a thread-pool round trip costs ~10–30 µs, so small reads go synchronous. Several slow reads
 * in a row mean the disk is being hit instead (a single slow one is a preemption or a page
 * fault); reads then go to the thread pool for a second.
 */
export class SyncReadGate extends SyncGate {
  /** readAt calls since the last timed one. */
  #unsampled = 0;
  /** `now` (milliseconds) is replaceable so tests can make reads look slow. */
  constructor(enabled = true, now: () => number = msNow) {
    super(SYNC_READ_MAX, SLOW_READ_MS, SLOW_READ_RUN, enabled, now);
  }
  /** Reads `length` bytes synchronously into `buf` at `pos`, or returns undefined to go async. */
  read(fd: number, buf: Uint8Array, pos: number): number | undefined {
    const t0 = this.admit(buf.length);
    if (t0 === undefined) return undefined;
    const n = preadFullSync(fd, buf, pos);
    this.done(t0);
    return n;
  }

  /**
   * read() into buf[at, at + length) without a view, for loops that read thousands of pieces
   * back to back (commit, merge). Only one call in READ_SAMPLE is timed, so a disk being hit is
   * noticed after SLOW_READ_RUN × READ_SAMPLE reads at most.
   */
  readAt(fd: number, buf: Uint8Array, at: number, length: number, pos: number): number | undefined {
    if (++this.#unsampled < READ_SAMPLE) {
      if (!this.admitUntimed(length)) return undefined;
      return preadRangeSync(fd, buf, at, length, pos);
    }
    this.#unsampled = 0;
    const t0 = this.admit(length);
    if (t0 === undefined) return undefined;
    const n = preadRangeSync(fd, buf, at, length, pos);
    this.done(t0);
    return n;
  }
}

/**
 * Decides when a file write may be synchronous. A pwrite into the page cache is a memcpy
 * (4 KiB: ~4 µs synchronous against ~20–30 µs through the pool, whose worker also preempts
 * the event loop when both share a CPU). What the write promises is the same either way: the
 * bytes are in the page cache when it returns, durable only after a later fdatasync. A slow
 * write means the kernel is throttling dirty pages; writes then go to the pool for a second.
 */
export class SyncWriteGate extends SyncGate {
  /** `now` (milliseconds) is replaceable so tests can make writes look slow. */
  constructor(enabled = true, now: () => number = msNow) {
    super(SYNC_WRITE_MAX, SLOW_WRITE_MS, SLOW_WRITE_RUN, enabled, now);
  }
  /** Writes all of `buf` at `pos` synchronously and returns true, or returns false to go async. May throw. */
  write(fd: number, buf: Uint8Array, pos: number): boolean {
    const t0 = this.admit(buf.length);
    if (t0 === undefined) return false;
    try {
      pwriteFullSync(fd, buf, pos);
    } finally {
      this.done(t0);
    }
    return true;
  }
}
