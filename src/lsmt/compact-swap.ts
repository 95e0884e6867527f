/**
 * The swap protocol of a writable layer's compaction (docs/format.md §2.13): how a new data +
 * index pair replaces the old one so that a crash at any point leaves one whole pair.
 *
 *   1. the new pair is written as `<data>.compact` + `<index>.compact` and synced;
 *   2. the marker `<data>.compact-swap` is created and synced: from here the new pair wins;
 *   3. `<data>.compact` is renamed over `<data>`, then `<index>.compact` over `<index>`;
 *      both directories are synced;
 *   4. the marker is removed.
 *
 * Opening a pair first runs `recoverSwap`: with the marker present, the renames still to do
 * are done (roll forward) and the marker removed; without it, leftover `.compact` files are
 * an unfinished compaction and are deleted (the old pair is whole).
 */
import { open, rename, rm, stat, writeFile } from 'node:fs/promises';
import { syncDirsOf } from '../io/atomic.ts';
import { wrapWriteError } from './io-errors.ts';

export interface SwapPaths {
  data: string;
  index: string;
  newData: string;
  newIndex: string;
  marker: string;
}

export function swapPaths(dataPath: string, indexPath: string): SwapPaths {
  return { data: dataPath, index: indexPath, newData: `${dataPath}.compact`, newIndex: `${indexPath}.compact`, marker: `${dataPath}.compact-swap` };
}

/** What opening found of an interrupted compaction. */
export type SwapRecovery = 'none' | 'rolled-forward' | 'discarded';

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

/** Finishes or discards an interrupted swap (see above). Only a writer (or an unlocked pair) may call it. */
export async function recoverSwap(dataPath: string, indexPath: string): Promise<SwapRecovery> {
  const p = swapPaths(dataPath, indexPath);
  try {
    if (await exists(p.marker)) {
      if (await exists(p.newData)) await rename(p.newData, p.data);
      if (await exists(p.newIndex)) await rename(p.newIndex, p.index);
      await syncDirsOf([p.data, p.index]);
      await rm(p.marker, { force: true });
      await syncDirsOf([p.marker]);
      return 'rolled-forward';
    }
    const leftovers = (await exists(p.newData)) || (await exists(p.newIndex));
    if (!leftovers) return 'none';
    await rm(p.newData, { force: true });
    await rm(p.newIndex, { force: true });
    return 'discarded';
  } catch (e) {
    throw wrapWriteError(dataPath, 'finishing an interrupted compaction', undefined, e);
  }
}

/** Step 2: from when this resolves, a crash leaves the new pair (already synced by the caller). */
export async function writeSwapMarker(p: SwapPaths): Promise<void> {
  try {
    await syncDirsOf([p.newData, p.newIndex]);
    await writeFile(p.marker, JSON.stringify({ data: p.newData, index: p.newIndex }) + '\n');
    const fh = await open(p.marker, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    await syncDirsOf([p.marker]);
  } catch (e) {
    await rm(p.marker, { force: true }).catch(() => {});
    throw wrapWriteError(p.marker, 'compaction: writing the swap marker', undefined, e);
  }
}

/** Steps 3–4, the same renames recoverSwap would finish. */
export async function finishSwap(p: SwapPaths): Promise<void> {
  let step = 'renaming the new files into place';
  try {
    await rename(p.newData, p.data);
    await rename(p.newIndex, p.index);
    await syncDirsOf([p.data, p.index]);
    step = 'removing the swap marker';
    await rm(p.marker, { force: true });
    await syncDirsOf([p.marker]);
  } catch (e) {
    throw wrapWriteError(p.data, `compaction: ${step}`, undefined, e);
  }
}
