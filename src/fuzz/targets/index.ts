/** Every fuzz target, in the order a run visits them. Add new parsers and protocols here. */
import type { Target } from '../target.ts';
import { layerZFileTarget, lsmtTarget, tarTarget, zfileTarget } from './layers.ts';

export const TARGETS: readonly Target[] = [lsmtTarget, zfileTarget, layerZFileTarget, tarTarget];

export function findTarget(name: string): Target | undefined {
  return TARGETS.find((t) => t.name === name);
}
