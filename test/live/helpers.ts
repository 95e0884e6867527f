/** Shared by the live-disk tests: a small base layer, a served live disk, a raw NBD client. */
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { openImage } from '../../src/image/open.ts';
import { obd, serveJson, type ServeHandle } from '../helpers/cli.ts';
import { RawClient, CMD } from '../nbd/helpers/client.ts';

export const VSIZE = 8 << 20;
export const BLOCK = 4096;

/** Deterministic bytes for (label, n). */
export function pattern(label: string, n = BLOCK): Buffer {
  const out = Buffer.alloc(n);
  for (let at = 0, i = 0; at < n; i++) {
    const h = createHash('sha256').update(`${label}/${i}`).digest();
    at += h.copy(out, at);
  }
  return out;
}

/** A base layer of VSIZE bytes made by obd import from a raw file (returned too). */
export async function baseLayer(dir: string): Promise<{ raw: Buffer; layer: string }> {
  const raw = Buffer.alloc(VSIZE);
  pattern('base', 2 << 20).copy(raw, 1 << 20);
  const rawPath = path.join(dir, 'base.raw');
  await writeFile(rawPath, raw);
  const layer = path.join(dir, 'base.lsmt');
  const r = await obd(['import', rawPath, layer]);
  if (r.code !== 0) throw new Error(`obd import: ${r.stderr}`);
  return { raw, layer };
}

export interface LiveServe {
  serve: ServeHandle;
  socket: string;
  control: string;
}

/** `obd serve LAYERS --writable --upper dir/rw.data dir/rw.index --control dir/c.sock` (+ extra). */
export async function serveLive(dir: string, layers: string[], extra: string[] = []): Promise<LiveServe> {
  const socket = path.join(dir, 's.sock');
  const control = path.join(dir, 'c.sock');
  const serve = await serveJson([...layers, '--writable', '--upper', path.join(dir, 'rw.data'), path.join(dir, 'rw.index'), '--socket', socket, '--control', control, ...extra]);
  return { serve, socket, control };
}

export async function connect(socket: string): Promise<RawClient> {
  const c = await RawClient.connect({ socket });
  await c.handshake();
  return c;
}

export async function mustWrite(c: RawClient, offset: number, data: Uint8Array): Promise<void> {
  const r = await c.write(offset, data);
  if (r.error !== 0) throw new Error(`NBD write at ${offset} failed: ${r.error}`);
}

export async function mustFlush(c: RawClient): Promise<void> {
  const r = await c.run(CMD.FLUSH, 0, 0);
  if (r.error !== 0) throw new Error(`NBD flush failed: ${r.error}`);
}

export async function mustRead(c: RawClient, offset: number, length: number): Promise<Buffer> {
  const r = await c.read(offset, length);
  if (r.error !== 0 || !r.data) throw new Error(`NBD read at ${offset} failed: ${r.error}`);
  return r.data;
}

/** The whole disk of an image reference, read through the library (lazily from the registry). */
export async function readImage(ref: string): Promise<Buffer> {
  const dev = await openImage([ref]);
  try {
    const buf = Buffer.alloc(dev.size);
    await dev.read(buf, 0);
    return buf;
  } finally {
    await dev.close();
  }
}
