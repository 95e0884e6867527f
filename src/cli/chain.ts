/**
 * Chain verification as every stacking command does it: on unless --no-verify-chain, a
 * broken link names the way out, and what could not be checked is a warning on stderr (so
 * --json output stays clean).
 */
import { BrokenChainError, chainMembers, checkChain } from '../image/chain.ts';
import type { Stack } from '../lsmt/stack.ts';

/**
 * The options of every command that stacks layers: `.option(...VERIFY_CHAIN).option(...NO_VERIFY_CHAIN)`.
 * Checking is the default (an absent flag leaves the option undefined, read as on).
 */
export const VERIFY_CHAIN = ['--verify-chain', "check that each layer's parent uuid is the uuid of the layer below (the default)"] as const;
export const NO_VERIFY_CHAIN = ['--no-verify-chain', 'stack the layers even when a parent uuid does not match'] as const;

export function warn(message: string): void {
  process.stderr.write(`obd: warning: ${message}\n`);
}

/** A broken-chain error with what to check and how to override it added; other errors as they are. */
function hinted(e: unknown): unknown {
  return e instanceof BrokenChainError ? new BrokenChainError(`${e.message} (check the layer order, or pass --no-verify-chain)`, { cause: e }) : e;
}

/** Runs `open` (e.g. openImage with verifyChain), giving a broken chain the hint. */
export async function withChainHint<T>(open: () => Promise<T>): Promise<T> {
  try {
    return await open();
  } catch (e) {
    throw hinted(e);
  }
}

/** Checks the chain of opened layers (when `verify`), printing warnings; throws with the hint. */
export function verifyLayers(layers: Parameters<typeof chainMembers>[0], verify: boolean | undefined): void {
  if (verify === false) return;
  try {
    for (const w of checkChain(chainMembers(layers))) warn(w);
  } catch (e) {
    throw hinted(e);
  }
}

/** Opens layer files as a stack, bottom first, checking their chain unless `verify` is false. */
export async function openVerifiedStack(files: readonly string[], verify: boolean | undefined): Promise<Stack> {
  const { openStack } = await import('../image/open.ts');
  const stack = await openStack(files);
  try {
    verifyLayers(stack.layers, verify);
    return stack;
  } catch (e) {
    await stack.close();
    throw e;
  }
}
