/** Every fuzz target, in the order a run visits them. Add new parsers and protocols here. */
import type { Target } from '../target.ts';
import { configTarget, manifestTarget, ociLayoutTarget } from './images.ts';
import { layerZFileTarget, lsmtTarget, tarTarget, zfileTarget } from './layers.ts';
import { nbdTarget } from './nbd.ts';
import { cacheTarget, traceTarget } from './remote-state.ts';
import { writableTarget } from './writable.ts';

export const TARGETS: readonly Target[] = [lsmtTarget, zfileTarget, layerZFileTarget, tarTarget, writableTarget, configTarget, manifestTarget, ociLayoutTarget, traceTarget, cacheTarget, nbdTarget];

export function findTarget(name: string): Target | undefined {
  return TARGETS.find((t) => t.name === name);
}
