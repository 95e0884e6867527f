/**
 * Raw disk in: a sealed layer from a raw image holding only its non-zero blocks, or, over a
 * base device, only the blocks that differ from the base (a shippable snapshot delta).
 * Blocks that are zero in the image but not in the base become zeroed extents, so the
 * layer stacked on the base reads exactly as the image.
 */
import { ChainError, InvalidArgumentError, ShortReadError } from '../io/errors.ts';
import { FileSource } from '../io/file.ts';
import type { BlockDevice, ByteSink, ByteSource } from '../io/types.ts';
import { ahead, isZero, settleAll } from '../io/util.ts';
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

/** The uuid of the top layer of a stack-like base, when it has one. */
export function topUuid(dev: BlockDevice | undefined): string | undefined {
  return dev?.uuid;
}

/** Imports the raw image `raw` (a path or source) into a sealed layer at/into `out`. */
export async function importRaw(raw: string | ByteSource, out: ByteSink | string, opts: ImportOptions = {}): Promise<ImportStats> {
  const bs = opts.blockSize ?? 4096;
  if (!Number.isInteger(bs) || bs < SECTOR || bs % SECTOR !== 0 || bs > 1 << 20) {
    throw new InvalidArgumentError(`block size ${bs} must be a multiple of 512 from 512 to 1 MiB`);
  }
  const src = typeof raw === 'string' ? await FileSource.open(raw) : raw;
  try {
    const vsize = Math.ceil(src.size / SECTOR) * SECTOR;
    const base = opts.base;
    if (base && base.size !== vsize) {
      throw new ChainError(`${src.name}: image size ${vsize} differs from the base's virtual size ${base.size} (${base.name})`);
    }
    const id = checkedIdentity({
      virtualSize: vsize,
      uuid: opts.uuid ?? randomUuid(),
      parentUuid: opts.parentUuid ?? topUuid(base),
      userTag: opts.userTag,
    });
    const counts = { data: 0, zeroed: 0 };
    const stats = await withSink(out, async (sink) => {
      const w = new SealedLayerWriter(sink, id);
      await scan(src, vsize, base, bs, w, counts, opts.onProgress);
      return w.finish();
    });
    return { ...stats, virtualSize: vsize, uuid: id.uuid!, parentUuid: id.parentUuid!, dataBlocks: counts.data, zeroedBlocks: counts.zeroed, blockSize: bs };
  } finally {
    if (typeof raw === 'string') await src.close();
  }
}

/** Reads image (and base) chunk by chunk, the next chunk while the current one is written. */
async function scan(
  src: ByteSource,
  vsize: number,
  base: BlockDevice | undefined,
  bs: number,
  w: SealedLayerWriter,
  counts: { data: number; zeroed: number },
  onProgress?: ProgressFn,
): Promise<void> {
  const chunk = Math.max(bs, CHUNK - (CHUNK % bs));
  const mk = () => ({ img: new Uint8Array(chunk), base: base ? new Uint8Array(chunk) : undefined });
  let cur = mk();
  let next = mk();
  const load = async (b: ReturnType<typeof mk>, at: number): Promise<void> => {
    const n = Math.min(chunk, vsize - at);
    const img = b.img.subarray(0, n);
    const want = Math.min(n, src.size - at);
    const jobs: Promise<unknown>[] = [
      src.read(img.subarray(0, want), at).then((got) => {
        if (got !== want) throw new ShortReadError(src.name, at, want, got);
      }),
    ];
    // The image's last partial sector reads as zero padding.
    if (want < n) img.fill(0, want);
    if (base) jobs.push(base.read(b.base!.subarray(0, n), at));
    await settleAll(jobs);
  };
  let loading = vsize > 0 ? ahead(load(cur, 0)) : Promise.resolve();
  for (let at = 0; at < vsize; at += chunk) {
    await loading;
    const nextAt = at + chunk;
    loading = nextAt < vsize ? ahead(load(next, nextAt)) : Promise.resolve();
    await emitChunk(cur, at, Math.min(chunk, vsize - at), bs, w, counts);
    onProgress?.(Math.min(nextAt, vsize), vsize);
    [cur, next] = [next, cur];
  }
}

/** Classifies each block of one chunk and writes runs of data / zeroed blocks. */
async function emitChunk(
  b: { img: Uint8Array; base: Uint8Array | undefined },
  at: number,
  n: number,
  bs: number,
  w: SealedLayerWriter,
  counts: { data: number; zeroed: number },
): Promise<void> {
  const img = b.img;
  const base = b.base;
  if (!base && isZero(img.subarray(0, n))) return;
  // Run kinds: 0 skip, 1 data, 2 zeroed.
  let runKind = 0;
  let runStart = 0;
  const endRun = async (to: number): Promise<void> => {
    if (runKind === 1) await w.addData((at + runStart) / SECTOR, img.subarray(runStart, to));
    else if (runKind === 2) await w.addZeroed((at + runStart) / SECTOR, (to - runStart) / SECTOR);
  };
  for (let p = 0; p < n; p += bs) {
    const e = Math.min(n, p + bs);
    const block = img.subarray(p, e);
    let kind: number;
    if (!base) kind = isZero(block) ? 0 : 1;
    else if (Buffer.compare(block, base.subarray(p, e)) === 0) kind = 0;
    else kind = isZero(block) ? 2 : 1;
    if (kind === 1) counts.data++;
    else if (kind === 2) counts.zeroed++;
    if (kind !== runKind) {
      await endRun(p);
      runKind = kind;
      runStart = p;
    }
  }
  await endRun(n);
}
