/**
 * Compresses a run of whole blocks into stored-block form (codec output, plus the salted CRC
 * when enabled). The writer calls it on its own thread or in workers; each block depends only
 * on its own bytes, so the output is the same whichever thread runs it.
 */
import type { BlockCodec } from './codec.ts';
import { BLOCK_SLACK, CRC_SIZE } from './format.ts';
import { blockCrc } from './crc.ts';

export interface BlockParams {
  algo: number;
  /** zstd level (0 = the reference's 3); ignored by LZ4. */
  level: number;
  blockSize: number;
  crc: boolean;
}

/** Room the compressor gets per block: the reference's `bs + 512` buffer. */
export function compressRoom(blockSize: number): number {
  return blockSize + BLOCK_SLACK;
}

/** Output capacity needed for `blocks` stored blocks. */
export function outputCapacity(p: BlockParams, blocks: number): number {
  return blocks * (compressRoom(p.blockSize) + CRC_SIZE);
}

/**
 * Compresses `src` (whole blocks, the last one possibly short) into `out`, writing each
 * stored length into `lengths`. Returns the number of output bytes.
 */
export function compressBlocks(codec: BlockCodec, p: BlockParams, src: Uint8Array, out: Uint8Array, lengths: Uint32Array): number {
  const bs = p.blockSize;
  const room = compressRoom(bs);
  let pos = 0;
  for (let i = 0, at = 0; at < src.length; i++, at += bs) {
    const n = codec.compress(src.subarray(at, Math.min(at + bs, src.length)), out, pos, room);
    if (p.crc) {
      const crc = blockCrc(out.subarray(pos, pos + n));
      out[pos + n] = crc & 0xff;
      out[pos + n + 1] = (crc >>> 8) & 0xff;
      out[pos + n + 2] = (crc >>> 16) & 0xff;
      out[pos + n + 3] = crc >>> 24;
      lengths[i] = n + CRC_SIZE;
    } else {
      lengths[i] = n;
    }
    pos += lengths[i]!;
  }
  return pos;
}
