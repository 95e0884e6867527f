/**
 * Flattening any block device into a raw disk image. Holes, zeroed extents and all-zero
 * chunks are skipped so the output is sparse; the file is sized with ftruncate.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { pwriteFullSync } from '../io/fd-io.ts';
import { wrapFsError } from '../io/file.ts';
import type { BlockDevice } from '../io/types.ts';
import { isZero } from '../io/util.ts';

export interface ExportStats {
  size: number;
  /** Bytes actually written (non-zero data). */
  written: number;
}

/**
 * Bytes read from the device at a time: 1 MiB stays in the CPU's cache from decode to pwrite
 * (5–12 % less CPU than 4 MiB, measured warm in-process).
 */
const CHUNK = 1 << 20;
/** Granularity of the zero check: all-zero pieces of this size stay holes in the output. */
const PIECE = 64 << 10;

/**
 * Writes the raw disk of `dev` to `outPath`. Chunks are written synchronously, one pwrite per
 * run of non-zero pieces: into the page cache that is a memcpy of bytes still in this CPU's
 * cache, where handing each write to the thread pool cost more CPU (another core copies them
 * cold) than the overlap with decoding saved, measured on a loaded 2-CPU machine. The event
 * loop gets a turn after each chunk, so signals and timers are not held off for the whole copy.
 */
export async function exportRaw(dev: BlockDevice, outPath: string, onProgress?: (done: number, total: number) => void): Promise<ExportStats> {
  let fh;
  try {
    fh = await open(outPath, 'w');
  } catch (e) {
    throw wrapFsError(outPath, e);
  }
  let written = 0;
  const buf = new Uint8Array(Math.min(CHUNK, Math.max(dev.size, 1)));
  try {
    for (let off = 0; off < dev.size; off += CHUNK) {
      const n = Math.min(CHUNK, dev.size - off);
      const exts = await dev.extents(off, n);
      if (exts.some((e) => e.kind === 'data')) {
        const view = n === buf.length ? buf : buf.subarray(0, n);
        await dev.read(view, off);
        written += writeNonZero(fh, view, off);
        await new Promise(setImmediate);
      }
      onProgress?.(off + n, dev.size);
    }
    await fh.truncate(dev.size);
  } finally {
    await fh.close();
  }
  return { size: dev.size, written };
}

/** Writes the non-zero pieces of `view` (at `off` of the file), one write per run; returns the bytes written. */
function writeNonZero(fh: FileHandle, view: Uint8Array, off: number): number {
  let written = 0;
  for (let p = 0; p < view.length; ) {
    let q = p;
    while (q < view.length && !isZero(view.subarray(q, Math.min(view.length, q + PIECE)))) q = Math.min(view.length, q + PIECE);
    if (q > p) {
      pwriteFullSync(fh.fd, view.subarray(p, q), off + p);
      written += q - p;
      p = q;
    } else {
      p += PIECE;
    }
  }
  return written;
}

/** sha256 (hex) of a device's whole contents, read `chunk` bytes at a time. */
export async function sha256Device(dev: BlockDevice, chunk = 4 << 20): Promise<string> {
  // Loaded on use: node:crypto is a noticeable part of a short command's start-up.
  const { createHash } = await import('node:crypto');
  const h = createHash('sha256');
  const buf = new Uint8Array(chunk);
  for (let off = 0; off < dev.size; off += chunk) {
    const view = buf.subarray(0, Math.min(chunk, dev.size - off));
    await dev.read(view, off);
    h.update(view);
  }
  return h.digest('hex');
}
