/**
 * Typed failures of remote access. One class per kind so the CLI picks an exit message and
 * the NBD server an errno without parsing text; each names the URL it was about.
 */
import { ChecksumError, NotFoundError, ObdError, type Errno } from '../io/errors.ts';

/** Base of registry / transport failures; `url` is the request that failed. */
export class RemoteError extends ObdError {
  readonly url: string;
  readonly status: number | undefined;
  constructor(url: string, message: string, status?: number, options?: ErrorOptions) {
    super(`${url}: ${message}`, options);
    this.url = url;
    this.status = status;
  }
}

/** Credentials missing or refused (401/403, token endpoint failures). */
export class AuthError extends RemoteError {
  override readonly errno: Errno = 'EPERM';
}

/** Connection refused/reset, DNS failure, a body that ended early. Retryable. */
export class NetworkError extends RemoteError {}

/** No bytes moved for longer than the idle timeout. Retryable. */
export class TimeoutError extends RemoteError {}

/** 5xx or 429 from the server. Retryable. */
export class ServerError extends RemoteError {}

/** The server answered something that breaks the protocol (ignored Range, bad JSON, wrong status). */
export class ProtocolError extends RemoteError {}

/** A manifest, tag or blob the server says does not exist (404). */
export class RemoteNotFoundError extends NotFoundError {
  readonly url: string;
  constructor(url: string, what: string, options?: ErrorOptions) {
    super(`${url}: ${what} not found`, options);
    this.url = url;
  }
}

/** Downloaded bytes whose sha256 is not the digest they were addressed by. */
export class DigestMismatchError extends ChecksumError {
  constructor(name: string, expected: string, actual: string) {
    super(name, 0, `digest mismatch: expected ${expected}, got ${actual}`);
  }
}

/** An image reference, config file or manifest that cannot be understood. */
export class InvalidReferenceError extends ObdError {
  override readonly errno: Errno = 'EINVAL';
}

/**
 * A manifest or index that breaks the OCI image spec (docs/format.md §6); `field` names the
 * offending part, e.g. `layers[3].size`.
 */
export class ManifestError extends InvalidReferenceError {
  readonly field: string;
  constructor(where: string, field: string, what: string) {
    super(`${where}: ${field} ${what}`);
    this.field = field;
  }
}

/** True for failures another attempt may cure. */
export function isRetryable(e: unknown): boolean {
  return e instanceof NetworkError || e instanceof TimeoutError || e instanceof ServerError;
}
