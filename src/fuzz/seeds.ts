/**
 * Building valid seeds with the project's own writers (sealed layers, zfiles, tar
 * wrappers), reading the reference fixtures, and listing the integer fields of each format
 * that mutations aim at.
 */
import { createHash } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MemorySink } from '../io/memory.ts';
import { ENTRY_SIZE, HT_SPACE as LSMT_HT, SECTOR } from '../lsmt/format.ts';
import { SealedLayerWriter, type ExtentSpec, type LayerIdentity } from '../lsmt/writer.ts';
import { HT_SPACE as Z_HT } from '../zfile/format.ts';
import { ZFileWriter, type ZFileWriterOptions } from '../zfile/writer.ts';
import type { Field } from './mutate.ts';

export const FIXTURES = fileURLToPath(new URL('../../test/fixtures/', import.meta.url));

export function readFixture(rel: string): Promise<Uint8Array> {
  return readFile(path.join(FIXTURES, rel));
}

/** Deterministic bytes: sha256(label ‖ counter) blocks, text-like when `text` (compressible). */
export function content(label: string, n: number, text = false): Uint8Array {
  const out = new Uint8Array(n);
  for (let k = 0, at = 0; at < n; k++, at += 32) {
    const h = createHash('sha256').update(`${label}/${k}`).digest();
    if (text) for (let i = 0; i < 32; i++) h[i] = 0x61 + (h[i]! % 8);
    out.set(h.subarray(0, Math.min(32, n - at)), at);
  }
  return out;
}

const MiB = 1 << 20;

/** A small layer with every kind of extent: random data, text, zeroed, and holes between. */
export function sampleExtents(label: string): ExtentSpec[] {
  return [
    { offset: 0, data: content(`${label}-a`, 64 * 1024) },
    { offset: 512 * 1024 + 512, data: content(`${label}-b`, 40 * 1024 + 512, true) },
    { offset: MiB, zeroLength: 96 * 1024 },
    { offset: 2 * MiB - 4096, data: content(`${label}-c`, 8192) },
    { offset: 3 * MiB, data: content(`${label}-d`, 300 * 1024, true) },
  ];
}

/** A sealed layer written into memory by SealedLayerWriter. */
export async function layerBytes(id: LayerIdentity, extents: readonly ExtentSpec[]): Promise<Uint8Array> {
  const sink = new MemorySink('seed-layer');
  const w = new SealedLayerWriter(sink, id);
  for (const e of extents) {
    if ('data' in e) await w.addData(e.offset / SECTOR, e.data);
    else await w.addZeroed(e.offset / SECTOR, e.zeroLength / SECTOR);
  }
  await w.finish();
  return sink.bytes();
}

/** `data` compressed by ZFileWriter into a file under `tmp`, read back. */
export async function zfileBytes(tmp: string, data: Uint8Array, opts: ZFileWriterOptions): Promise<Uint8Array> {
  const file = path.join(tmp, `seed-${process.pid}-${Math.random().toString(36).slice(2)}.zfile`);
  try {
    const w = await ZFileWriter.create(file, opts);
    await w.write(data);
    await w.close();
    return await readFile(file);
  } finally {
    await rm(file, { force: true });
  }
}

function u64s(base: number, names: readonly [number, string][], width: 4 | 8 = 8): Field[] {
  return names.map(([off, name]) => ({ at: base + off, width, name }));
}

/** LSMT header and trailer fields, and the first index entries' words. */
export function lsmtFields(b: Uint8Array, indexOffset?: number, entries = 8): Field[] {
  const ht = (base: number, role: string): Field[] => [
    { at: base + 24, width: 4, name: `${role}.size` },
    { at: base + 28, width: 4, name: `${role}.flags` },
    ...u64s(base, [[32, `${role}.index_offset`], [40, `${role}.index_size`], [48, `${role}.virtual_size`]]),
    { at: base + 132, width: 1, name: `${role}.version` },
  ];
  const out = [...ht(0, 'header')];
  if (b.length >= 2 * LSMT_HT) out.push(...ht(b.length - LSMT_HT, 'trailer'));
  if (indexOffset !== undefined) {
    for (let i = 0; i < entries && indexOffset + (i + 1) * ENTRY_SIZE <= b.length; i++) {
      const at = indexOffset + i * ENTRY_SIZE;
      out.push({ at, width: 4, name: `entry${i}.offset_lo` }, { at: at + 4, width: 4, name: `entry${i}.offset_hi|len` }, { at: at + 8, width: 4, name: `entry${i}.moffset_lo` }, { at: at + 12, width: 4, name: `entry${i}.moffset_hi|flags` });
    }
  }
  return out;
}

/** The index offset a sealed layer's trailer names (for aiming at its entries). */
export function lsmtIndexOffset(b: Uint8Array): number {
  return Number(new DataView(b.buffer, b.byteOffset, b.length).getBigUint64(b.length - LSMT_HT + 32, true));
}

/** zfile header and trailer fields (the zfile starting at `base`) and the first jump-table entries. */
export function zfileFields(b: Uint8Array, base = 0, end = b.length): Field[] {
  const ht = (at: number, role: string): Field[] => [
    { at: at + 24, width: 4, name: `${role}.struct_size` },
    { at: at + 28, width: 4, name: `${role}.digest` },
    ...u64s(at, [[32, `${role}.flags`], [40, `${role}.index_offset`], [48, `${role}.index_size`], [56, `${role}.original_size`]]),
    { at: at + 64, width: 4, name: `${role}.index_crc` },
    { at: at + 72, width: 4, name: `${role}.block_size` },
    { at: at + 76, width: 1, name: `${role}.algo` },
    { at: at + 77, width: 1, name: `${role}.level` },
    { at: at + 78, width: 1, name: `${role}.use_dict` },
    { at: at + 84, width: 4, name: `${role}.dict_size` },
    { at: at + 88, width: 1, name: `${role}.verify` },
  ];
  const trailerAt = end - Z_HT;
  const out = [...ht(base, 'header'), ...ht(trailerAt, 'trailer')];
  const dv = new DataView(b.buffer, b.byteOffset, b.length);
  const tableAt = base + Number(dv.getBigUint64(trailerAt + 40, true));
  for (let i = 0; i < 8 && tableAt + 4 * (i + 1) <= trailerAt; i++) out.push({ at: tableAt + 4 * i, width: 4, name: `jump${i}` });
  return out;
}

export { MiB };
