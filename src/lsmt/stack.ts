/**
 * A read-only stack of sealed layers served through one merged index, so a read costs one
 * lookup whatever the number of layers. Reads are split at mapping boundaries; holes and
 * zeroed extents are zero-filled; adjacent pieces stored contiguously in the same layer
 * file become one file read.
 */
import { ChainError, ShortReadError } from '../io/errors.ts';
import { declareCapabilities } from '../io/capabilities.ts';
import type { BlockDevice, ByteSource, Extent, ExtentKind } from '../io/types.ts';
import { checkRange, failAfter, settleAll } from '../io/util.ts';
import { SECTOR, isNullUuid } from './format.ts';
import { IndexLookup, REC } from './lookup.ts';
import { mergeIndexes } from './merged-index.ts';
import type { Layer } from './layer.ts';
import { tableEnd } from './sealed.ts';
import type { MappingTable } from './table.ts';

export interface StackOptions {
  /** Require each layer's parent uuid to equal the uuid of the layer below it. */
  verifyChain?: boolean;
  name?: string;
  /** Closing the stack closes the layers' sources (default true). */
  ownsSources?: boolean;
  /** Runs after the sources are closed: releases what the opener attached (downloads, caches). */
  onClose?: () => Promise<void>;
  /** The layers' merged index when the caller has it already (e.g. built incrementally); it must equal mergeIndexes of their tables. */
  index?: MappingTable;
  /** The lookup of `index` when built beforehand (IndexLookup.sliced). */
  lookup?: IndexLookup;
}

export class Stack implements BlockDevice {
  readonly name: string;
  readonly size: number;
  readonly writable = false;
  readonly capabilities = declareCapabilities({ write: false, trim: false, flush: false });
  readonly layers: readonly Layer[];
  readonly index: MappingTable;
  readonly lookup: IndexLookup;
  readonly #sources: ByteSource[];
  readonly #owns: boolean;
  readonly #onClose: (() => Promise<void>) | undefined;
  #closing: Promise<void> | undefined;

  constructor(layers: readonly Layer[], opts: StackOptions = {}) {
    if (layers.length === 0) throw new ChainError('a stack needs at least one layer');
    if (layers.length > 65535) throw new ChainError(`a stack holds at most 65535 layers, got ${layers.length}`);
    if (opts.verifyChain) verifyChain(layers);
    this.layers = layers;
    this.#sources = layers.map((l) => l.source);
    this.#owns = opts.ownsSources ?? true;
    this.#onClose = opts.onClose;
    this.name = opts.name ?? (layers.length === 1 ? layers[0]!.source.name : `stack of ${layers.length} layers (top ${layers.at(-1)!.source.name})`);
    this.size = checkStackSize(layers);
    this.index = opts.index ?? mergeIndexes(layers.map((l) => l.index));
    this.lookup = opts.lookup ?? new IndexLookup(this.index);
  }

  get layerCount(): number {
    return this.layers.length;
  }

  get uuid(): string {
    return this.layers.at(-1)!.uuid;
  }

  get parentUuid(): string {
    return this.layers.at(-1)!.parentUuid;
  }

  read(buf: Uint8Array, offset: number): Promise<void> {
    const len = buf.length;
    try {
      // Also reached directly (export, commit, flatten, library users), not only through src/ops.
      checkRange(this.name, offset, len, this.size);
      return readMapped(this.lookup, this.#sources, buf, offset);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    checkRange(this.name, offset, length, this.size);
    return mappedExtents(this.lookup, offset, length);
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      try {
        if (this.#owns) await Promise.all(this.#sources.map((s) => s.close()));
      } finally {
        await this.#onClose?.();
      }
    })();
    return this.#closing;
  }
}

/** The topmost non-zero virtual size (docs/format.md §2.10). */
export function stackVirtualSize(layers: readonly Layer[]): number {
  for (let i = layers.length - 1; i >= 0; i--) if (layers[i]!.virtualSize > 0) return layers[i]!.virtualSize;
  return 0;
}

/**
 * The stack's size, checked: some layer must set it, and no layer may map data past it (the
 * reads there would silently drop that data).
 */
function checkStackSize(layers: readonly Layer[]): number {
  const size = stackVirtualSize(layers);
  const top = layers.at(-1)!.source.name;
  if (size === 0) throw new ChainError(`${top}: no layer of the stack sets a virtual size (every one is 0)`);
  for (const l of layers) {
    const end = tableEnd(l.index) * SECTOR;
    if (end > size) {
      const from = layers.findLast((x) => x.virtualSize > 0)!;
      throw new ChainError(`${l.source.name}: maps data up to byte ${end}, past the stack's virtual size ${size} (set by ${from.source.name})`);
    }
  }
  return size;
}

/** Checks every layer's parent uuid against the uuid of the layer below it. */
export function verifyChain(layers: readonly { uuid: string; parentUuid: string; source: ByteSource }[]): void {
  for (let i = 1; i < layers.length; i++) {
    const below = layers[i - 1]!;
    const l = layers[i]!;
    if (isNullUuid(l.parentUuid)) {
      throw new ChainError(`${l.source.name}: has no parent uuid, but it is stacked on ${below.source.name} (uuid ${below.uuid})`);
    }
    if (l.parentUuid.toUpperCase() !== below.uuid.toUpperCase()) {
      throw new ChainError(
        `${l.source.name}: parent uuid ${l.parentUuid} does not match the uuid ${below.uuid} of the layer below it (${below.source.name})`,
      );
    }
  }
}

const DONE: Promise<void> = Promise.resolve();

/**
 * Fills `buf` with the bytes at `offset` as the lookup's segments describe, reading data
 * from `sources` (indexed by layer number). Not an async function: a read served from the
 * page cache (tryReadSync) costs no promise beyond the one returned. May throw.
 */
export function readMapped(lookup: IndexLookup, sources: readonly ByteSource[], buf: Uint8Array, offset: number): Promise<void> {
  const end = offset + buf.length;
  const rec = lookup.rec;
  const ends = lookup.ends;
  const count = lookup.count;
  let i = lookup.firstEndingAfter(Math.floor(offset / SECTOR));
  let pos = offset;
  // The first file read is kept in locals; further ones (rare for small reads) go in arrays.
  let rLayer = -1;
  let rFile = 0;
  let rBuf = 0;
  let rLen = 0;
  let more: number[] | undefined;
  while (pos < end) {
    const r = i * REC;
    if (i >= count || rec[r]! * SECTOR >= end) {
      buf.fill(0, pos - offset, end - offset);
      break;
    }
    const s = rec[r]! * SECTOR;
    if (s > pos) {
      buf.fill(0, pos - offset, s - offset);
      pos = s;
    }
    const segEnd = Math.min(ends[i]! * SECTOR, end);
    const tag = rec[r + 2]!;
    if (tag & 1) {
      buf.fill(0, pos - offset, segEnd - offset);
    } else {
      const l = tag >>> 1;
      const fileOff = rec[r + 1]! * SECTOR + (pos - s);
      const n = segEnd - pos;
      if (rLayer === l && rFile + rLen === fileOff && rBuf + rLen === pos - offset) {
        rLen += n;
      } else {
        if (rLayer >= 0) (more ??= []).push(rLayer, rFile, rBuf, rLen);
        rLayer = l;
        rFile = fileOff;
        rBuf = pos - offset;
        rLen = n;
      }
    }
    pos = segEnd;
    i++;
  }
  if (rLayer < 0) return DONE;
  if (!more) return readPiece(sources[rLayer]!, buf, rBuf, rLen, rFile) ?? DONE;
  more.push(rLayer, rFile, rBuf, rLen);
  let jobs: Promise<void>[] | undefined;
  try {
    for (let k = 0; k < more.length; k += 4) {
      const job = readPiece(sources[more[k]!]!, buf, more[k + 2]!, more[k + 3]!, more[k + 1]!);
      if (job) (jobs ??= []).push(job);
    }
  } catch (e) {
    // A later piece failed at once: the read settles only after the earlier ones have.
    return failAfter(jobs, e);
  }
  return jobs ? settleAll(jobs) : DONE;
}

/** Reads one piece: synchronously when the source can (returns undefined), else a promise. */
function readPiece(src: ByteSource, buf: Uint8Array, at: number, len: number, fileOff: number): Promise<void> | undefined {
  const view = at === 0 && len === buf.length ? buf : buf.subarray(at, at + len);
  const n = src.tryReadSync?.(view, fileOff);
  if (n === undefined) return src.read(view, fileOff).then((got) => checkPiece(src, fileOff, len, got));
  checkPiece(src, fileOff, len, n);
  return undefined;
}

function checkPiece(src: ByteSource, fileOff: number, len: number, got: number): void {
  if (got !== len) throw new ShortReadError(src.name, fileOff, len, got);
}

/** Describes [offset, offset+length) from the lookup's segments, joining neighbours of the same kind and layer. */
export function mappedExtents(lookup: IndexLookup, offset: number, length: number): Extent[] {
  const out: Extent[] = [];
  const end = offset + length;
  const rec = lookup.rec;
  const ends = lookup.ends;
  const add = (from: number, to: number, kind: ExtentKind, layer: number): void => {
    const last = out.at(-1);
    if (last && last.kind === kind && last.layer === layer && last.offset + last.length === from) last.length += to - from;
    else out.push({ offset: from, length: to - from, kind, layer });
  };
  let i = lookup.firstEndingAfter(Math.floor(offset / SECTOR));
  let pos = offset;
  while (pos < end) {
    const r = i * REC;
    if (i >= lookup.count || rec[r]! * SECTOR >= end) {
      add(pos, end, 'hole', -1);
      break;
    }
    const s = rec[r]! * SECTOR;
    if (s > pos) {
      add(pos, s, 'hole', -1);
      pos = s;
    }
    const segEnd = Math.min(ends[i]! * SECTOR, end);
    const tag = rec[r + 2]!;
    add(pos, segEnd, tag & 1 ? 'zero' : 'data', tag >>> 1);
    pos = segEnd;
    i++;
  }
  return out;
}
