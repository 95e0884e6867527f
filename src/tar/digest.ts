/**
 * A tee that hashes a stream as it passes (the decompressed layer, for its diffID), so the
 * pipeline checks the digest without reading the layer twice.
 */
import { createHash } from 'node:crypto';
import { InvalidArgumentError } from '../io/errors.ts';

export interface DigestedStream {
  stream: AsyncIterable<Uint8Array>;
  /** "sha256:<hex>" of every byte that passed; only once the stream has ended. */
  digest(): string;
  /** Bytes that have passed so far. */
  readonly size: number;
}

export function withDigest(input: AsyncIterable<Uint8Array>): DigestedStream {
  const hash = createHash('sha256');
  let size = 0;
  let result: string | undefined;
  async function* tee(): AsyncGenerator<Uint8Array> {
    for await (const c of input) {
      hash.update(c);
      size += c.length;
      yield c;
    }
    result = `sha256:${hash.digest('hex')}`;
  }
  return {
    stream: tee(),
    digest() {
      if (result === undefined) throw new InvalidArgumentError('withDigest: digest() asked before the stream ended');
      return result;
    },
    get size() {
      return size;
    },
  };
}
