/**
 * Typed errors. Every failure kind has its own class so callers (the CLI, the NBD server)
 * can map it to an exit code or an errno without parsing messages. `errno` is the POSIX
 * name the NBD server reports for the failure.
 */
export type Errno = 'EIO' | 'EINVAL' | 'EPERM' | 'ENOSPC' | 'ENOTSUP' | 'ENOENT' | 'EOVERFLOW' | 'ESHUTDOWN' | 'EBUSY' | 'ENOMEM';

export class ObdError extends Error {
  readonly errno: Errno = 'EIO';
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A file does not follow the format it claims (bad magic, bounds, flags, …). */
export class FormatError extends ObdError {
  readonly file: string;
  readonly offset: number | undefined;
  constructor(file: string, what: string, offset?: number, options?: ErrorOptions) {
    super(`${file}${offset === undefined ? '' : ` @${offset}`}: ${what}`, options);
    this.file = file;
    this.offset = offset;
  }
}

/** Stored data failed an integrity check (CRC, digest, decode). */
export class ChecksumError extends ObdError {
  readonly file: string;
  readonly offset: number;
  constructor(file: string, offset: number, what: string, options?: ErrorOptions) {
    super(`${file} @${offset}: ${what}`, options);
    this.file = file;
    this.offset = offset;
  }
}

/** A source returned fewer bytes than its declared size promises. */
export class ShortReadError extends ObdError {
  constructor(file: string, offset: number, wanted: number, got: number) {
    super(`${file} @${offset}: short read, wanted ${wanted} bytes, got ${got}`);
  }
}

/** A request falls (partly) outside the device or source. */
export class OutOfRangeError extends ObdError {
  override readonly errno: Errno = 'EINVAL';
  constructor(name: string, offset: number, length: number, size: number) {
    super(`${name}: range [${offset}, ${offset + length}) is outside the size ${size}`);
  }
}

/** No room: a write past the end of a device, or a full filesystem under a layer file. */
export class NoSpaceError extends ObdError {
  override readonly errno: Errno = 'ENOSPC';
}

/** A write, trim or flush reached a read-only device. */
export class ReadOnlyError extends ObdError {
  override readonly errno: Errno = 'EPERM';
  constructor(name: string) {
    super(`${name}: device is read-only`);
  }
}

/** Bad arguments or a request the implementation cannot honour (e.g. misalignment). */
export class InvalidArgumentError extends ObdError {
  override readonly errno: Errno = 'EINVAL';
}

/** Layers that do not fit together (wrong parent, size mismatch). */
export class ChainError extends ObdError {
  override readonly errno: Errno = 'EINVAL';
}

/** A resource was used after it was closed. */
export class ClosedError extends ObdError {
  override readonly errno: Errno = 'ESHUTDOWN';
  constructor(name: string) {
    super(`${name}: already closed`);
  }
}

/** Not supported by this device / format (e.g. FAST_ZERO on a device that must write). */
export class NotSupportedError extends ObdError {
  override readonly errno: Errno = 'ENOTSUP';
}

/** The filesystem refused access (EACCES, EPERM) or is mounted read-only (EROFS). */
export class PermissionError extends ObdError {
  override readonly errno: Errno = 'EPERM';
}

/** A file or blob that should exist does not. */
export class NotFoundError extends ObdError {
  override readonly errno: Errno = 'ENOENT';
}

/** Another process is using the file in a way that excludes this operation. */
export class BusyError extends ObdError {
  override readonly errno: Errno = 'EBUSY';
}

/**
 * The one mapping from Node system error codes (fs, sockets) to errnos; codes not listed are
 * EIO. Typed errors that wrap a system error use it, and the NBD server maps errnos onward.
 */
const ERRNO_OF_CODE: Readonly<Record<string, Errno>> = {
  ENOENT: 'ENOENT',
  EPERM: 'EPERM',
  EACCES: 'EPERM',
  EROFS: 'EPERM',
  ENOSPC: 'ENOSPC',
  EDQUOT: 'ENOSPC',
  EFBIG: 'ENOSPC',
  EINVAL: 'EINVAL',
  ENOMEM: 'ENOMEM',
};

/** The errno a failure stands for: a typed error's own, a system error's by its code, else EIO. */
export function errnoOf(e: unknown): Errno {
  if (e instanceof ObdError) return e.errno;
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return (typeof code === 'string' && Object.hasOwn(ERRNO_OF_CODE, code) && ERRNO_OF_CODE[code]) || 'EIO';
}
