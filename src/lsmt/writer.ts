/**
 * Writing sealed LSMT layers with the reference's exact layout (docs/format.md §2.3, §2.5):
 * header (flags 7) · data in logical order from sector 8 · index padded to 256 entries ·
 * trailer (flags 6). Entries are cut into 64-sector copy steps and re-joined left to right
 * while the joined length stays strictly below 16383 sectors — the rule that makes our
 * commits byte-identical to overlaybd-commit's. Output is strictly sequential, so it can
 * stream into a compressing sink.
 */
import { InvalidArgumentError } from '../io/errors.ts';
import { FileSink } from '../io/sink.ts';
import type { ByteSink } from '../io/types.ts';
import {
  ENTRY_SIZE,
  FLAG_DATA,
  FLAG_HEADER,
  FLAG_SEALED,
  HT_SPACE,
  MAX_ENTRY_SECTORS,
  PADDING_ENTRY,
  SECTOR,
  encodeHeaderTrailer,
  normalizeUuid,
  writeEntry,
  type HeaderTrailer,
} from './format.ts';

/** Copy step of the reference's compaction, in sectors (32 KiB). */
const STEP = 64;
/** Index entries per padding unit (4096 bytes). */
const PAD_ENTRIES = HT_SPACE / ENTRY_SIZE;

export interface LayerIdentity {
  virtualSize: number;
  /** '' or undefined writes the all-zero (null) uuid, as the reference does. */
  uuid?: string;
  parentUuid?: string;
  userTag?: string;
}

export interface LayerWriteStats {
  /** Live entries written (padding excluded). */
  entries: number;
  dataBytes: number;
  indexOffset: number;
  fileSize: number;
}

export class SealedLayerWriter {
  readonly #sink: ByteSink;
  readonly #ht: HeaderTrailer;
  #started = false;
  #finished = false;
  /** Output position in sectors where the next data goes. */
  #cursor = HT_SPACE / SECTOR;
  /** Logical end of the last extent added, for order checks. */
  #lastEnd = 0;
  // The entry being grown (length 0 = none).
  #cOff = 0;
  #cLen = 0;
  #cMoff = 0;
  #cZero = false;
  #cTag = 0;
  #index: Uint8Array = new Uint8Array(PAD_ENTRIES * ENTRY_SIZE);
  #dv = new DataView(this.#index.buffer);
  #entries = 0;

  constructor(sink: ByteSink, id: LayerIdentity) {
    this.#sink = sink;
    this.#ht = {
      flags: FLAG_HEADER | FLAG_DATA | FLAG_SEALED,
      indexOffset: 0,
      indexSize: 0,
      virtualSize: id.virtualSize,
      uuid: normalizeUuid(id.uuid),
      parentUuid: normalizeUuid(id.parentUuid),
      version: 1,
      subVersion: 1,
      userTag: id.userTag ?? '',
    };
    // Fail on a bad tag before anything is written.
    encodeHeaderTrailer(this.#ht);
  }

  async #start(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    await this.#sink.write(encodeHeaderTrailer(this.#ht));
  }

  #checkOrder(offset: number, length: number): void {
    if (this.#finished) throw new InvalidArgumentError(`${this.#sink.name}: layer already finished`);
    if (!Number.isSafeInteger(offset) || offset < this.#lastEnd) {
      throw new InvalidArgumentError(`${this.#sink.name}: extent at sector ${offset} is out of order or overlaps the previous one ending at ${this.#lastEnd}`);
    }
    if (length <= 0) throw new InvalidArgumentError(`${this.#sink.name}: empty extent at sector ${offset}`);
    this.#lastEnd = offset + length;
  }

  /**
   * Appends data for logical sectors [offset, offset + data.length/512). Copy steps restart
   * at every call, as they restart at every source mapping in the reference; a caller that
   * splits one mapping into several calls keeps byte-exactness by using multiples of 32 KiB.
   */
  async addData(offset: number, data: Uint8Array, tag = 0): Promise<void> {
    if (data.length % SECTOR !== 0) throw new InvalidArgumentError(`${this.#sink.name}: data at sector ${offset} is ${data.length} bytes, not a multiple of 512`);
    const sectors = data.length / SECTOR;
    this.#checkOrder(offset, sectors);
    await this.#start();
    await this.#sink.write(data);
    this.#addSteps(offset, sectors, tag);
  }

  /**
   * Appends `n` extents in order, the same as addData or addZeroed for each in turn, with
   * their data back to back in `data` (zeroed extents take no bytes) written at once: commit
   * and merge feed thousands of 4 KiB pieces per batch, and one write per piece was most of
   * the JavaScript work of a commit.
   */
  async addRun(n: number, offset: ArrayLike<number>, sectors: ArrayLike<number>, zeroed: ArrayLike<number>, tag: ArrayLike<number>, data: Uint8Array): Promise<void> {
    let bytes = 0;
    for (let k = 0; k < n; k++) if (zeroed[k] !== 1) bytes += sectors[k]! * SECTOR;
    if (bytes !== data.length) throw new InvalidArgumentError(`${this.#sink.name}: a run of ${n} extents holds ${bytes} bytes of data, not ${data.length}`);
    await this.#start();
    for (let k = 0; k < n; k++) {
      const off = offset[k]!;
      const len = sectors[k]!;
      this.#checkOrder(off, len);
      if (zeroed[k] === 1) this.#addZeroedEntries(off, len, tag[k]!);
      else this.#addSteps(off, len, tag[k]!);
    }
    if (data.length > 0) await this.#sink.write(data);
  }

  /** Index entries for data just written at the cursor: one per 64-sector copy step. */
  #addSteps(offset: number, sectors: number, tag: number): void {
    for (let done = 0; done < sectors; ) {
      const step = Math.min(STEP, sectors - done);
      this.#emit(offset + done, step, this.#cursor, false, tag);
      this.#cursor += step;
      done += step;
    }
  }

  /** Appends a zeroed extent (reads as zeros, hides lower layers, stores no data). */
  async addZeroed(offset: number, sectors: number, tag = 0): Promise<void> {
    this.#checkOrder(offset, sectors);
    await this.#start();
    this.#addZeroedEntries(offset, sectors, tag);
  }

  #addZeroedEntries(offset: number, sectors: number, tag: number): void {
    for (let done = 0; done < sectors; ) {
      const n = Math.min(MAX_ENTRY_SECTORS, sectors - done);
      this.#emit(offset + done, n, this.#cursor, true, tag);
      done += n;
    }
  }

  #emit(offset: number, length: number, moffset: number, zeroed: boolean, tag: number): void {
    const cEnd = this.#cOff + this.#cLen;
    const cMend = this.#cZero ? this.#cMoff : this.#cMoff + this.#cLen;
    if (
      this.#cLen > 0 &&
      cEnd === offset &&
      cMend === moffset &&
      this.#cZero === zeroed &&
      this.#cTag === tag &&
      this.#cLen + length < MAX_ENTRY_SECTORS
    ) {
      this.#cLen += length;
      return;
    }
    this.#flushEntry();
    this.#cOff = offset;
    this.#cLen = length;
    this.#cMoff = moffset;
    this.#cZero = zeroed;
    this.#cTag = tag;
  }

  #flushEntry(): void {
    if (this.#cLen === 0) return;
    this.#put(this.#cOff, this.#cLen, this.#cMoff, this.#cZero, this.#cTag);
    this.#cLen = 0;
  }

  /** Fields, not a Mapping: a commit puts one entry per piece, and an object each was garbage. */
  #put(offset: number, length: number, moffset: number, zeroed: boolean, tag: number): void {
    if ((this.#entries + 1) * ENTRY_SIZE > this.#index.length) {
      const bigger = new Uint8Array(this.#index.length * 2);
      bigger.set(this.#index);
      this.#index = bigger;
      this.#dv = new DataView(bigger.buffer);
    }
    writeEntry(this.#dv, this.#entries * ENTRY_SIZE, offset, length, moffset, zeroed, tag);
    this.#entries++;
  }

  /** Writes index and trailer. Does not close the sink. */
  async finish(): Promise<LayerWriteStats> {
    await this.#start();
    this.#flushEntry();
    this.#finished = true;
    const live = this.#entries;
    const pad = PADDING_ENTRY;
    while (this.#entries % PAD_ENTRIES !== 0) this.#put(pad.offset, pad.length, pad.moffset, pad.zeroed, pad.tag);
    const indexOffset = this.#cursor * SECTOR;
    await this.#sink.write(this.#index.subarray(0, this.#entries * ENTRY_SIZE));
    await this.#sink.write(encodeHeaderTrailer({ ...this.#ht, flags: FLAG_DATA | FLAG_SEALED, indexOffset, indexSize: this.#entries }));
    return { entries: live, dataBytes: indexOffset - HT_SPACE, indexOffset, fileSize: this.#sink.position };
  }
}

/** One extent for writeSealedLayer: byte offset plus data, or a zeroed length. */
export type ExtentSpec = { offset: number; data: Uint8Array } | { offset: number; zeroLength: number };

/**
 * Builds a sealed layer file from extents given in bytes (512-byte aligned, any order,
 * non-overlapping).
 */
export async function writeSealedLayer(path: string, id: LayerIdentity, extents: Iterable<ExtentSpec>): Promise<LayerWriteStats> {
  const list = [...extents].sort((a, b) => a.offset - b.offset);
  for (const e of list) {
    const len = 'data' in e ? e.data.length : e.zeroLength;
    if (e.offset % SECTOR !== 0 || len % SECTOR !== 0) {
      throw new InvalidArgumentError(`${path}: extent [${e.offset}, +${len}) is not 512-byte aligned`);
    }
    if (e.offset + len > id.virtualSize) {
      throw new InvalidArgumentError(`${path}: extent [${e.offset}, +${len}) ends past the virtual size ${id.virtualSize}`);
    }
  }
  const sink = await FileSink.create(path);
  try {
    const w = new SealedLayerWriter(sink, id);
    for (const e of list) {
      if ('data' in e) await w.addData(e.offset / SECTOR, e.data);
      else await w.addZeroed(e.offset / SECTOR, e.zeroLength / SECTOR);
    }
    const stats = await w.finish();
    await sink.close();
    return stats;
  } catch (e) {
    await sink.close().catch(() => {});
    throw e;
  }
}
