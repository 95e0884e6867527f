/**
 * Opening a disk to import: a qcow2 image with its backing chain, an NBD export
 * (nbd://HOST:PORT/NAME, nbd+unix:///NAME?socket=PATH, and nbds… over TLS), or a raw file. The kind is told by
 * the URI scheme, then by the qcow2 magic.
 */
import { FileSource } from '../io/file.ts';
import { RawDevice } from '../io/raw.ts';
import { InvalidArgumentError } from '../io/errors.ts';
import type { BlockDevice, Extent } from '../io/types.ts';
import { isQcow2, openQcow2Chain, type Qcow2Chain } from '../qcow2/chain.ts';

export interface DiskOptions {
  /** Read a qcow2 image whose dirty or corrupt bit is set. */
  force?: boolean;
  /** NBD only: read just the ranges this qemu dirty bitmap marks (see nbd/dirty.ts). */
  dirtyBitmap?: string;
}

export type OpenedDisk = (
  | { kind: 'raw'; device: BlockDevice }
  | { kind: 'qcow2'; device: BlockDevice; chain: Qcow2Chain }
  | { kind: 'nbd'; device: BlockDevice; uri: string }
) & {
  /** What to import when not the whole device (a dirty bitmap's ranges). */
  plan?: AsyncIterable<Extent>;
};

/** True for the NBD URIs openDisk accepts. */
export function isNbdUri(spec: string): boolean {
  return /^nbds?(\+unix|\+tcp)?:\/\//i.test(spec);
}

export async function openDisk(spec: string, opts: DiskOptions = {}): Promise<OpenedDisk> {
  if (isNbdUri(spec)) {
    const { NbdClient } = await import('../nbd/client.ts');
    const { DIRTY_BITMAP_PREFIX, dirtyPlan } = await import('../nbd/dirty.ts');
    const bitmap = opts.dirtyBitmap;
    const client = await NbdClient.connect(spec, { metaContexts: bitmap === undefined ? [] : [DIRTY_BITMAP_PREFIX + bitmap] });
    return { kind: 'nbd', device: client, uri: spec, ...(bitmap === undefined ? {} : { plan: dirtyPlan(client, bitmap) }) };
  }
  if (opts.dirtyBitmap !== undefined) throw new InvalidArgumentError(`a dirty bitmap is read over NBD, and ${spec} is not an NBD URI (export the image with qemu-nbd -B NAME)`);
  const src = await FileSource.open(spec);
  let qcow2: boolean;
  try {
    qcow2 = await isQcow2(src);
  } catch (e) {
    await src.close();
    throw e;
  }
  if (!qcow2) return { kind: 'raw', device: new RawDevice(src) };
  await src.close();
  const chain = await openQcow2Chain(spec, opts);
  return { kind: 'qcow2', device: chain.device, chain };
}
