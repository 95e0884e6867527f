import { InvalidArgumentError, OutOfRangeError, ShortReadError } from './errors.ts';
import type { ByteSource } from './types.ts';

/** Reads exactly `buf.length` bytes at `offset` or throws a ShortReadError. */
export async function readExact(src: ByteSource, buf: Uint8Array, offset: number): Promise<void> {
  const n = await src.read(buf, offset);
  if (n !== buf.length) throw new ShortReadError(src.name, offset, buf.length, n);
}

/** Reads `length` bytes at `offset` into a new buffer. */
export async function readAt(src: ByteSource, offset: number, length: number): Promise<Uint8Array> {
  const buf = new Uint8Array(length);
  await readExact(src, buf, offset);
  return buf;
}

/**
 * Waits for every promise, then rethrows the first failure. Unlike Promise.all it never
 * settles while some reads may still be writing into a caller's buffer — which, once the
 * caller reuses that buffer for another request, would hand out someone else's bytes.
 */
export async function settleAll(jobs: readonly Promise<unknown>[]): Promise<void> {
  const settled = await Promise.allSettled(jobs);
  for (const s of settled) if (s.status === 'rejected') throw s.reason;
}

/**
 * For a loop that starts several reads into one buffer and then fails synchronously: waits
 * for the reads already started (their own failures are absorbed), then rejects with `error`.
 * Rejecting at once would let the caller reuse the buffer while those reads still fill it.
 */
export function failAfter(jobs: readonly Promise<unknown>[] | undefined, error: unknown): Promise<never> {
  if (!jobs || jobs.length === 0) return Promise.reject(error);
  return Promise.allSettled(jobs).then(() => {
    throw error;
  });
}

/**
 * Marks a read-ahead as observed: it is awaited only after other work (a write of the previous
 * chunk), and a failure meanwhile must not be an unhandled rejection that kills the process.
 * The returned promise still rejects for whoever awaits it.
 */
export function ahead<T>(p: Promise<T>): Promise<T> {
  p.catch(() => {});
  return p;
}

/** True when `offset` is a byte offset anything can be read at: a whole number, not negative, exact in a double. */
export function isOffset(offset: number): boolean {
  return Number.isSafeInteger(offset) && offset >= 0;
}

/** True when [offset, offset + length) is a whole-byte range inside `size` bytes. */
export function inRange(offset: number, length: number, size: number): boolean {
  return isOffset(offset) && isOffset(length) && offset + length <= size;
}

/**
 * The one range check of a device request: throws OutOfRangeError unless
 * [offset, offset + length) lies inside the device. src/ops/device-ops.ts refuses bad
 * requests with the same predicate before a device sees them; a device calls this itself
 * only where it is also reached directly (see the comment at each call).
 */
export function checkRange(name: string, offset: number, length: number, size: number): void {
  if (!inRange(offset, length, size)) throw new OutOfRangeError(name, offset, length, size);
}

/**
 * The part of `buf` a read at `offset` of a `size`-byte source can fill: `buf` itself when it
 * fits, a shorter view at the end of the source, an empty one at or past it. Every source's
 * read clamps with this, so a short read means the end and nothing else.
 */
export function readable(buf: Uint8Array, offset: number, size: number): Uint8Array {
  const n = Math.max(0, Math.min(buf.length, size - offset));
  return n === buf.length ? buf : buf.subarray(0, n);
}

/** A window [base, base+size) of another source, e.g. a tar member. */
export class SliceSource implements ByteSource {
  readonly name: string;
  readonly size: number;
  readonly inner: ByteSource;
  readonly base: number;
  constructor(inner: ByteSource, base: number, size: number, name?: string) {
    if (base < 0 || size < 0 || base + size > inner.size) throw new OutOfRangeError(inner.name, base, size, inner.size);
    this.inner = inner;
    this.base = base;
    this.size = size;
    this.name = name ?? `${inner.name}[${base}+${size}]`;
  }
  read(buf: Uint8Array, offset: number): Promise<number> {
    const view = readable(buf, offset, this.size);
    if (view.length === 0) return Promise.resolve(0);
    return this.inner.read(view, this.base + offset);
  }
  tryReadSync(buf: Uint8Array, offset: number): number | undefined {
    const view = readable(buf, offset, this.size);
    if (view.length === 0) return 0;
    return this.inner.tryReadSync?.(view, this.base + offset);
  }
  async evict(offset: number, length: number): Promise<void> {
    await this.inner.evict?.(this.base + offset, length);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

/** Little-endian u64 as a number (exact below 2^53, which every offset and size here is). */
export function readU64(dv: DataView, off: number): number {
  return dv.getUint32(off, true) + dv.getUint32(off + 4, true) * 2 ** 32;
}

export function writeU64(dv: DataView, off: number, v: number): void {
  dv.setUint32(off, v >>> 0, true);
  dv.setUint32(off + 4, Math.floor(v / 2 ** 32), true);
}

/** The largest byte count that is a whole number of 512-byte sectors and exact in a double. */
/** The largest disk size: the biggest multiple of 512 below 2^53, so every offset and length is exact. */
export const MAX_DISK_SIZE = 2 ** 53 - 512;

/** Parses sizes such as `64G`, `512K`, `1.5M`, `4096` (binary units). */
export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?\s*$/i.exec(text);
  if (!m) throw new InvalidArgumentError(`not a size: "${text}" (examples: 4096, 64K, 10M, 64G, 1T)`);
  const mult = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50 }[m[2]!.toLowerCase()]!;
  const v = Number(m[1]) * mult;
  if (v > Number.MAX_SAFE_INTEGER) throw new InvalidArgumentError(`"${text}" is too large: sizes are below 8P (2^53 bytes); the largest disk is ${MAX_DISK_SIZE} bytes (8P - 512)`);
  if (!Number.isSafeInteger(v)) throw new InvalidArgumentError(`not a whole number of bytes: "${text}"`);
  return v;
}

/** A 32-bit value (a CRC, a digest) as 8 hex digits. */
export function hex(v: number): string {
  return (v >>> 0).toString(16).padStart(8, '0');
}

/** Formats a byte count as 1.5 MiB, etc. */
export function formatSize(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

const ZEROS = new Uint8Array(65536);

/** True when every byte of `buf` is zero (native memcmp against a zero page). */
export function isZero(buf: Uint8Array): boolean {
  for (let off = 0; off < buf.length; off += ZEROS.length) {
    const n = Math.min(ZEROS.length, buf.length - off);
    if (Buffer.compare(buf.subarray(off, off + n), ZEROS.subarray(0, n)) !== 0) return false;
  }
  return true;
}
