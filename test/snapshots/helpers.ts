/** Shared helpers of the snapshot tests: files in temp dirs, digests, replaying ops.json. */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { BlockDevice } from '../../src/io/types.ts';
import { FIXTURES, recipe } from '../helpers/recipes.ts';

export const LSMT = (name: string): string => path.join(FIXTURES, 'lsmt', name);

/** Names files in a directory (made by test/helpers/temp.ts). */
export function inDir(dir: string): { dir: string; file: (name: string) => string } {
  return { dir, file: (name) => path.join(dir, name) };
}

export { deviceDigest } from '../helpers/layers.ts';

export async function readAll(dev: BlockDevice): Promise<Uint8Array> {
  const buf = new Uint8Array(dev.size);
  await dev.read(buf, 0);
  return buf;
}

export type Op = ['write', number, string] | ['trim', number, number];

export interface OpsLayer {
  uuid: string;
  parent_uuid: string;
  ops: Op[];
  sha256_this_layer_alone: string;
}

export async function loadOps(): Promise<{ virtual_size: number; layers: Record<string, OpsLayer> }> {
  return JSON.parse(await readFile(LSMT('ops.json'), 'utf8'));
}

/** Applies ops.json operations to a writable device. */
export async function replay(dev: BlockDevice, ops: Op[]): Promise<void> {
  for (const op of ops) {
    if (op[0] === 'write') await dev.write!(recipe(op[2]), op[1]);
    else await dev.trim!(op[1], op[2]);
  }
}

/** A small deterministic PRNG (xorshift32) so failures reproduce. */
export function prng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 1;
  return (n: number) => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
}
