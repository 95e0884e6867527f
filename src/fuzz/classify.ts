/**
 * Sorting a case's ending into a class: which errors count as typed refusals, and what a
 * changed output means for a guarded or unguarded format.
 */
import { ObdError } from '../io/errors.ts';
import type { CaseClass, Outcome } from './target.ts';

/** A refusal the product meant: one of its typed errors. */
export function isTypedError(e: unknown): boolean {
  return e instanceof ObdError;
}

/** One line naming an error: class, code, message and the first frame of its stack. */
export function describeError(e: unknown): string {
  if (!(e instanceof Error)) return `non-error thrown: ${String(e).slice(0, 200)}`;
  const code = (e as NodeJS.ErrnoException).code;
  const frame = e.stack?.split('\n').find((l) => l.trim().startsWith('at '))?.trim();
  return `${e.constructor.name}${code ? ` (${code})` : ''}: ${e.message.slice(0, 300)}${frame ? ` [${frame}]` : ''}`;
}

export function classifyError(e: unknown): { cls: CaseClass; detail: string } {
  return { cls: isTypedError(e) ? 'typed' : 'crash', detail: describeError(e) };
}

type Output = Exclude<Outcome, { verdict: CaseClass }>;

const same = (a: Uint8Array | null | undefined, b: Uint8Array | null | undefined) => !!a && !!b && Buffer.from(a.buffer, a.byteOffset, a.length).equals(b);

/**
 * A read-back against the seed's: an untyped failure is a crash; any window that read
 * without error must match the seed's, else the change was undetectable or undetected;
 * a typed failure with everything else intact is a refusal.
 */
export function classifyOutput(expected: Output, got: Output, guarded: boolean): { cls: CaseClass; detail: string } {
  if (got.failure !== undefined && !isTypedError(got.failure)) return { cls: 'crash', detail: describeError(got.failure) };
  const changed = !same(expected.output, got.output) || [...(got.windows ?? [])].some(([off, d]) => d !== null && !same(d, expected.windows?.get(off)));
  const after = got.failure === undefined ? '' : `read back other bytes beside a refused read: ${describeError(got.failure)}`;
  if (changed) return { cls: guarded ? 'undetected' : 'undetectable', detail: after };
  if (got.failure !== undefined) return { cls: 'typed', detail: describeError(got.failure) };
  return { cls: 'exact', detail: '' };
}
