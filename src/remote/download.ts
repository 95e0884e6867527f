/**
 * Whole-blob downloads: resumable into a local file (pull, and background download into a
 * layer's dir) or into the cache through a lazy source. Either way the bytes are trusted
 * only after their sha256 equals the digest; rate limiting keeps a background download
 * from starving foreground reads.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, rename, rm, stat } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { FileSource } from '../io/file.ts';
import { writeFull } from '../io/sink.ts';
import { DigestMismatchError, ProtocolError } from './errors.ts';
import type { LazySource } from './lazy-source.ts';
import type { Repository } from './store.ts';

const WRITE_BATCH = 1 << 20;

/** Paces a byte stream to at most `bytesPerSec` (averaged since the start). */
export class RateLimiter {
  readonly bytesPerSec: number;
  #start = performance.now();
  #bytes = 0;
  constructor(bytesPerSec: number) {
    this.bytesPerSec = bytesPerSec;
  }
  async take(n: number, signal?: AbortSignal): Promise<void> {
    if (!(this.bytesPerSec > 0)) return;
    this.#bytes += n;
    const due = (this.#bytes / this.bytesPerSec) * 1000;
    const ahead = due - (performance.now() - this.#start);
    if (ahead > 1) await sleep(ahead, undefined, { signal });
  }
}

export interface DownloadOptions {
  /** Bytes per second (0 or absent = unlimited). */
  maxBytesPerSec?: number;
  onProgress?: (done: number, total: number) => void;
  signal?: AbortSignal;
}

/** sha256 of the first `length` bytes of a file. */
async function hashPrefix(file: string, length: number): Promise<ReturnType<typeof createHash>> {
  const hash = createHash('sha256');
  if (length > 0) for await (const c of createReadStream(file, { start: 0, end: length - 1, highWaterMark: 1 << 20 })) hash.update(c as Buffer);
  return hash;
}

/**
 * Downloads blob `digest` (`size` bytes) of `repo` to `dest`. Bytes go to `dest.download`
 * first; an interrupted download resumes from that file's length. The file is renamed to
 * `dest` only after its sha256 matched; a mismatch deletes it (the next try starts over).
 * Resolves false when `dest` already held the blob (its sha256 matched; nothing fetched).
 */
export async function downloadBlob(repo: Repository, digest: string, size: number, dest: string, opts: DownloadOptions = {}): Promise<boolean> {
  if (!digest.startsWith('sha256:')) throw new ProtocolError(repo.name, `cannot verify a ${digest.split(':')[0]} digest`);
  const existing = await stat(dest).catch(() => undefined);
  // A blob already present counts only when its bytes hash to the digest; a damaged one is replaced.
  if (existing?.isFile() && existing.size === size && 'sha256:' + (await hashPrefix(dest, size)).digest('hex') === digest) return false;
  const partial = `${dest}.download`;
  let have = (await stat(partial).catch(() => undefined))?.size ?? 0;
  if (have > size) {
    await rm(partial, { force: true });
    have = 0;
  }
  const hash = await hashPrefix(partial, have);
  const limiter = new RateLimiter(opts.maxBytesPerSec ?? 0);
  const fh = await open(partial, have > 0 ? 'r+' : 'w');
  let pos = have;
  try {
    opts.onProgress?.(pos, size);
    if (pos < size) {
      // Socket chunks are small; gather them so the file sees few large writes.
      const pending = Buffer.allocUnsafe(Math.min(WRITE_BATCH, size - pos));
      let fill = 0;
      const flush = async () => {
        if (fill === 0) return;
        await writeFull(fh, pending.subarray(0, fill), pos - fill);
        fill = 0;
      };
      for await (const chunk of repo.streamBlob(digest, pos)) {
        opts.signal?.throwIfAborted();
        if (pos + chunk.length > size) throw new ProtocolError(repo.name, `blob ${digest} is longer than its ${size} bytes`);
        hash.update(chunk);
        for (let at = 0; at < chunk.length; ) {
          const n = Math.min(chunk.length - at, pending.length - fill);
          pending.set(chunk.subarray(at, at + n), fill);
          fill += n;
          at += n;
          pos += n;
          if (fill === pending.length) await flush();
        }
        opts.onProgress?.(pos, size);
        await limiter.take(chunk.length, opts.signal);
      }
      await flush();
    }
    if (pos !== size) throw new ProtocolError(repo.name, `blob ${digest} ended at ${pos} of ${size} bytes`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  const actual = 'sha256:' + hash.digest('hex');
  if (actual !== digest) {
    await rm(partial, { force: true });
    throw new DigestMismatchError(`${repo.name} blob`, digest, actual);
  }
  await rename(partial, dest);
  return true;
}

/**
 * Reads every unit of `lazy` through its normal path (so the cache fills and in-flight
 * reads are shared), paced by the rate limit; then asks the cache entry to verify the
 * whole blob. Resolves true when the cache now holds the complete, digest-checked blob.
 */
export async function fillCache(lazy: LazySource, opts: DownloadOptions & { chunk?: number } = {}): Promise<boolean> {
  const chunk = Math.max(lazy.unit, opts.chunk ?? 1 << 20);
  const limiter = new RateLimiter(opts.maxBytesPerSec ?? 0);
  const buf = new Uint8Array(chunk);
  for (let pos = 0; pos < lazy.size; pos += chunk) {
    opts.signal?.throwIfAborted();
    if (lazy.isLocal) return true;
    const n = Math.min(chunk, lazy.size - pos);
    let held = true;
    for (let u = Math.floor(pos / lazy.unit); u <= Math.floor((pos + n - 1) / lazy.unit) && held; u++) held = lazy.store.has(u);
    if (held) continue;
    await lazy.read(buf.subarray(0, n), pos);
    opts.onProgress?.(pos + n, lazy.size);
    await limiter.take(n, opts.signal);
  }
  await lazy.settle();
  return (await lazy.store.disk?.checkComplete()) ?? false;
}

export interface BackgroundItem {
  lazy: LazySource;
  repo: Repository;
  digest: string;
  /** Download to this file (a layer dir's overlaybd.commit) and switch reads to it; else fill the cache. */
  dest?: string;
}

export interface BackgroundOptions extends DownloadOptions {
  /** Wait before starting (default 0). */
  delayMs?: number;
  /** Attempts per blob (default 5). */
  tries?: number;
  /** Called once per blob with its outcome. */
  onDone?: (item: BackgroundItem, error: Error | undefined) => void;
}

/**
 * Downloads the given layers one after another in the background. Returns a handle whose
 * `stop()` aborts and waits. Failures are retried `tries` times, then reported via onDone.
 */
export function startBackgroundDownload(items: BackgroundItem[], opts: BackgroundOptions = {}): { done: Promise<void>; stop(): Promise<void> } {
  const ctl = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, ctl.signal]) : ctl.signal;
  const run = async () => {
    if (opts.delayMs) await sleep(opts.delayMs, undefined, { signal });
    for (const item of items) {
      let error: Error | undefined;
      for (let attempt = 0; attempt < (opts.tries ?? 5); attempt++) {
        signal.throwIfAborted();
        try {
          if (item.dest) {
            await downloadBlob(item.repo, item.digest, item.lazy.size, item.dest, { ...opts, signal });
            await item.lazy.switchTo(await FileSource.open(item.dest));
          } else if (!(await fillCache(item.lazy, { ...opts, signal }))) {
            throw new DigestMismatchError(item.lazy.name, item.digest, 'a blob that failed verification');
          }
          error = undefined;
          break;
        } catch (e) {
          if (signal.aborted) throw e;
          error = e as Error;
        }
      }
      opts.onDone?.(item, error);
    }
  };
  const done = run().catch((e) => {
    if (!signal.aborted) throw e;
  });
  return {
    done,
    async stop() {
      ctl.abort();
      await done.catch(() => {});
    },
  };
}
