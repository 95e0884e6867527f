/**
 * The record of the stack a live disk serves (docs/control-api.md §4): a config.v1.json in
 * the reference's format, replaced atomically (temp + fsync + rename + directory fsync) at
 * each switch, so after a crash it is the old stack or the new one, never a mix.
 *
 * Extensions: a lower may be a writable layer sealed by a snapshot but not yet committed,
 * `{"data": …, "index": …}`; it is read-only from then on. `"obdSnapshot": true` marks
 * files a snapshot created, which the live disk deletes once nothing records them.
 * `obdPushed` notes the last push, so the next one uploads only the new layer.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from '../io/atomic.ts';
import { wrapFsError } from '../io/file.ts';
import { InvalidArgumentError } from '../io/errors.ts';
import { parseImageConfig, type ImageConfigV1, type LowerConfig } from '../image/config.ts';

export interface WritableLowerConfig extends LowerConfig {
  data: string;
  index: string;
  obdSnapshot?: boolean;
}

export interface UpperRecord {
  data: string;
  index: string;
  obdSnapshot?: boolean;
}

export interface StackRecord extends ImageConfigV1 {
  lowers: (LowerConfig | WritableLowerConfig)[];
  upper?: UpperRecord;
  /** The last push of this disk: its reference and layer digests, bottom → top (the next push appends to it). */
  obdPushed?: { reference: string; digests: string[] };
}

export function isWritableLower(l: LowerConfig): l is WritableLowerConfig {
  const w = l as Partial<WritableLowerConfig>;
  return typeof w.data === 'string' && typeof w.index === 'string';
}

/** Reads and checks a record; relative paths are made absolute from its directory. */
export async function readRecord(file: string): Promise<StackRecord> {
  const abs = path.resolve(file);
  let text: string;
  try {
    text = await readFile(abs, 'utf8');
  } catch (e) {
    throw wrapFsError(abs, e);
  }
  const doc = parseImageConfig(text, abs) as StackRecord;
  const at = (p: string) => path.resolve(path.dirname(abs), p);
  doc.lowers.forEach((l, i) => {
    const w = l as Record<string, unknown>;
    if ((w.data === undefined) !== (w.index === undefined) || (w.data !== undefined && (typeof w.data !== 'string' || typeof w.index !== 'string'))) {
      throw new InvalidArgumentError(`${abs}: lowers[${i}] must give both "data" and "index" (a sealed writable layer) or neither`);
    }
    if (isWritableLower(l)) {
      l.data = at(l.data);
      l.index = at(l.index);
    } else if (l.file) l.file = at(l.file);
  });
  const pushed = doc.obdPushed as unknown;
  if (pushed !== undefined) {
    const p = pushed as { reference?: unknown; digests?: unknown };
    // A damaged note only costs a full push next time.
    if (typeof p.reference !== 'string' || !Array.isArray(p.digests) || !p.digests.every((d) => typeof d === 'string')) delete doc.obdPushed;
  }
  if (doc.upper && (!doc.upper.data || !doc.upper.index)) throw new InvalidArgumentError(`${abs}: upper needs both "data" and "index" for a live disk`);
  if (doc.upper) {
    doc.upper.data = at(doc.upper.data);
    doc.upper.index = at(doc.upper.index);
  }
  return doc;
}

/** Replaces the record atomically and durably. */
export async function writeRecord(file: string, record: StackRecord): Promise<void> {
  await writeFileAtomic(path.resolve(file), JSON.stringify(record, null, 2) + '\n');
}
