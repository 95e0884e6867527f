/** Building a device's capability declaration (see DeviceCapabilities in types.ts). */
import type { DeviceCapabilities } from './types.ts';

export const SECTOR_BLOCK = 512;
export const PAGE_BLOCK = 4096;
/** Largest request a device takes unless it says otherwise. */
export const DEFAULT_MAX_REQUEST = 32 << 20;

/**
 * The capabilities of a device with the given methods. Reading through any of this project's
 * devices warms something below it (page cache, decoded blocks, the remote cache), so prefetch
 * is on unless said otherwise.
 */
export function declareCapabilities(has: { write: boolean; trim: boolean; flush: boolean; prefetch?: boolean; extents?: boolean; minBlock?: number }): DeviceCapabilities {
  return {
    writable: has.write,
    trim: has.write && has.trim,
    zero: !has.write ? 'none' : has.trim ? 'trim' : 'write',
    fua: has.write && has.flush ? 'flush' : 'none',
    flush: has.write && has.flush,
    prefetch: has.prefetch ?? true,
    extents: has.extents ?? true,
    minBlock: has.minBlock ?? SECTOR_BLOCK,
    preferredBlock: PAGE_BLOCK,
    maxRequest: DEFAULT_MAX_REQUEST,
  };
}
