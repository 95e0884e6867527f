/**
 * Checking the identity fields a caller gives for a new sealed layer (uuid, parent, user
 * tag) up front, so a bad value fails before any output exists.
 */
import { InvalidArgumentError } from '../io/errors.ts';
import { normalizeUuid } from './format.ts';
import type { LayerIdentity } from './writer.ts';

/** Maximum user tag (commit message) size in bytes. */
export const MAX_USER_TAG = 256;

export function checkedIdentity(id: LayerIdentity): LayerIdentity {
  const uuid = checkUuid('uuid', id.uuid);
  const parentUuid = checkUuid('parent uuid', id.parentUuid);
  const userTag = id.userTag ?? '';
  const bytes = Buffer.byteLength(userTag, 'utf8');
  if (bytes > MAX_USER_TAG) throw new InvalidArgumentError(`user tag is ${bytes} bytes; at most ${MAX_USER_TAG} fit in the header`);
  if (!Number.isSafeInteger(id.virtualSize) || id.virtualSize < 0) throw new InvalidArgumentError(`bad virtual size ${id.virtualSize}`);
  return { virtualSize: id.virtualSize, uuid, parentUuid, userTag };
}

/** The reference's upper-case form of `v` ('' / undefined = the null uuid), or an InvalidArgumentError. */
export function checkUuid(what: string, v: string | undefined): string {
  try {
    return normalizeUuid(v);
  } catch {
    throw new InvalidArgumentError(`${what} "${v}" is not a UUID (expected 8-4-4-4-12 hex digits)`);
  }
}
