/**
 * Sorting a case's ending into a class: which errors count as typed refusals, and what a
 * changed output means for a guarded or unguarded format.
 */
import { ObdError } from '../io/errors.ts';
import type { CaseClass } from './target.ts';

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

export function classifyOutput(expected: Uint8Array, got: Uint8Array, guarded: boolean): CaseClass {
  if (Buffer.from(expected.buffer, expected.byteOffset, expected.length).equals(got)) return 'exact';
  return guarded ? 'undetected' : 'undetectable';
}
