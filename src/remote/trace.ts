/**
 * Prefetch traces in the reference's binary format (docs/format.md §5): record which
 * ranges of which layer a run read, then replay them later with bounded concurrency to
 * warm the cache before the workload asks. Offsets are in each layer's decoded (LSMT)
 * byte space, so the recorder wraps the layer sources after tar/zfile are peeled.
 */
import { readFile, stat } from 'node:fs/promises';
import { rawCrc32c } from '../io/crc.ts';
import { FormatError, NotSupportedError } from '../io/errors.ts';
import type { ByteSource } from '../io/types.ts';
import { ForwardingSource } from '../io/forwarding.ts';

export const TRACE_MAGIC = 0xc2ef1820;
const HEADER = 24;
const RECORD = 24;

export interface TraceRecord {
  op: 'R' | 'W';
  /** Position in the image's lowers (bottom = 0). */
  layer: number;
  offset: number;
  count: number;
}

export function encodeTrace(records: readonly TraceRecord[]): Buffer {
  const out = Buffer.alloc(HEADER + records.length * RECORD);
  let crc = 0;
  records.forEach((r, i) => {
    const at = HEADER + i * RECORD;
    out.write(r.op, at, 'latin1');
    out.writeUInt32LE(r.layer, at + 4);
    out.writeBigUInt64LE(BigInt(r.count), at + 8);
    out.writeBigInt64LE(BigInt(r.offset), at + 16);
    crc = rawCrc32c(out.subarray(at, at + RECORD), crc);
  });
  out.writeUInt32LE(TRACE_MAGIC, 0);
  out.writeBigUInt64LE(BigInt(records.length * RECORD), 8);
  out.writeUInt32LE(crc, 16);
  return out;
}

export function decodeTrace(buf: Uint8Array, name: string): TraceRecord[] {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.length);
  if (b.length < HEADER || b.readUInt32LE(0) !== TRACE_MAGIC) throw new FormatError(name, `not a trace file (magic 0x${TRACE_MAGIC.toString(16)})`, 0);
  const dataSize = Number(b.readBigUInt64LE(8));
  if (b.length !== HEADER + dataSize || dataSize % RECORD !== 0) throw new FormatError(name, `size ${b.length} does not match data_size ${dataSize} + ${HEADER}`, 8);
  let crc = 0;
  const out: TraceRecord[] = [];
  for (let at = HEADER; at < b.length; at += RECORD) {
    crc = rawCrc32c(b.subarray(at, at + RECORD), crc);
    const op = String.fromCharCode(b[at]!);
    if (op !== 'R' && op !== 'W') throw new FormatError(name, `record op "${op}" is neither R nor W`, at);
    const offset = Number(b.readBigInt64LE(at + 16));
    const count = Number(b.readBigUInt64LE(at + 8));
    if (offset < 0 || !Number.isSafeInteger(offset + count)) throw new FormatError(name, `record range ${offset}+${count} is invalid`, at);
    out.push({ op, layer: b.readUInt32LE(at + 4), offset, count });
  }
  if (crc !== b.readUInt32LE(16)) throw new FormatError(name, `checksum 0x${b.readUInt32LE(16).toString(16)} does not match records (0x${crc.toString(16)})`, 16);
  return out;
}

/** What a trace path asks for: missing → off; empty → record; a trace → replay. */
export async function traceMode(path: string): Promise<{ mode: 'off' } | { mode: 'record' } | { mode: 'replay'; records: TraceRecord[] }> {
  const st = await stat(path).catch(() => undefined);
  if (!st) return { mode: 'off' };
  if (st.size === 0) return { mode: 'record' };
  const b = await readFile(path);
  if (b.length >= 4 && b.readUInt32LE(0) === TRACE_MAGIC) return { mode: 'replay', records: decodeTrace(b, path) };
  throw new NotSupportedError(`${path}: file-list prefetch (a list of paths instead of a trace) is not supported`);
}

/** Collects reads while recording. */
export class TraceRecorder {
  readonly records: TraceRecord[] = [];
  record(op: 'R' | 'W', layer: number, offset: number, count: number): void {
    this.records.push({ op, layer, offset, count });
  }
  encode(): Buffer {
    return encodeTrace(this.records);
  }
}

/** Passes reads through to `inner` and records each as an 'R' of layer `layer`. */
export class TracingSource extends ForwardingSource {
  readonly layer: number;
  readonly recorder: TraceRecorder;
  constructor(inner: ByteSource, layer: number, recorder: TraceRecorder) {
    super(inner);
    this.layer = layer;
    this.recorder = recorder;
  }
  override read(buf: Uint8Array, offset: number): Promise<number> {
    this.recorder.record('R', this.layer, offset, buf.length);
    return this.inner.read(buf, offset);
  }
  /** Reads served from memory or the page cache are recorded too: a replay must warm them as well. */
  override tryReadSync(buf: Uint8Array, offset: number): number | undefined {
    const n = this.inner.tryReadSync?.(buf, offset);
    if (n !== undefined) this.recorder.record('R', this.layer, offset, buf.length);
    return n;
  }
}

export interface ReplayResult {
  records: number;
  bytes: number;
  failed: number;
}

/**
 * Reads every 'R' record through `layers[record.layer]` with `concurrency` workers and
 * buffers of at most 1 MiB. Errors on single records are counted, not thrown: a prefetch
 * is a hint.
 */
export async function replayTrace(records: readonly TraceRecord[], layers: readonly ByteSource[], opts: { concurrency?: number; signal?: AbortSignal } = {}): Promise<ReplayResult> {
  const MAX = 1 << 20;
  // Reads are made as workers ask for them, each record clamped to its layer: a trace from
  // disk may claim a count of 2^60 bytes, which must not become a queue of 2^40 reads.
  function* jobs(): Generator<{ src: ByteSource; offset: number; count: number }> {
    for (const r of records) {
      const src = layers[r.layer];
      if (r.op !== 'R' || !src) continue;
      const end = Math.min(r.offset + r.count, src.size);
      for (let o = r.offset; o < end; o += MAX) yield { src, offset: o, count: Math.min(MAX, end - o) };
    }
  }
  const queue = jobs();
  const result: ReplayResult = { records: 0, bytes: 0, failed: 0 };
  const worker = async () => {
    const buf = new Uint8Array(MAX);
    for (let next = queue.next(); !next.done && !opts.signal?.aborted; next = queue.next()) {
      const j = next.value;
      try {
        // Not `bytes += await …`: that reads bytes before the await and loses other workers' counts.
        const n = await j.src.read(buf.subarray(0, j.count), j.offset);
        result.bytes += n;
        result.records++;
      } catch {
        result.failed++;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, opts.concurrency ?? 16) }, worker));
  return result;
}
