/**
 * Flattening any block device into a raw disk image. Holes, zeroed extents and all-zero
 * chunks are skipped so the output is sparse; the file is sized with ftruncate.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { wrapFsError } from '../io/file.ts';
import { writeFull } from '../io/sink.ts';
import type { BlockDevice } from '../io/types.ts';
import { isZero } from '../io/util.ts';

export interface ExportStats {
  size: number;
  /** Bytes actually written (non-zero data). */
  written: number;
}

/** Bytes read from the device at a time; two such buffers alternate. */
const CHUNK = 4 << 20;
/** Granularity of the zero check: all-zero pieces of this size stay holes in the output. */
const PIECE = 64 << 10;

/**
 * Writes the raw disk of `dev` to `outPath`. Reading (and decoding) the next chunk overlaps
 * writing the last one, which goes through the thread pool as one write per run of non-zero
 * pieces, so a decoding CPU and a writing one both stay busy.
 */
export async function exportRaw(dev: BlockDevice, outPath: string, onProgress?: (done: number, total: number) => void): Promise<ExportStats> {
  let fh;
  try {
    fh = await open(outPath, 'w');
  } catch (e) {
    throw wrapFsError(outPath, e);
  }
  let written = 0;
  const bufs = [new Uint8Array(CHUNK), new Uint8Array(CHUNK)];
  let writing: Promise<void> | undefined;
  try {
    for (let off = 0, k = 0; off < dev.size; off += CHUNK) {
      const n = Math.min(CHUNK, dev.size - off);
      const exts = await dev.extents(off, n);
      if (exts.some((e) => e.kind === 'data')) {
        const view = bufs[k++ & 1]!.subarray(0, n);
        await dev.read(view, off);
        // The previous chunk's writes used the other buffer; only one chunk is in flight.
        await writing;
        writing = writeNonZero(fh, view, off).then((w) => {
          written += w;
        });
        // Observed at once so a failed write waits for the next await instead of crashing.
        writing.catch(() => {});
      }
      onProgress?.(off + n, dev.size);
    }
    await writing;
    await fh.truncate(dev.size);
  } finally {
    await writing?.catch(() => {});
    await fh.close();
  }
  return { size: dev.size, written };
}

/** Writes the non-zero pieces of `view` (at `off` of the file), one write per run; resolves the bytes written. */
async function writeNonZero(fh: FileHandle, view: Uint8Array, off: number): Promise<number> {
  let written = 0;
  for (let p = 0; p < view.length; ) {
    let q = p;
    while (q < view.length && !isZero(view.subarray(q, Math.min(view.length, q + PIECE)))) q = Math.min(view.length, q + PIECE);
    if (q > p) {
      await writeFull(fh, view.subarray(p, q), off + p);
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
