/**
 * Disks in: a sealed layer from a device (a raw file, a qcow2 chain, an NBD export) holding
 * only its non-zero blocks, or, over a base device, only the blocks that differ from the base
 * (a shippable snapshot delta). Blocks that are zero in the image but not in the base become
 * zeroed extents, so the layer stacked on the base reads exactly as the image.
 *
 * Only what the device's extents call data is read: zero and hole ranges are known to read
 * as zeros, so without a base they cost nothing, and over a base only the base's data there
 * is read (to find what must be zeroed). A `plan` narrows the work further: the spans it
 * leaves out are taken to equal the base (a dirty-bitmap delta), and `keepZeros` writes the
 * device's zeros as zeroed extents instead of comparing (a chain layer that hides its parent).
 */
import { ChainError, InvalidArgumentError } from '../io/errors.ts';
import { FileSource } from '../io/file.ts';
import { RawDevice } from '../io/raw.ts';
import type { BlockDevice, ByteSink, ByteSource, Extent } from '../io/types.ts';
import { ahead, isZero, readable, settleAll } from '../io/util.ts';
import { withSink, type ProgressFn } from './copy.ts';
import { SECTOR, randomUuid } from './format.ts';
import { checkedIdentity } from './identity.ts';
import { SealedLayerWriter, type LayerWriteStats } from './writer.ts';

export interface ImportOptions {
  /** The device the new layer will sit on; only differing blocks are stored. */
  base?: BlockDevice;
  /** Comparison granularity in bytes: a multiple of 512 up to 1 MiB (default 4096). */
  blockSize?: number;
  /** Default: a new random uuid. */
  uuid?: string;
  /** Default: the base's top layer uuid (when it has one), else none. */
  parentUuid?: string;
  userTag?: string;
  onProgress?: ProgressFn;
}

export interface DeviceImportOptions extends ImportOptions {
  /**
   * The ranges to look at, sorted and apart, each with what the device holds there ('data'
   * is read, 'zero' and 'hole' read as zeros); default: the device's own extents. Ranges
   * left out are not written at all.
   */
  plan?: AsyncIterable<Extent> | Iterable<Extent>;
  /** Write zero and hole ranges of the plan, and all-zero data blocks, as zeroed extents (ignores base). */
  keepZeros?: boolean;
  /** The layer's virtual size (default: the device's, in whole sectors); the device reads zeros past its end. */
  virtualSize?: number;
}

export interface ImportStats extends LayerWriteStats {
  virtualSize: number;
  uuid: string;
  parentUuid: string;
  /** Blocks stored as data. */
  dataBlocks: number;
  /** Blocks stored as zeroed extents (zero in the image, not in the base). */
  zeroedBlocks: number;
  blockSize: number;
}

const CHUNK = 4 << 20;
/** Extents asked of a device at once. */
const EXTENT_WINDOW = 1 << 30;

/** The uuid of the top layer of a stack-like base, when it has one. */
export function topUuid(dev: BlockDevice | undefined): string | undefined {
  return dev?.uuid;
}

/** Imports the raw image `raw` (a path or source) into a sealed layer at/into `out`. */
export async function importRaw(raw: string | ByteSource, out: ByteSink | string, opts: ImportOptions = {}): Promise<ImportStats> {
  const src = typeof raw === 'string' ? await FileSource.open(raw) : raw;
  try {
    return await importDevice(new RawDevice(src), out, opts);
  } finally {
    if (typeof raw === 'string') await src.close();
  }
}

/** The extents of [offset, end) of `dev`, asked a window at a time. */
export async function* deviceExtents(dev: BlockDevice, offset = 0, end = dev.size): AsyncIterable<Extent> {
  for (let at = offset; at < end; ) {
    const n = Math.min(EXTENT_WINDOW, end - at);
    for (const e of await dev.extents(at, n)) yield e;
    at += n;
  }
}

/** Imports the device `dev` into a sealed layer at/into `out` (see the module comment). */
export async function importDevice(dev: BlockDevice, out: ByteSink | string, opts: DeviceImportOptions = {}): Promise<ImportStats> {
  const bs = opts.blockSize ?? 4096;
  if (!Number.isInteger(bs) || bs < SECTOR || bs % SECTOR !== 0 || bs > 1 << 20) {
    throw new InvalidArgumentError(`block size ${bs} must be a multiple of 512 from 512 to 1 MiB`);
  }
  const vsize = opts.virtualSize ?? Math.ceil(dev.size / SECTOR) * SECTOR;
  const base = opts.keepZeros ? undefined : opts.base;
  if (opts.base && opts.base.size !== vsize) {
    throw new ChainError(`${dev.name}: image size ${vsize} differs from the base's virtual size ${opts.base.size} (${opts.base.name})`);
  }
  const id = checkedIdentity({
    virtualSize: vsize,
    uuid: opts.uuid ?? randomUuid(),
    parentUuid: opts.parentUuid ?? topUuid(opts.base),
    userTag: opts.userTag,
  });
  const counts = { data: 0, zeroed: 0 };
  const stats = await withSink(out, async (sink) => {
    const w = new SealedLayerWriter(sink, id);
    await scan({ dev, vsize, base, bs, keepZeros: opts.keepZeros ?? false, w, counts, onProgress: opts.onProgress }, opts.plan ?? deviceExtents(dev));
    return w.finish();
  });
  return { ...stats, virtualSize: vsize, uuid: id.uuid!, parentUuid: id.parentUuid!, dataBlocks: counts.data, zeroedBlocks: counts.zeroed, blockSize: bs };
}

// What a piece of a batch needs: the device's bytes compared (to the base or to zero), the
// base's bytes where the device reads zeros (non-zero blocks become zeroed), or nothing
// read at all (a zeroed extent).
const P_DATA = 0;
const P_BASE_UNDER_ZERO = 1;
const P_ZEROED = 2;

/**
 * The plan in whole blocks, in order, joined: a block holding any data is data (read, then
 * classified); only blocks a zero or hole range covers entirely are zero; the ragged edges of
 * a zero range are read like data, which is always right since the device is the truth.
 */
async function* blockSpans(plan: AsyncIterable<Extent> | Iterable<Extent>, bs: number, vsize: number, name: string): AsyncIterable<{ offset: number; end: number; data: boolean }> {
  let reached = 0;
  let last = -1;
  let cur: { offset: number; end: number; data: boolean } | undefined;
  const put = function* (offset: number, end: number, data: boolean) {
    offset = Math.max(offset, reached);
    end = Math.min(end, vsize);
    if (offset >= end) return;
    reached = end;
    if (cur && cur.end === offset && cur.data === data) cur.end = end;
    else {
      if (cur) yield cur;
      cur = { offset, end, data };
    }
  };
  for await (const e of plan) {
    if (e.offset < last) throw new InvalidArgumentError(`${name}: import plan range at ${e.offset} is out of order (previous ended at ${last})`);
    last = e.offset + e.length;
    const lo = Math.floor(e.offset / bs) * bs;
    const hi = Math.ceil(last / bs) * bs;
    if (e.kind === 'data') {
      yield* put(lo, hi, true);
      continue;
    }
    const zs = Math.ceil(e.offset / bs) * bs;
    const ze = Math.floor(last / bs) * bs;
    if (zs >= ze) {
      yield* put(lo, hi, true);
      continue;
    }
    yield* put(lo, zs, true);
    yield* put(zs, ze, false);
    yield* put(ze, hi, true);
  }
  if (cur) yield cur;
}

interface Batch {
  img: Uint8Array;
  base: Uint8Array | undefined;
  /** Pieces as (kind, offset, length, bufAt). */
  pieces: number[];
  bytes: number;
  /** How far the plan had got when this batch was cut, for progress. */
  reached: number;
}

interface ScanSetup {
  dev: BlockDevice;
  vsize: number;
  base: BlockDevice | undefined;
  bs: number;
  keepZeros: boolean;
  w: SealedLayerWriter;
  counts: { data: number; zeroed: number };
  onProgress: ProgressFn | undefined;
}

/**
 * One import: cuts the block spans into batches of at most CHUNK bytes to read, and reads the
 * next batch while the current one is classified and written.
 */
async function scan(s: ScanSetup, plan: AsyncIterable<Extent> | Iterable<Extent>): Promise<void> {
  const chunk = Math.max(s.bs, CHUNK - (CHUNK % s.bs));
  const spans = blockSpans(plan, s.bs, s.vsize, s.dev.name)[Symbol.asyncIterator]();
  let pending: { offset: number; end: number; data: boolean } | undefined;
  const planBatch = async (b: Batch): Promise<void> => {
    b.pieces.length = 0;
    b.bytes = 0;
    while (b.bytes < chunk) {
      let sp = pending;
      pending = undefined;
      if (!sp) {
        const r = await spans.next();
        if (r.done) break;
        sp = r.value;
      }
      const kind = sp.data ? P_DATA : s.keepZeros ? P_ZEROED : s.base ? P_BASE_UNDER_ZERO : -1;
      b.reached = sp.end;
      if (kind === -1) continue;
      if (kind === P_ZEROED) {
        b.pieces.push(P_ZEROED, sp.offset, sp.end - sp.offset, 0);
        continue;
      }
      const n = Math.min(sp.end - sp.offset, chunk - b.bytes);
      b.pieces.push(kind, sp.offset, n, b.bytes);
      b.bytes += n;
      if (sp.offset + n < sp.end) {
        pending = { ...sp, offset: sp.offset + n };
        b.reached = sp.offset + n;
      }
    }
  };
  const mk = (): Batch => ({ img: new Uint8Array(chunk), base: s.base ? new Uint8Array(chunk) : undefined, pieces: [], bytes: 0, reached: 0 });
  let cur = mk();
  let next = mk();
  await planBatch(cur);
  let loading = ahead(load(s, cur));
  while (cur.pieces.length > 0) {
    await loading;
    await planBatch(next);
    loading = next.pieces.length > 0 ? ahead(load(s, next)) : Promise.resolve();
    await emit(s, cur);
    s.onProgress?.(cur.reached, s.vsize);
    [cur, next] = [next, cur];
  }
  s.onProgress?.(s.vsize, s.vsize);
}

async function load(s: ScanSetup, b: Batch): Promise<void> {
  const jobs: Promise<void>[] = [];
  const p = b.pieces;
  for (let k = 0; k < p.length; k += 4) {
    const kind = p[k]!;
    const at = p[k + 1]!;
    const len = p[k + 2]!;
    const bufAt = p[k + 3]!;
    if (kind === P_DATA) {
      jobs.push(readPadded(s.dev, b.img.subarray(bufAt, bufAt + len), at));
      if (s.base) jobs.push(s.base.read(b.base!.subarray(bufAt, bufAt + len), at));
    } else if (kind === P_BASE_UNDER_ZERO) {
      jobs.push(loadBase(s.base!, b.base!.subarray(bufAt, bufAt + len), at));
    }
  }
  await settleAll(jobs);
}

/** Reads the base where it has data, zeros elsewhere (nothing there to hide). */
async function loadBase(base: BlockDevice, buf: Uint8Array, at: number): Promise<void> {
  const jobs: Promise<void>[] = [];
  for (const e of await base.extents(at, buf.length)) {
    const view = buf.subarray(e.offset - at, e.offset - at + e.length);
    if (e.kind === 'data') jobs.push(base.read(view, e.offset));
    else view.fill(0);
  }
  await settleAll(jobs);
}

/** Classifies each block of the batch and writes runs of data / zeroed blocks. */
async function emit(s: ScanSetup, b: Batch): Promise<void> {
  const { w, bs, counts, keepZeros } = s;
  const p = b.pieces;
  for (let k = 0; k < p.length; k += 4) {
    const kind = p[k]!;
    const at = p[k + 1]!;
    const len = p[k + 2]!;
    if (kind === P_ZEROED) {
      await w.addZeroed(at / SECTOR, len / SECTOR);
      counts.zeroed += Math.ceil(len / bs);
      continue;
    }
    const bufAt = p[k + 3]!;
    const img = b.img.subarray(bufAt, bufAt + len);
    const base = b.base?.subarray(bufAt, bufAt + len);
    if (kind === P_DATA && !base && !keepZeros && isZero(img)) continue;
    // Run kinds: 0 skip, 1 data, 2 zeroed.
    let runKind = 0;
    let runStart = 0;
    const endRun = async (to: number): Promise<void> => {
      if (runKind === 1) await w.addData((at + runStart) / SECTOR, img.subarray(runStart, to));
      else if (runKind === 2) await w.addZeroed((at + runStart) / SECTOR, (to - runStart) / SECTOR);
    };
    for (let q = 0; q < len; q += bs) {
      const e = Math.min(len, q + bs);
      let blockKind: number;
      if (kind === P_BASE_UNDER_ZERO) blockKind = isZero(base!.subarray(q, e)) ? 0 : 2;
      else {
        const block = img.subarray(q, e);
        if (base && Buffer.compare(block, base.subarray(q, e)) === 0) blockKind = 0;
        else blockKind = isZero(block) ? (base || keepZeros ? 2 : 0) : 1;
      }
      if (blockKind === 1) counts.data++;
      else if (blockKind === 2) counts.zeroed++;
      if (blockKind !== runKind) {
        await endRun(q);
        runKind = blockKind;
        runStart = q;
      }
    }
    await endRun(len);
  }
}

/** Reads `dev` into `buf`, zeros past its end (a device size that is not whole sectors). */
async function readPadded(dev: BlockDevice, buf: Uint8Array, at: number): Promise<void> {
  const n = readable(buf, at, dev.size).length;
  if (n > 0) await dev.read(buf.subarray(0, n), at);
  if (n < buf.length) buf.fill(0, n);
}
