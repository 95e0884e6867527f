/**
 * What a converted layer is named by, all derived from the source image's diffIDs so the same
 * OCI layer over the same parent chain gets the same overlaybd layer in any image, on any
 * machine (docs/convert.md §3):
 * - the chainID of layer n (OCI image spec): chainID(0) = diffID(0),
 *   chainID(n) = sha256(chainID(n−1) + " " + diffID(n));
 * - the LSMT layer uuid: the first 32 hex digits of the chainID as 8-4-4-4-12, as the
 *   reference convertor (docs/convert.md §2), parent = the layer below's;
 * - the ext4 uuid and directory hash seed: from the bottom chainID and the virtual size
 *   (the filesystem is made once, by the bottom layer, and every later layer inherits it).
 */
import { createHash } from 'node:crypto';

export function chainIds(diffIds: readonly string[]): string[] {
  const out: string[] = [];
  for (const d of diffIds) out.push(out.length === 0 ? d : 'sha256:' + createHash('sha256').update(`${out.at(-1)} ${d}`).digest('hex'));
  return out;
}

/** The reference convertor's layer uuid for a chainID (`sha256:` + hex): hex 0..32 as 8-4-4-4-12. */
export function uuidOfChainId(chainId: string): string {
  const h = chainId.slice(chainId.indexOf(':') + 1);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`.toUpperCase();
}

export interface FsIdentity {
  uuid: Uint8Array;
  hashSeed: Uint8Array;
}

/** The ext4 uuid and hash seed of an image whose bottom layer has `chainId0`, at `vsize` bytes. */
export function fsIdentity(chainId0: string, vsize: number): FsIdentity {
  const derive = (what: string) => new Uint8Array(createHash('sha256').update(`overlaybd-ts convert ${what}\0${chainId0}\0${vsize}`).digest().subarray(0, 16));
  return { uuid: derive('ext4 uuid'), hashSeed: derive('ext4 hash seed') };
}
