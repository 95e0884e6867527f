/**
 * Turning a device's extents into what NBD reports: block status descriptors for
 * `base:allocation` and `qemu:allocation-depth`, and the data/hole split of a structured read.
 */
import type { Extent } from '../io/types.ts';
import {
  CHUNK_HEADER_SIZE,
  CTX_ID_BASE,
  CTX_ID_DEPTH,
  REPLY_FLAG_DONE,
  REPLY_TYPE_BLOCK_STATUS,
  STATE_HOLE,
  STATE_ZERO,
} from './protocol.ts';
import { putChunkHeader } from './replies.ts';

/**
 * `base:allocation` flags. Holes and zeroed extents both read as zeros and own no stored
 * bytes, so both are HOLE|ZERO (as qemu reports qcow2 zero clusters); data is 0.
 */
export function allocationFlags(e: Extent): number {
  return e.kind === 'data' ? 0 : STATE_HOLE | STATE_ZERO;
}

/**
 * `qemu:allocation-depth`: 0 when no layer backs the range, 1 for the top layer, 2 for the
 * one below it, and so on. A zeroed extent is allocated at its layer: it hides lower data.
 */
export function allocationDepth(e: Extent, layerCount: number): number {
  if (e.kind === 'hole' || e.layer < 0) return 0;
  return Math.max(1, layerCount - e.layer);
}

export interface StatusRequest {
  cookieHi: number;
  cookieLo: number;
  base: boolean;
  depth: boolean;
  layerCount: number;
  /** NBD_CMD_FLAG_REQ_ONE: exactly one descriptor per context. */
  reqOne: boolean;
  maxDescriptors: number;
}

/** Descriptor runs as [length, flags, length, flags, …], joining neighbours with equal flags. */
function runs(extents: readonly Extent[], flagsOf: (e: Extent) => number, limit: number): number[] {
  const out: number[] = [];
  for (const e of extents) {
    if (e.length <= 0) continue;
    const f = flagsOf(e);
    const n = out.length;
    if (n > 0 && out[n - 1] === f && out[n - 2]! + e.length <= 0xffffffff) out[n - 2] = out[n - 2]! + e.length;
    else {
      if (n / 2 >= limit) break;
      out.push(e.length, f);
    }
  }
  return out;
}

/** The BLOCK_STATUS reply: one chunk per selected context, the last one flagged DONE. */
export function statusReply(extents: readonly Extent[], req: StatusRequest): Buffer {
  const limit = req.reqOne ? 1 : req.maxDescriptors;
  const parts: [number, number[]][] = [];
  if (req.base) parts.push([CTX_ID_BASE, runs(extents, allocationFlags, limit)]);
  if (req.depth) parts.push([CTX_ID_DEPTH, runs(extents, (e) => allocationDepth(e, req.layerCount), limit)]);
  let size = 0;
  for (const [, r] of parts) size += CHUNK_HEADER_SIZE + 4 + r.length * 4;
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  parts.forEach(([id, r], i) => {
    const flags = i === parts.length - 1 ? REPLY_FLAG_DONE : 0;
    putChunkHeader(out, at, flags, REPLY_TYPE_BLOCK_STATUS, req.cookieHi, req.cookieLo, 4 + r.length * 4);
    out.writeUInt32BE(id, at + CHUNK_HEADER_SIZE);
    at += CHUNK_HEADER_SIZE + 4;
    for (const v of r) {
      out.writeUInt32BE(v, at);
      at += 4;
    }
  });
  return out;
}

export interface ReadSegment {
  offset: number;
  length: number;
  hole: boolean;
}

/**
 * Splits a read into data and hole segments. Zero-reading extents shorter than `minHole`
 * are sent as data (a hole chunk would save little), and neighbours of one kind are joined.
 */
export function planRead(extents: readonly Extent[], minHole: number): ReadSegment[] {
  const out: ReadSegment[] = [];
  for (const e of extents) {
    if (e.length <= 0) continue;
    const hole = e.kind !== 'data' && e.length >= minHole;
    const last = out.at(-1);
    if (last && last.hole === hole && last.offset + last.length === e.offset) last.length += e.length;
    else out.push({ offset: e.offset, length: e.length, hole });
  }
  return out;
}
