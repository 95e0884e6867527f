/** Typed failures of `obd convert`: each names the image or layer and what was expected. */
import { ChecksumError, InvalidArgumentError, NotSupportedError, type Errno } from '../io/errors.ts';

/** The source image's config cannot be converted (not JSON, no rootfs.diff_ids, wrong count). */
export class ImageConfigError extends InvalidArgumentError {
  readonly file: string;
  constructor(where: string, what: string) {
    super(`${where}: the image config ${what}`);
    this.file = where;
  }
}

/** A layer's uncompressed tar does not hash to the diffID the config lists for it. */
export class DiffIdMismatchError extends ChecksumError {
  readonly layer: number;
  constructor(where: string, layer: number, expected: string, actual: string, bytes: number) {
    super(where, 0, `layer ${layer}: the uncompressed tar (${bytes} bytes) hashes to ${actual}, but the image config's rootfs.diff_ids[${layer}] is ${expected}`);
    this.layer = layer;
  }
}

/** A layer whose media type (or content) is no tar the converter reads. */
export class UnsupportedLayerError extends NotSupportedError {
  override readonly errno: Errno = 'ENOTSUP';
  readonly layer: number;
  constructor(where: string, layer: number, what: string) {
    super(`${where}: layer ${layer}: ${what}`);
    this.layer = layer;
  }
}
