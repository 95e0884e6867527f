/**
 * Failures of writes into layer files, typed so the NBD server can answer ENOSPC for a full
 * disk and the system error's errno (errnoOf) for the rest, with messages naming the file
 * and offset.
 */
import { NoSpaceError, ObdError, errnoOf, type Errno } from '../io/errors.ts';

export { NoSpaceError };

/** A write, sync or truncate of a layer file failed; `errno` is the system error's (errnoOf). */
export class LayerIoError extends ObdError {
  override readonly errno: Errno;
  constructor(message: string, options?: ErrorOptions & { errno?: Errno }) {
    super(message, options);
    this.errno = options?.errno ?? 'EIO';
  }
}

/** Wraps a Node fs error raised while `what` at byte `offset` of `file`. */
export function wrapWriteError(file: string, what: string, offset: number | undefined, e: unknown): ObdError {
  if (e instanceof ObdError) return e;
  const code = (e as NodeJS.ErrnoException)?.code;
  const where = offset === undefined ? '' : ` @${offset}`;
  const reason = e instanceof Error ? e.message : String(e);
  const errno = errnoOf(e);
  if (errno === 'ENOSPC') return new NoSpaceError(`${file}${where}: no space left while ${what}${code === 'EFBIG' ? ' (file too large)' : ''}`, { cause: e });
  return new LayerIoError(`${file}${where}: ${what} failed: ${reason}`, { cause: e, errno });
}
