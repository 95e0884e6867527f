/**
 * The parent-uuid chain of a stack: each layer records the uuid of the layer it was made on,
 * so a stack given in the wrong order, or with a layer of another image, is caught before it
 * is read. A link that cannot be checked (a layer without a uuid, as overlaybd-commit makes
 * by default) is accepted with a warning.
 */
import { ChainError } from '../io/errors.ts';
import { isNullUuid } from '../lsmt/format.ts';

export interface ChainMember {
  /** The file or blob, as the user knows it. */
  name: string;
  uuid: string;
  parentUuid: string;
}

/** The members of an opened stack's layers (bottom → top). */
export function chainMembers(layers: readonly { uuid: string; parentUuid: string; source: { name: string } }[]): ChainMember[] {
  return layers.map((l) => ({ name: l.source.name, uuid: l.uuid, parentUuid: l.parentUuid }));
}

/** Two layers that do not chain: the message names both layers and both uuids. */
export class BrokenChainError extends ChainError {}

const same = (a: string, b: string) => a.toUpperCase() === b.toUpperCase();

/**
 * Checks each layer's parent uuid against the uuid of the layer below it (bottom → top).
 * Throws a ChainError naming both layers and both uuids at the first link that is wrong;
 * returns one warning per link that could not be checked.
 */
export function checkChain(layers: readonly ChainMember[]): string[] {
  const warnings: string[] = [];
  for (let i = 1; i < layers.length; i++) {
    const below = layers[i - 1]!;
    const l = layers[i]!;
    if (isNullUuid(below.uuid)) {
      warnings.push(`${l.name}: cannot check that it belongs on ${below.name}, which has no uuid`);
    } else if (isNullUuid(l.parentUuid)) {
      if (!isNullUuid(l.uuid)) {
        throw new BrokenChainError(`${l.name} (uuid ${l.uuid}) has no parent uuid, but it is stacked on ${below.name} (uuid ${below.uuid})`);
      }
      warnings.push(`${l.name}: has no uuid and no parent uuid, so cannot check that it belongs on ${below.name} (uuid ${below.uuid})`);
    } else if (same(l.uuid, below.uuid)) {
      throw new BrokenChainError(`${l.name}: the same layer (uuid ${l.uuid}) as the layer below it, ${below.name}; a stack holds each layer once`);
    } else if (!same(l.parentUuid, below.uuid)) {
      throw new BrokenChainError(`${l.name} (uuid ${l.uuid}): parent uuid ${l.parentUuid} does not match the uuid ${below.uuid} of the layer below it (${below.name})`);
    }
  }
  return warnings;
}
