/**
 * Incremental backup reads (the flow of qemu's incremental backups): the export's
 * `qemu:dirty-bitmap:NAME` context marks the ranges written since the bitmap was enabled
 * (flag 1 = dirty). The plan holds those ranges only, each split by base:allocation into
 * data and zero, so an import reads just the dirty data and takes the rest to be unchanged.
 */
import type { Extent } from '../io/types.ts';
import type { NbdClient } from './client.ts';
import { CTX_BASE_ALLOCATION, STATE_HOLE, STATE_ZERO } from './protocol.ts';

export const DIRTY_BITMAP_PREFIX = 'qemu:dirty-bitmap:';
const DIRTY = 1;

/** The dirty ranges of bitmap `bitmap` of the export, as data / zero / hole extents in order. */
export async function* dirtyPlan(client: NbdClient, bitmap: string): AsyncIterable<Extent> {
  const ctx = DIRTY_BITMAP_PREFIX + bitmap;
  const alloc = client.contexts.has(CTX_BASE_ALLOCATION);
  for (let at = 0; at < client.size; ) {
    const status = await client.blockStatus(at, client.size - at);
    const dirty = status.get(ctx)!;
    const allocation = alloc ? status.get(CTX_BASE_ALLOCATION)! : [{ offset: at, length: dirty.reduce((s, r) => s + r.length, 0), flags: 0 }];
    let a = 0;
    for (const d of dirty) {
      if (d.flags & DIRTY) {
        // Intersect the dirty run with the allocation runs it overlaps.
        const end = d.offset + d.length;
        while (a < allocation.length && allocation[a]!.offset + allocation[a]!.length <= d.offset) a++;
        for (let k = a; k < allocation.length && allocation[k]!.offset < end; k++) {
          const r = allocation[k]!;
          const s = Math.max(r.offset, d.offset);
          const e = Math.min(r.offset + r.length, end);
          const kind = r.flags & STATE_ZERO ? (r.flags & STATE_HOLE ? 'hole' : 'zero') : 'data';
          yield { offset: s, length: e - s, kind, layer: 0 };
        }
      }
      at = d.offset + d.length;
    }
  }
}
