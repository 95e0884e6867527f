/**
 * Opening a qcow2 image with its backing chain: each backing file name is resolved as qemu
 * does (absolute, or relative to the directory of the image that names it), its format taken
 * from the backing format extension or, without one, probed by magic (raw or qcow2).
 */
import { realpath } from 'node:fs/promises';
import path from 'node:path';
import { ChainError, FormatError, NotFoundError } from '../io/errors.ts';
import { FileSource } from '../io/file.ts';
import type { ByteSource } from '../io/types.ts';
import { readAt } from '../io/util.ts';
import { Qcow2UnsupportedError } from './errors.ts';
import { Qcow2File } from './file.ts';
import { Qcow2Device } from './device.ts';
import { RawDevice } from '../io/raw.ts';
import { hasQcow2Magic, type HeaderOptions } from './header.ts';

/** Deeper chains than this are taken for a loop qemu would refuse too. */
const MAX_DEPTH = 256;

/** One image of a chain; the device reads it with everything below it. A qcow2 image also knows what it stores itself. */
export type ChainImage = { path: string; format: 'qcow2'; device: Qcow2Device } | { path: string; format: 'raw'; device: RawDevice };

export interface Qcow2Chain {
  /** The top image read through its whole chain. */
  device: Qcow2Device | RawDevice;
  /** Bottom first; the last is the image that was opened. */
  images: ChainImage[];
}

export type OpenChainOptions = HeaderOptions;

/** True when the file at the start of `src` is a qcow2 image. */
export async function isQcow2(src: ByteSource): Promise<boolean> {
  return src.size >= 4 && hasQcow2Magic(await readAt(src, 0, 4));
}

/** Opens `file` (qcow2, or raw when `format` says so) and every backing file below it. */
export async function openQcow2Chain(file: string, opts: OpenChainOptions = {}): Promise<Qcow2Chain> {
  // Open top-down, remembering what to chain, then build the devices bottom-up.
  const opened: { path: string; file?: Qcow2File; raw?: ByteSource }[] = [];
  const seen = new Set<string>();
  try {
    let cur = file;
    let format: string | undefined = 'qcow2';
    for (;;) {
      const real = await realpath(cur).catch(() => cur);
      if (seen.has(real)) throw new ChainError(`${cur}: backing chain loops back to this file`);
      if (seen.size >= MAX_DEPTH) throw new ChainError(`${file}: backing chain deeper than ${MAX_DEPTH} images`);
      seen.add(real);
      const namedBy = opened.at(-1)?.path;
      const src = await FileSource.open(cur).catch((e) => {
        throw namedBy && e instanceof NotFoundError ? new NotFoundError(`${cur}: no such file (the backing file of ${namedBy})`, { cause: e }) : e;
      });
      const magic = await isQcow2(src).catch(async (e) => {
        await src.close();
        throw e;
      });
      if (format === undefined) format = magic ? 'qcow2' : 'raw';
      if (format === 'raw') {
        opened.push({ path: cur, raw: src });
        break;
      }
      if (format !== 'qcow2') {
        await src.close();
        throw new Qcow2UnsupportedError(namedBy ?? cur, `backing format "${format}"`, 'only raw and qcow2 backing files are read');
      }
      if (!magic) {
        await src.close();
        throw new FormatError(cur, namedBy ? `named as a qcow2 backing file by ${namedBy}, but has no qcow2 magic` : 'not a qcow2 image (no QFI\\xfb magic)', 0);
      }
      const q = await Qcow2File.open(src, opts).catch(async (e) => {
        await src.close();
        throw e;
      });
      opened.push({ path: cur, file: q });
      const h = q.header;
      if (h.backingFile === undefined) break;
      if (/^[a-z][a-z0-9+.-]*:/i.test(h.backingFile)) {
        throw new Qcow2UnsupportedError(cur, `backing file "${h.backingFile}"`, 'only local backing files are read; a protocol or json: backing is not');
      }
      cur = path.resolve(path.dirname(cur), h.backingFile);
      format = h.backingFormat;
    }
  } catch (e) {
    await Promise.allSettled(opened.map((o) => (o.file ?? o.raw)!.close()));
    throw e;
  }
  const images: ChainImage[] = [];
  let below: Qcow2Device | RawDevice | undefined;
  for (const o of opened.reverse()) {
    if (o.file) {
      const device = new Qcow2Device(o.file, below);
      images.push({ path: o.path, format: 'qcow2', device });
      below = device;
    } else {
      const device = new RawDevice(o.raw!);
      images.push({ path: o.path, format: 'raw', device });
      below = device;
    }
  }
  return { device: below!, images };
}

