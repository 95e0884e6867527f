/**
 * The reference's CRC-32C: the raw register, without the customary inversion on entry and exit
 * (it chains the SSE4.2 `crc32` instruction from a seed). Standard libraries invert in and
 * out, so the raw register is recovered by inverting around the call. ZFile checksums and
 * prefetch traces both use it.
 *
 * sse4_crc32 runs three interleaved streams of the SSE4.2 instruction (~7–9 GB/s here, twice
 * @node-rs/crc32's single stream) and falls back to tables on CPUs without it. It is loaded
 * on first use, which keeps it out of the start-up of commands that check no CRC, and from
 * its addon directly: the package's entry finds the addon through the `bindings` package and
 * loads node:stream for a CRC stream class this project does not use (sse4_crc32 is pinned
 * at 7.0.0; the entry picks the same function from the same addon).
 */
import { createRequire } from 'node:module';

type Crc32c = (data: Uint8Array, init: number) => number;
interface Sse4Crc32Addon {
  hardware_support: boolean;
  sse42_crc: Crc32c;
  table_crc: Crc32c;
}
let calculate: Crc32c | undefined;

function load(): Crc32c {
  const addon = createRequire(import.meta.url)('sse4_crc32/build/Release/crc32c.node') as Sse4Crc32Addon;
  return addon.hardware_support ? addon.sse42_crc : addon.table_crc;
}

/** Raw CRC-32C of `data` starting from register value `seed`. */
export function rawCrc32c(data: Uint8Array, seed = 0): number {
  calculate ??= load();
  return ~calculate(data, ~seed >>> 0) >>> 0;
}

/** The standard CRC-32C (inverted on entry and exit) of `data`, as the remote cache stores it. */
export function crc32c(data: Uint8Array): number {
  return ~rawCrc32c(data, 0xffffffff) >>> 0;
}
