/**
 * Turning (run seed, target, case number) into one mutated input, the same way in the
 * worker that runs it and in the runner that must write it out after a hang.
 */
import { mutateJson } from './json-mutate.ts';
import { mutateBytes } from './mutate.ts';
import { Rng } from './rng.ts';
import type { Seed } from './target.ts';

export interface FuzzCase {
  seedIndex: number;
  bytes: Uint8Array;
  ops: string[];
  /** Checksums were recomputed after mutating: a change is undetectable by construction. */
  resealed: boolean;
}

export function makeCase(seeds: readonly Seed[], runSeed: string, target: string, caseNo: number): FuzzCase {
  const rng = new Rng(runSeed, target, caseNo);
  const seedIndex = rng.int(seeds.length);
  const seed = seeds[seedIndex]!;
  let m;
  if (seed.json && rng.chance(0.6)) {
    try {
      m = mutateJson(seed.bytes, rng);
    } catch {
      m = mutateBytes(seed.bytes, seed.fields, rng);
    }
  } else {
    m = mutateBytes(seed.bytes, seed.fields, rng, seeds.map((s) => s.bytes));
  }
  const resealed = !!seed.reseal && rng.chance(0.3);
  const bytes = resealed ? seed.reseal!(m.bytes) : m.bytes;
  return { seedIndex, bytes, ops: resealed ? [...m.ops, 'reseal checksums'] : m.ops, resealed };
}
