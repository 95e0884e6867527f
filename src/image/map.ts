/**
 * A stack's map in the shape of `qemu-img map --output=json`, so tools written for qemu read
 * it unchanged: `start`, `length`, `present` (some layer maps the range, data or zeroed),
 * `zero` (reads as zeros), `data` (bytes are stored), and `offset` (where the bytes sit in
 * the layer file) only for data in a plain LSMT layer; in a compressed layer there is no such
 * place, as qemu omits it for compressed clusters. `depth` counts as NBD's
 * `qemu:allocation-depth`: 1 for the top layer, 2 for the one below, 0 where no layer maps.
 */
import { SECTOR } from '../lsmt/format.ts';
import type { Stack } from '../lsmt/stack.ts';

export interface MapEntry {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  offset?: number;
}

/**
 * The map of the whole stack from its merged index. `plain[i]` says whether layer i (bottom
 * = 0) is stored uncompressed, so its offsets are file offsets. Neighbours join as qemu joins
 * them: same depth and kind, and for data, contiguous in the file.
 */
export function stackMap(stack: Stack, plain: readonly boolean[]): MapEntry[] {
  const t = stack.index;
  const n = stack.layers.length;
  const out: MapEntry[] = [];
  const add = (e: MapEntry): void => {
    const last = out.at(-1);
    const joins =
      last &&
      last.start + last.length === e.start &&
      last.depth === e.depth &&
      last.zero === e.zero &&
      last.data === e.data &&
      (last.offset === undefined ? e.offset === undefined : e.offset === last.offset + last.length);
    if (joins) last.length += e.length;
    else out.push(e);
  };
  const hole = (from: number, to: number) => {
    if (to > from) add({ start: from, length: to - from, depth: 0, present: false, zero: true, data: false });
  };
  let pos = 0;
  for (let i = 0; i < t.count; i++) {
    const start = t.offset[i]! * SECTOR;
    const length = t.length[i]! * SECTOR;
    if (length === 0 || start >= stack.size) continue;
    hole(pos, start);
    const layer = t.layer[i]!;
    const zeroed = t.zeroed[i] === 1;
    const e: MapEntry = { start, length: Math.min(length, stack.size - start), depth: n - layer, present: true, zero: zeroed, data: !zeroed };
    if (!zeroed && plain[layer]) e.offset = t.moffset[i]! * SECTOR;
    add(e);
    pos = start + e.length;
  }
  hole(pos, stack.size);
  return out;
}
