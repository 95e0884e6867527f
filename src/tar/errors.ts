/**
 * Typed errors of the tar reader and its decompression. Each names the archive and the byte
 * offset (in the uncompressed tar stream, or the compressed input for decompression errors)
 * of the header the failure belongs to.
 */
import { FormatError } from '../io/errors.ts';

/** Base class: something about a tar stream this module cannot accept. */
export class TarError extends FormatError {
  constructor(archive: string, offset: number, what: string, options?: ErrorOptions) {
    super(archive, what, offset, options);
  }
}

/** The bytes are not a tar archive as the formats define it (checksum, field, truncation). */
export class TarFormatError extends TarError {}

/** An entry's path (or hard link target) cannot be placed safely: a ".." component. */
export class TarPathError extends TarError {}

/** The compressed input (gzip or zstd) is corrupt or truncated. */
export class TarDecompressError extends TarError {}
