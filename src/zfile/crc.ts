/** The ZFile checksums: raw CRC-32C (src/io/crc.ts), blocks salted with the reference's seed. */
import { rawCrc32c } from '../io/crc.ts';

export { rawCrc32c };

/** Seed of the per-block CRC ("salted" in the reference). */
export const BLOCK_CRC_SEED = 100007;

/** The CRC stored after each compressed block when the file has verify = 1. */
export function blockCrc(compressed: Uint8Array): number {
  return rawCrc32c(compressed, BLOCK_CRC_SEED);
}
