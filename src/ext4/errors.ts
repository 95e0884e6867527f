/**
 * Typed errors of the ext4 engine. Each names the device (or image) and, where it applies,
 * the byte offset and what was expected there.
 */
import { ObdError } from '../io/errors.ts';
import type { Errno } from '../io/errors.ts';

export class Ext4Error extends ObdError {}

/** A filesystem this engine cannot read or write safely (feature, geometry, bad magic). */
export class Ext4FormatError extends Ext4Error {
  override readonly errno: Errno = 'EINVAL';
  readonly device: string;
  readonly offset: number | undefined;
  constructor(device: string, what: string, offset?: number) {
    super(`${device}${offset === undefined ? '' : ` @${offset}`}: ${what}`);
    this.device = device;
    this.offset = offset;
  }
}

/** No free block or inode left (or a value too large for the space ext4 gives it). */
export class Ext4NoSpaceError extends Ext4Error {
  override readonly errno: Errno = 'ENOSPC';
}

/** A name that must be absent is present in its directory. */
export class Ext4ExistsError extends Ext4Error {
  override readonly errno: Errno = 'EINVAL';
  constructor(device: string, dir: number, name: Uint8Array) {
    super(`${device}: "${showName(name)}" already exists in directory inode ${dir}`);
  }
}

/** A name or inode that must exist does not. */
export class Ext4NotFoundError extends Ext4Error {
  override readonly errno: Errno = 'ENOENT';
}

/** A directory was expected (or a non-directory, for link). */
export class Ext4NotDirectoryError extends Ext4Error {
  override readonly errno: Errno = 'EINVAL';
}

/** Bad arguments from the caller (name rules, sizes, data that does not match the size). */
export class Ext4ArgumentError extends Ext4Error {
  override readonly errno: Errno = 'EINVAL';
}

export function showName(name: Uint8Array): string {
  return Buffer.from(name.buffer, name.byteOffset, name.byteLength).toString('latin1');
}
