/**
 * Feeding a sorted mapping table into a SealedLayerWriter: the shared engine of commit and
 * merge. Data is read from each mapping's source in batches (many small reads in flight at
 * once, contiguous pieces joined into one read), and the next batch is read while the
 * current one is written, so a commit of scattered 4 KiB writes is not one round trip per
 * mapping.
 *
 * Pieces a source can serve synchronously (tryReadSync: files in the page cache) are read
 * with blocking preads: a commit of 16k scattered 4 KiB pieces spends ~17 ms that way
 * against 30–60 ms through the thread pool on two cores. The event loop gets a turn after
 * every SYNC_SLICE bytes, so a long commit does not starve other work.
 *
 * Byte-exactness: the writer restarts its 32 KiB copy steps at every extent it is given, as
 * the reference restarts them at every source mapping, so each mapping is fed in pieces that
 * start at the mapping's start and are multiples of 32 KiB (except the last). A batch goes
 * to the writer as one run: its pieces' data lies back to back in the batch buffer.
 */
import { rm } from 'node:fs/promises';
import { ShortReadError } from '../io/errors.ts';
import { ahead, failAfter, settleAll } from '../io/util.ts';
import { FileSink } from '../io/sink.ts';
import type { ByteSink, ByteSource } from '../io/types.ts';
import { SECTOR } from './format.ts';
import type { MappingTable } from './table.ts';
import type { SealedLayerWriter } from './writer.ts';

/** Largest piece of one mapping read at once (a multiple of 32 KiB). */
const PIECE = 1 << 20;
/**
 * Bytes of data per batch. Small: each batch buffer is fresh memory, and page faults on 2 × 9 MiB
 * cost a commit of 64 MiB ~30 ms more CPU than 2 × 3 MiB (measured); the writes stay large.
 */
const BATCH = 2 << 20;
/** Items (pieces and zeroed entries) per batch, bounding the bookkeeping arrays. */
const BATCH_ITEMS = 4096;
/** Bytes read synchronously between yields to the event loop. */
const SYNC_SLICE = 1 << 20;

const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export type ProgressFn = (done: number, total: number) => void;

/** One batch: the pieces to feed, in order, and the file reads that fill its buffer. */
interface Batch {
  buf: Uint8Array;
  n: number;
  offset: Float64Array;
  sectors: Uint32Array;
  tag: Uint8Array;
  zeroed: Uint8Array;
  /** Reads as (layer, fileOffset, buffer offset, length) quadruples. */
  reads: number[];
  bytes: number;
}

function newBatch(): Batch {
  return {
    buf: new Uint8Array(BATCH + PIECE),
    n: 0,
    offset: new Float64Array(BATCH_ITEMS),
    sectors: new Uint32Array(BATCH_ITEMS),
    tag: new Uint8Array(BATCH_ITEMS),
    zeroed: new Uint8Array(BATCH_ITEMS),
    reads: [],
    bytes: 0,
  };
}

/**
 * Writes every mapping of `table` through `writer`: zeroed ones as zeroed extents, data
 * ones with bytes read from `sources[table.layer[i]]` at the mapping's moffset. `tagOf`
 * maps a table layer to the tag written in the output index.
 */
export async function copyMappings(
  table: MappingTable,
  sources: readonly ByteSource[],
  writer: SealedLayerWriter,
  tagOf: (layer: number) => number,
  onProgress?: ProgressFn,
): Promise<void> {
  const total = table.dataSectors() * SECTOR;
  let done = 0;
  let cur = newBatch();
  let next = newBatch();
  // Cursor into the table: mapping i, sectors already planned of it.
  let i = 0;
  let within = 0;

  const plan = (b: Batch): void => {
    b.n = 0;
    b.bytes = 0;
    b.reads.length = 0;
    let rLayer = -1;
    let rFile = 0;
    let rAt = 0;
    let rLen = 0;
    while (i < table.count && b.n < BATCH_ITEMS && b.bytes < BATCH) {
      const k = b.n++;
      const layer = table.layer[i]!;
      b.tag[k] = tagOf(layer);
      if (table.zeroed[i] === 1) {
        b.offset[k] = table.offset[i]!;
        b.sectors[k] = table.length[i]!;
        b.zeroed[k] = 1;
        i++;
        continue;
      }
      const len = Math.min(PIECE / SECTOR, table.length[i]! - within);
      const fileOff = (table.moffset[i]! + within) * SECTOR;
      b.offset[k] = table.offset[i]! + within;
      b.sectors[k] = len;
      b.zeroed[k] = 0;
      const bytes = len * SECTOR;
      if (rLen > 0 && rLayer === layer && rFile + rLen === fileOff) {
        rLen += bytes;
      } else {
        if (rLen > 0) b.reads.push(rLayer, rFile, rAt, rLen);
        rLayer = layer;
        rFile = fileOff;
        rAt = b.bytes;
        rLen = bytes;
      }
      b.bytes += bytes;
      within += len;
      if (within === table.length[i]!) {
        within = 0;
        i++;
      }
    }
    if (rLen > 0) b.reads.push(rLayer, rFile, rAt, rLen);
  };

  const fill = async (b: Batch): Promise<void> => {
    const jobs: Promise<void>[] = [];
    const r = b.reads;
    let sinceYield = 0;
    try {
      for (let k = 0; k < r.length; k += 4) {
        const src = sources[r[k]!]!;
        const at = r[k + 2]!;
        const len = r[k + 3]!;
        const n = src.tryReadSyncAt ? src.tryReadSyncAt(b.buf, at, len, r[k + 1]!) : src.tryReadSync?.(b.buf.subarray(at, at + len), r[k + 1]!);
        if (n === undefined) {
          jobs.push(readFull(src, b.buf.subarray(at, at + len), r[k + 1]!));
          continue;
        }
        if (n !== len) throw new ShortReadError(src.name, r[k + 1]!, len, n);
        sinceYield += n;
        if (sinceYield >= SYNC_SLICE) {
          sinceYield = 0;
          await yieldToLoop();
        }
      }
    } catch (e) {
      return failAfter(jobs, e);
    }
    await settleAll(jobs);
  };

  plan(cur);
  let filling = ahead(fill(cur));
  while (cur.n > 0) {
    await filling;
    plan(next);
    filling = next.n > 0 ? ahead(fill(next)) : Promise.resolve();
    // The batch's data pieces lie back to back in its buffer, in table order: one write.
    await writer.addRun(cur.n, cur.offset, cur.sectors, cur.zeroed, cur.tag, cur.buf.subarray(0, cur.bytes));
    done += cur.bytes;
    onProgress?.(done, total);
    [cur, next] = [next, cur];
  }
}

async function readFull(src: ByteSource, buf: Uint8Array, offset: number): Promise<void> {
  const n = await src.read(buf, offset);
  if (n !== buf.length) throw new ShortReadError(src.name, offset, buf.length, n);
}

/**
 * Runs `write` against a sink: the caller's (left open for the caller to finish), or a new
 * file at `out` that is synced and closed on success and removed on failure.
 */
export async function withSink<T>(out: ByteSink | string, write: (sink: ByteSink) => Promise<T>): Promise<T> {
  if (typeof out !== 'string') return write(out);
  const sink = await FileSink.create(out);
  try {
    const r = await write(sink);
    await sink.sync();
    await sink.close();
    return r;
  } catch (e) {
    await sink.close().catch(() => {});
    await rm(out, { force: true }).catch(() => {});
    throw e;
  }
}
