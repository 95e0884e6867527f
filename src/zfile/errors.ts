/**
 * Typed ZFile errors. They extend the project-wide kinds so callers that only know
 * FormatError / ChecksumError still handle them, and add what a ZFile failure is about.
 */
import { ChecksumError, FormatError, ObdError } from '../io/errors.ts';

/** A header, trailer, jump table or tar wrapper that breaks the format. `check` names the rule. */
export class ZFileFormatError extends FormatError {
  readonly check: string;
  constructor(file: string, check: string, what: string, offset?: number) {
    super(file, `zfile ${check}: ${what}`, offset);
    this.check = check;
  }
}

/** What failed on a block or a checksummed structure. */
export type ZFileIntegrityKind = 'header-digest' | 'index-crc' | 'block-crc' | 'block-decode';

/**
 * Stored bytes failed an integrity check. `block` is the block index (-1 for header and
 * index checks); `offset` is where the checked bytes start in the compressed file.
 */
export class ZFileChecksumError extends ChecksumError {
  readonly kind: ZFileIntegrityKind;
  readonly block: number;
  constructor(file: string, kind: ZFileIntegrityKind, block: number, offset: number, what: string, options?: ErrorOptions) {
    super(file, offset, `${block >= 0 ? `block ${block}: ` : ''}${what}`, options);
    this.kind = kind;
    this.block = block;
  }
}

/** Compressing blocks failed: a codec could not encode, a worker failed or exited, the pool was closed. */
export class CompressionError extends ObdError {}
