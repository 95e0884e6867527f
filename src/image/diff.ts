/**
 * `obd diff`: a layer that, stacked on image A, reads exactly as image B.
 *
 * - When B's layers are A's layers plus more on top (the same layer blobs, in order), the
 *   diff is the extra layers merged: their indexes are merged as a stack's are and their live
 *   data copied (docs/format.md §2.8), without reading A or comparing anything.
 * - Otherwise the two disks are compared, but only where either maps data: ranges that are
 *   holes or zeroed in both read as zeros in both. B's differing blocks become data, blocks
 *   where B reads zeros and A does not become zeroed extents (import.ts does the comparing).
 */
import path from 'node:path';
import { ChainError } from '../io/errors.ts';
import type { BlockDevice, ByteSink, Extent } from '../io/types.ts';
import { copyMappings, withSink, type ProgressFn } from '../lsmt/copy.ts';
import { randomUuid } from '../lsmt/format.ts';
import { checkedIdentity } from '../lsmt/identity.ts';
import { deviceExtents, importDevice } from '../lsmt/import.ts';
import type { Layer } from '../lsmt/layer.ts';
import { mergeIndexes } from '../lsmt/merged-index.ts';
import { Stack } from '../lsmt/stack.ts';
import { SealedLayerWriter, type LayerWriteStats } from '../lsmt/writer.ts';

export interface DiffOptions {
  /** Default: a new random uuid. */
  uuid?: string;
  /** Default: the uuid of A's top layer. */
  parentUuid?: string;
  userTag?: string;
  /** Comparison block size when the disks are compared (default 4096). */
  blockSize?: number;
  onProgress?: ProgressFn;
}

export interface DiffStats extends LayerWriteStats {
  /** 'layers': B is A plus layers, merged; 'compare': the disks were compared. */
  mode: 'layers' | 'compare';
  /** Layers of B above A (mode 'layers'). */
  extraLayers: number;
  /** Bytes of the disks looked at (mode 'compare': ranges mapped in either). */
  comparedBytes: number;
  virtualSize: number;
  uuid: string;
  parentUuid: string;
}

/** Whether two opened layers are the same blob (same file, or the same name for a remote blob). */
function sameLayer(a: Layer, b: Layer): boolean {
  const name = (l: Layer): string => (l.source.name.includes('://') || l.source.name.startsWith('sha256:') ? l.source.name : path.resolve(l.source.name));
  return name(a) === name(b) && a.index.count === b.index.count && a.uuid === b.uuid;
}

/** B's layers above A's when B is A plus layers, else undefined. */
export function extraLayers(a: BlockDevice, b: BlockDevice): readonly Layer[] | undefined {
  if (!(a instanceof Stack) || !(b instanceof Stack)) return undefined;
  const la = a.layers;
  const lb = b.layers;
  if (lb.length <= la.length) return undefined;
  for (let i = 0; i < la.length; i++) if (!sameLayer(la[i]!, lb[i]!)) return undefined;
  return lb.slice(la.length);
}

/** Writes the diff layer of A → B into `out` (a path, synced and removed on failure, or a sink the caller finishes). */
export async function diffImages(a: BlockDevice, b: BlockDevice, out: ByteSink | string, opts: DiffOptions = {}): Promise<DiffStats> {
  if (b.size < a.size) {
    throw new ChainError(`${b.name}: the image is smaller (${b.size} bytes) than the one it would sit on (${a.size} bytes, ${a.name}); a layer cannot shrink a disk`);
  }
  const uuid = opts.uuid ?? randomUuid();
  const parentUuid = opts.parentUuid ?? a.uuid ?? '';
  const extra = extraLayers(a, b);
  if (extra) {
    const id = checkedIdentity({ virtualSize: b.size, uuid, parentUuid, userTag: opts.userTag });
    const index = mergeIndexes(extra.map((l) => l.index));
    const n = extra.length;
    const stats = await withSink(out, async (sink) => {
      const w = new SealedLayerWriter(sink, id);
      await copyMappings(index, extra.map((l) => l.source), w, (layer) => (n - 1 - layer) & 0xff, opts.onProgress);
      return w.finish();
    });
    return { ...stats, mode: 'layers', extraLayers: n, comparedBytes: 0, virtualSize: id.virtualSize, uuid: id.uuid!, parentUuid: id.parentUuid! };
  }
  const base = a.size === b.size ? a : new ZeroExtended(a, b.size);
  const counter = { bytes: 0 };
  const r = await importDevice(b, out, { base, plan: mappedInEither(base, b, counter), blockSize: opts.blockSize, uuid, parentUuid, userTag: opts.userTag, onProgress: opts.onProgress });
  return { ...r, mode: 'compare', extraLayers: 0, comparedBytes: counter.bytes, virtualSize: r.virtualSize, uuid: r.uuid, parentUuid: r.parentUuid };
}

/** B's extents, kept only where A or B holds data (elsewhere both read zeros). */
async function* mappedInEither(a: BlockDevice, b: BlockDevice, counter: { bytes: number }): AsyncIterable<Extent> {
  const ia = deviceExtents(a)[Symbol.asyncIterator]();
  const ib = deviceExtents(b)[Symbol.asyncIterator]();
  let ea = (await ia.next()).value as Extent | undefined;
  let eb = (await ib.next()).value as Extent | undefined;
  let pos = 0;
  let out: Extent | undefined;
  while (ea && eb) {
    const aEnd = ea.offset + ea.length;
    const bEnd = eb.offset + eb.length;
    const end = Math.min(aEnd, bEnd);
    if (end > pos && (ea.kind === 'data' || eb.kind === 'data')) {
      counter.bytes += end - pos;
      if (out && out.offset + out.length === pos && out.kind === eb.kind) out.length += end - pos;
      else {
        if (out) yield out;
        out = { offset: pos, length: end - pos, kind: eb.kind, layer: eb.layer };
      }
    }
    pos = end;
    if (aEnd === end) ea = (await ia.next()).value as Extent | undefined;
    if (bEnd === end) eb = (await ib.next()).value as Extent | undefined;
  }
  if (out) yield out;
}

/** A device read as if it went on with zeros up to `size` (an image that grew). */
class ZeroExtended implements BlockDevice {
  readonly name: string;
  readonly writable = false;
  readonly capabilities;
  readonly #dev: BlockDevice;
  readonly size: number;

  constructor(dev: BlockDevice, size: number) {
    this.#dev = dev;
    this.size = size;
    this.name = dev.name;
    this.capabilities = dev.capabilities;
  }

  get uuid(): string | undefined {
    return this.#dev.uuid;
  }

  get layerCount(): number {
    return this.#dev.layerCount;
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    const n = Math.max(0, Math.min(buf.length, this.#dev.size - offset));
    if (n > 0) await this.#dev.read(buf.subarray(0, n), offset);
    buf.fill(0, n);
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    const end = offset + length;
    const inDev = Math.max(offset, Math.min(end, this.#dev.size));
    const out = inDev > offset ? await this.#dev.extents(offset, inDev - offset) : [];
    if (end > inDev) out.push({ offset: inDev, length: end - inDev, kind: 'hole', layer: -1 });
    return out;
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
