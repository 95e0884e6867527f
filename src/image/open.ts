/**
 * Opening images: pick the source for each layer, peel wrappers by magic
 * (tar → zfile → LSMT), and stack the layers bottom → top.
 */
import { FormatError } from '../io/errors.ts';
import { FileSource } from '../io/file.ts';
import type { BlockDevice, ByteSource } from '../io/types.ts';
import { readAt } from '../io/util.ts';
import { hasLsmtMagic } from '../lsmt/format.ts';
import { openSealedLayer, type SealedLayer } from '../lsmt/sealed.ts';
import { Stack, type StackOptions } from '../lsmt/stack.ts';
import { isZFile, ZFileReader } from '../zfile/reader.ts';
import { openTarEntry } from '../zfile/tar.ts';

/** How a layer blob was wrapped, outermost first (e.g. ['tar', 'zfile', 'lsmt']). */
export type Wrapping = ('tar' | 'zfile' | 'lsmt')[];

export interface OpenedLayer extends SealedLayer {
  readonly wrapping: Wrapping;
  /** Size of the stored blob (compressed and wrapped), as opposed to the decoded layer. */
  readonly storedBytes: number;
}

/** Peels tar and zfile wrappers off `src` and opens the LSMT layer inside. */
export async function openLayerSource(src: ByteSource): Promise<OpenedLayer> {
  const wrapping: Wrapping = [];
  let cur: ByteSource = src;
  const tar = await openTarEntry(cur);
  if (tar) {
    wrapping.push('tar');
    cur = tar;
  }
  if (await isZFile(cur)) {
    wrapping.push('zfile');
    cur = await ZFileReader.open(cur);
  }
  const head = await readAt(cur, 0, Math.min(512, cur.size));
  if (!hasLsmtMagic(head)) {
    const inside = wrapping.length ? ` inside the ${wrapping.join(' > ')} wrapper` : '';
    throw new FormatError(src.name, `not an LSMT layer (no LSMT magic at offset 0${inside})`, 0);
  }
  wrapping.push('lsmt');
  const layer = await openSealedLayer(cur);
  return { ...layer, wrapping, storedBytes: src.size };
}

/** Opens one layer file (plain, zfile-compressed or tar-wrapped). */
export async function openLayerFile(path: string): Promise<OpenedLayer> {
  const src = await FileSource.open(path);
  try {
    return await openLayerSource(src);
  } catch (e) {
    await src.close();
    throw e;
  }
}

/** Opens layer files bottom → top; on failure closes whatever was opened. */
export async function openLayerFiles(paths: readonly string[]): Promise<OpenedLayer[]> {
  const settled = await Promise.allSettled(paths.map((p) => openLayerFile(p)));
  const failed = settled.find((r) => r.status === 'rejected');
  if (failed) {
    await Promise.all(settled.map((r) => (r.status === 'fulfilled' ? r.value.source.close() : undefined)));
    throw (failed as PromiseRejectedResult).reason;
  }
  return settled.map((r) => (r as PromiseFulfilledResult<OpenedLayer>).value);
}

/** Opens layer files as one read-only stack. */
export async function openStack(paths: readonly string[], opts: StackOptions = {}): Promise<Stack> {
  const layers = await openLayerFiles(paths);
  try {
    return new Stack(layers, opts);
  } catch (e) {
    await Promise.all(layers.map((l) => l.source.close()));
    throw e;
  }
}

export interface ImageOptions {
  upper?: { data: string; index: string };
  readOnly?: boolean;
  verifyChain?: boolean;
}

/** Opens an image given as layer files bottom → top. */
export async function openImage(args: readonly string[], opts: ImageOptions = {}): Promise<BlockDevice> {
  return openStack(args, { verifyChain: opts.verifyChain });
}
