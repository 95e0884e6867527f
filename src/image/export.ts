/**
 * Flattening any block device into a raw disk image. Holes, zeroed extents and all-zero
 * chunks are skipped so the output is sparse; the file is sized with ftruncate.
 */
import { pwriteFull } from '../io/fd-io.ts';
import { wrapFsError } from '../io/file.ts';
import { closeFd, ftruncateFd, openFd } from '../io/fs-async.ts';
import type { BlockDevice } from '../io/types.ts';
import { isZero } from '../io/util.ts';
import { WriteBehind } from '../io/write-behind.ts';

export interface ExportStats {
  size: number;
  /** Bytes actually written (non-zero data). */
  written: number;
}

/**
 * Bytes read from the device at a time: 1 MiB stays in the CPUs' caches from decode to pwrite
 * (10–25 % less wall time than 4 MiB, measured in-process).
 */
const CHUNK = 1 << 20;
/** Granularity of the zero check: all-zero pieces of this size stay holes in the output. */
const PIECE = 64 << 10;
/** Chunk writes in flight while the next chunk is read. */
const WRITES_IN_FLIGHT = 2;

/**
 * Writes the raw disk of `dev` to `outPath`. Reading (and decoding) a chunk overlaps writing
 * the ones before it, which go through the thread pool as one write per run of non-zero
 * pieces: a read from a file in the page cache decodes synchronously, so each write is handed
 * to the pool before the next read starts.
 */
export async function exportRaw(dev: BlockDevice, outPath: string, onProgress?: (done: number, total: number) => void): Promise<ExportStats> {
  let fd: number;
  try {
    fd = await openFd(outPath, 'w');
  } catch (e) {
    throw wrapFsError(outPath, e);
  }
  let written = 0;
  const behind = new WriteBehind(WRITES_IN_FLIGHT, Math.min(CHUNK, Math.max(dev.size, 1)));
  try {
    for (let off = 0; off < dev.size; off += CHUNK) {
      const n = Math.min(CHUNK, dev.size - off);
      const exts = await dev.extents(off, n);
      if (exts.some((e) => e.kind === 'data')) {
        const buf = await behind.next();
        const view = n === buf.length ? buf : buf.subarray(0, n);
        await dev.read(view, off);
        behind.push(writeNonZero(fd, view, off));
      }
      onProgress?.(off + n, dev.size);
    }
    written = await behind.drain();
    await ftruncateFd(fd, dev.size);
  } finally {
    await behind.settle();
    await closeFd(fd);
  }
  return { size: dev.size, written };
}

/** Writes the non-zero pieces of `view` (at `off` of the file), one write per run; resolves the bytes written. */
async function writeNonZero(fd: number, view: Uint8Array, off: number): Promise<number> {
  let written = 0;
  for (let p = 0; p < view.length; ) {
    let q = p;
    while (q < view.length && !isZero(view.subarray(q, Math.min(view.length, q + PIECE)))) q = Math.min(view.length, q + PIECE);
    if (q > p) {
      await pwriteFull(fd, view.subarray(p, q), off + p);
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
