/**
 * Typed failures of `obd convert` (src/convert). The layer applier's are here; the pipeline
 * adds its own beside them.
 */
import { ObdError, errnoOf, type Errno } from '../io/errors.ts';
import { printable } from './bytes.ts';

/** Base of conversion failures. */
export class ConvertError extends ObdError {}

/**
 * One entry of a layer could not be applied. Names the layer and the entry path; `cause` is
 * what failed (the filesystem's typed error, a bad hardlink, the tar stream ending early) and
 * gives the errno (ENOSPC from a full filesystem stays ENOSPC).
 */
export class LayerApplyError extends ConvertError {
  override readonly errno: Errno;
  readonly layer: string;
  readonly path: Uint8Array;
  constructor(layer: string, path: Uint8Array, cause: unknown) {
    const why = cause instanceof Error ? cause.message : String(cause);
    super(`${layer}: entry "/${printable(path)}": ${why}`, { cause });
    this.errno = errnoOf(cause);
    this.layer = layer;
    this.path = path;
  }
}

/** A hardlink whose target is missing (in this layer and below) or is a directory. */
export class HardlinkTargetError extends ConvertError {
  override readonly errno: Errno;
  readonly target: Uint8Array;
  constructor(target: Uint8Array, problem: 'missing' | 'directory') {
    super(problem === 'missing'
      ? `hardlink target "/${printable(target)}" does not exist in this layer or below`
      : `hardlink target "/${printable(target)}" is a directory`);
    this.errno = problem === 'missing' ? 'ENOENT' : 'EPERM';
    this.target = target;
  }
}

/** An entry the filesystem cannot represent (a root entry that is not a directory, a name over 255 bytes). */
export class InvalidEntryError extends ConvertError {
  override readonly errno: Errno = 'EINVAL';
}
