/**
 * Reading back what the product opened, bounded: a device's size, extents and the bytes of
 * every 256 KiB window that holds data (as `obd export` walks it), or a byte source's content,
 * never more than `cap` bytes; the bytes are kept as a sha256. A broken interface contract (extents that do not tile the
 * range, a short read inside the source) is reported as a ContractError, a crash-class ending.
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

export async function readDevice(dev: BlockDevice, cap: number): Promise<Uint8Array> {
  // Offsets past 2^53 are not exact in a double: such a size cannot be walked or served right.
  if (!Number.isSafeInteger(dev.size) || dev.size < 0) throw new ContractError(`${dev.name}: size ${dev.size} is not an exact byte count`);
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
  // One buffer and a digest: fresh large buffers cost more than the reads here (page faults).
  const h = createHash('sha256');
  const buf = new Uint8Array(WINDOW);
  for (const w of windows) {
    const off = w * WINDOW;
    const view = buf.subarray(0, Math.min(WINDOW, dev.size - off));
    await dev.read(view, off);
    h.update(u64(off)).update(view);
  }
  parts.push(h.digest());
  return Buffer.concat(parts);
}

export async function readSource(src: ByteSource, cap: number): Promise<Uint8Array> {
  const n = Math.min(src.size, cap);
  const h = createHash('sha256');
  const buf = new Uint8Array(4 * WINDOW);
  for (let off = 0; off < n; off += buf.length) {
    const view = buf.subarray(0, Math.min(buf.length, n - off));
    const got = await src.read(view, off);
    if (got !== view.length) throw new ContractError(`${src.name}: read at ${off} gave ${got} of ${view.length} bytes inside the size ${src.size}`);
    h.update(view);
  }
  return Buffer.concat([u64(src.size), h.digest()]);
}
