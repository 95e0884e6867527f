/**
 * Flattening any block device into a raw disk image. Holes, zeroed extents and all-zero
 * chunks are skipped so the output is sparse; the file is sized with ftruncate.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { wrapFsError } from '../io/file.ts';
import { writeFull } from '../io/sink.ts';
import type { BlockDevice } from '../io/types.ts';
import { isZero } from '../io/util.ts';

export interface ExportStats {
  size: number;
  /** Bytes actually written (non-zero data). */
  written: number;
}

const CHUNK = 1 << 20;

export async function exportRaw(dev: BlockDevice, outPath: string, onProgress?: (done: number, total: number) => void): Promise<ExportStats> {
  let fh;
  try {
    fh = await open(outPath, 'w');
  } catch (e) {
    throw wrapFsError(outPath, e);
  }
  let written = 0;
  try {
    const buf = new Uint8Array(CHUNK);
    for (let off = 0; off < dev.size; off += CHUNK) {
      const n = Math.min(CHUNK, dev.size - off);
      const exts = await dev.extents(off, n);
      if (exts.every((e) => e.kind !== 'data')) {
        onProgress?.(off + n, dev.size);
        continue;
      }
      const view = buf.subarray(0, n);
      await dev.read(view, off);
      // Write only the 64 KiB pieces that hold something, so zero data stays sparse too.
      for (let p = 0; p < n; p += 65536) {
        const piece = view.subarray(p, Math.min(n, p + 65536));
        if (isZero(piece)) continue;
        await writeFull(fh, piece, off + p);
        written += piece.length;
      }
      onProgress?.(off + n, dev.size);
    }
    await fh.truncate(dev.size);
  } finally {
    await fh.close();
  }
  return { size: dev.size, written };
}

/** sha256 (hex) of a device's whole contents, read `chunk` bytes at a time. */
export async function sha256Device(dev: BlockDevice, chunk = 4 << 20): Promise<string> {
  const h = createHash('sha256');
  const buf = new Uint8Array(chunk);
  for (let off = 0; off < dev.size; off += chunk) {
    const view = buf.subarray(0, Math.min(chunk, dev.size - off));
    await dev.read(view, off);
    h.update(view);
  }
  return h.digest('hex');
}
