/**
 * Typed failures of verified reads (docs/format.md §7). Both read as EIO through NBD.
 */
import { ChecksumError, ObdError, type Errno } from '../io/errors.ts';

/** Bytes that do not hash to the tree, after every attempt; names the blob, offset and sources tried. */
export class VerityError extends ChecksumError {
  readonly sources: readonly string[];
  constructor(blob: string, offset: number, what: string, sources: readonly string[]) {
    super(blob, offset, `${what} (tried ${sources.join(', ')})`);
    this.sources = sources;
  }
}

/** An image without verity trees where they are required (`--require-verity`), or malformed tree annotations. */
export class VerityMissingError extends ObdError {
  override readonly errno: Errno = 'EPERM';
}
