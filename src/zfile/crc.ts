/**
 * The ZFile checksums: CRC-32C without the customary inversion on entry and exit (the
 * reference chains the SSE4.2 `crc32` instruction directly from a seed). Standard libraries
 * invert in and out, so the raw register is recovered by inverting around the call.
 */
import { crc32c } from '@node-rs/crc32';

/** Seed of the per-block CRC ("salted" in the reference). */
export const BLOCK_CRC_SEED = 100007;

/** Raw CRC-32C of `data` starting from register value `seed`. */
export function rawCrc32c(data: Uint8Array, seed = 0): number {
  return ~crc32c(data, ~seed >>> 0) >>> 0;
}

/** The CRC stored after each compressed block when the file has verify = 1. */
export function blockCrc(compressed: Uint8Array): number {
  return rawCrc32c(compressed, BLOCK_CRC_SEED);
}
