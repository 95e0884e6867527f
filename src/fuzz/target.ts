/**
 * What a fuzz target is: valid seeds to mutate, and a way to run an input the way the
 * product opens it. Targets live in src/fuzz/targets/ and are listed in targets/index.ts.
 */
import type { Field } from './mutate.ts';

/** How one case ended (the six classes). */
export type CaseClass =
  | 'typed' // (a) a typed error: the product refused the input
  | 'exact' // (b) the seed's output, byte for byte
  | 'undetectable' // (c) other output, from bytes the format cannot check
  | 'undetected' // (d) other output, from bytes the format should have caught
  | 'crash' // (e) an untyped error, an unhandled rejection, a dead worker
  | 'hang'; // (f) over the time budget

export const CLASSES: readonly CaseClass[] = ['typed', 'exact', 'undetectable', 'undetected', 'crash', 'hang'];
/** Classes that fail a run. */
export const FAILING: ReadonlySet<CaseClass> = new Set(['undetected', 'crash', 'hang']);

export interface Seed {
  name: string;
  /** The bytes that get mutated. */
  bytes: Uint8Array;
  /** Integer fields worth hitting with edge values. */
  fields: Field[];
  /** The format detects every change that alters its output (CRCs, digests). */
  guarded: boolean;
  /** Also mutate structurally (the bytes are JSON). */
  json?: boolean;
  /** Recomputes the checksums of a mutated input, to reach the checks behind them. */
  reseal?: (b: Uint8Array) => Uint8Array;
  /** Anything else the target's run needs (file names, expected devices, …). */
  meta?: Record<string, unknown>;
}

/**
 * What a run gives back: output to compare with the seed's (optionally read in windows, some
 * of which may have failed: the others must still match), or a verdict of its own.
 */
export type Outcome = { output: Uint8Array; windows?: Map<number, Uint8Array | null>; failure?: unknown } | { verdict: CaseClass; detail: string };

export interface TargetContext {
  /** A private temporary directory for this worker (emptied between cases by the target). */
  tmp: string;
  /** Most bytes of content a case may read back. */
  readCap: number;
}

export interface Target {
  readonly name: string;
  /** Builds the seeds (deterministically: a case is rebuilt from its number). */
  seeds(ctx: TargetContext): Promise<Seed[]>;
  /** Opens and reads `input` (a mutation of `seed.bytes`) the way the product does. */
  run(seed: Seed, input: Uint8Array, ctx: TargetContext): Promise<Outcome>;
  /** Releases what seeds() or run() keep between cases (servers, caches). */
  close?(): Promise<void>;
}
