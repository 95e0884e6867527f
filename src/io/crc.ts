/**
 * The reference's CRC-32C: the raw register, without the customary inversion on entry and exit
 * (it chains the SSE4.2 `crc32` instruction from a seed). Standard libraries invert in and
 * out, so the raw register is recovered by inverting around the call. ZFile checksums and
 * prefetch traces both use it.
 */
import { crc32c } from '@node-rs/crc32';

/** Raw CRC-32C of `data` starting from register value `seed`. */
export function rawCrc32c(data: Uint8Array, seed = 0): number {
  return ~crc32c(data, ~seed >>> 0) >>> 0;
}
