/**
 * Reading back what the product opened, bounded: a device's size, extents and the bytes of
 * every 256 KiB window that holds data (as `obd export` walks it), or a byte source's content
 * in 1 MiB windows, never more than `cap` bytes; each window is kept as a sha256. A broken
 * interface contract (extents that do not tile the range, a short read inside the source) is
 * a ContractError, a crash-class ending.
 */
import { createHash } from 'node:crypto';
import type { BlockDevice, ByteSource } from '../io/types.ts';

const WINDOW = 256 << 10;
/** Longest range asked of extents() at once, so a huge size costs steps, as in export. */
const EXTENTS_STEP = 2 ** 40;

export class ContractError extends Error {}

function u64(v: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setFloat64(0, v, true);
  return b;
}

const KIND = { hole: 0, zero: 1, data: 2 } as const;

/** What a read-back saw: its head (size, extents), a digest per window (null: the read failed), the first failure. */
export interface Readback {
  output: Uint8Array;
  windows: Map<number, Uint8Array | null>;
  failure?: unknown;
}

/**
 * Reads each window into one reused buffer, going on after a failed read as a server goes on
 * serving other requests: a read that settled before all its pieces did would leave them
 * writing into the buffer of a later window, and that window would read back changed.
 */
async function readWindows(offsets: readonly number[], length: (off: number) => number, read: (view: Uint8Array, off: number) => Promise<void>, into: Readback): Promise<Readback> {
  const buf = new Uint8Array(Math.max(0, ...offsets.map(length)));
  for (const off of offsets) {
    const view = buf.subarray(0, length(off));
    try {
      await read(view, off);
      into.windows.set(off, createHash('sha256').update(view).digest());
    } catch (e) {
      into.failure ??= e;
      into.windows.set(off, null);
    }
  }
  return into;
}

export async function readDevice(dev: BlockDevice, cap: number): Promise<Readback> {
  // Offsets past 2^53 are not exact in a double: such a size cannot be walked or served right.
  if (!Number.isSafeInteger(dev.size) || dev.size < 0) throw new ContractError(`${dev.name}: size ${dev.size} is not an exact byte count`);
  const windows: number[] = [];
  const desc: number[] = [];
  for (let pos = 0; pos < dev.size; ) {
    const len = Math.min(dev.size - pos, EXTENTS_STEP);
    const exts = await dev.extents(pos, len);
    let at = pos;
    for (const e of exts) {
      if (e.offset !== at || !(e.length > 0)) throw new ContractError(`${dev.name}: extent ${e.offset}+${e.length} does not continue at ${at}`);
      desc.push(e.offset, e.length, KIND[e.kind], e.layer);
      if (e.kind !== 'hole') {
        for (let w = Math.floor(e.offset / WINDOW); w * WINDOW < e.offset + e.length && windows.length * WINDOW < cap; w++) {
          if (windows.at(-1) !== w * WINDOW) windows.push(w * WINDOW);
        }
      }
      at += e.length;
    }
    if (at !== pos + len) throw new ContractError(`${dev.name}: extents of [${pos}, +${len}) end at ${at}`);
    if (pos + len <= pos) throw new ContractError(`${dev.name}: position ${pos} does not advance (size ${dev.size})`);
    pos += len;
  }
  const head = Buffer.concat([u64(dev.size), new Uint8Array(new Float64Array(desc).buffer)]);
  return readWindows(windows, (off) => Math.min(WINDOW, dev.size - off), (view, off) => dev.read(view, off), { output: head, windows: new Map() });
}

export async function readSource(src: ByteSource, cap: number): Promise<Readback> {
  const n = Math.min(src.size, cap);
  const step = 4 * WINDOW;
  const offsets: number[] = [];
  for (let off = 0; off < n; off += step) offsets.push(off);
  return readWindows(
    offsets,
    (off) => Math.min(step, n - off),
    async (view, off) => {
      const got = await src.read(view, off);
      if (got !== view.length) throw new ContractError(`${src.name}: read at ${off} gave ${got} of ${view.length} bytes inside the size ${src.size}`);
    },
    { output: u64(src.size), windows: new Map() },
  );
}
