/**
 * Reading back what the product opened, bounded: a device's size, extents and the bytes of
 * every 1 MiB window that holds data (as `obd export` walks it), or a byte source's content,
 * never more than `cap` bytes. A broken interface contract (extents that do not tile the
 * range, a short read inside the source) is reported as a ContractError, a crash-class ending.
 */
import type { BlockDevice, ByteSource } from '../io/types.ts';

const WINDOW = 1 << 20;
/** Longest range asked of extents() at once, so a huge size costs steps, as in export. */
const EXTENTS_STEP = 2 ** 40;

export class ContractError extends Error {}

function u64(v: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setFloat64(0, v, true);
  return b;
}

const KIND = { hole: 0, zero: 1, data: 2 } as const;

export async function readDevice(dev: BlockDevice, cap: number): Promise<Uint8Array> {
  const parts: Uint8Array[] = [u64(dev.size)];
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
          if (windows.at(-1) !== w) windows.push(w);
        }
      }
      at += e.length;
    }
    if (at !== pos + len) throw new ContractError(`${dev.name}: extents of [${pos}, +${len}) end at ${at}`);
    if (pos + len <= pos) throw new ContractError(`${dev.name}: position ${pos} does not advance (size ${dev.size})`);
    pos += len;
  }
  parts.push(new Uint8Array(new Float64Array(desc).buffer));
  for (const w of windows) {
    const off = w * WINDOW;
    const buf = new Uint8Array(Math.min(WINDOW, dev.size - off));
    await dev.read(buf, off);
    parts.push(u64(off), buf);
  }
  return Buffer.concat(parts);
}

export async function readSource(src: ByteSource, cap: number): Promise<Uint8Array> {
  const n = Math.min(src.size, cap);
  const out = new Uint8Array(8 + n);
  out.set(u64(src.size));
  for (let off = 0; off < n; off += WINDOW) {
    const view = out.subarray(8 + off, 8 + Math.min(n, off + WINDOW));
    const got = await src.read(view, off);
    if (got !== view.length) throw new ContractError(`${src.name}: read at ${off} gave ${got} of ${view.length} bytes inside the size ${src.size}`);
  }
  return out;
}
