/**
 * Typed failures of the qcow2 reader beyond plain format violations (those are FormatError):
 * features it refuses to read and images left unclean by a crashed writer.
 */
import { NotSupportedError, ObdError, type Errno } from '../io/errors.ts';

/** A qcow2 feature the reader cannot honour: encryption, external data files, unknown bits. */
export class Qcow2UnsupportedError extends NotSupportedError {
  readonly file: string;
  readonly feature: string;
  constructor(file: string, feature: string, hint: string) {
    super(`${file}: ${feature} is not supported (${hint})`);
    this.file = file;
    this.feature = feature;
  }
}

/**
 * The image's dirty or corrupt bit is set: a writer did not close it cleanly (dirty: refcounts
 * may be stale) or qemu found an inconsistency (corrupt). Reading may then return wrong data;
 * `qemu-img check -r all` repairs it, or the caller accepts the risk with `force`.
 */
export class UncleanImageError extends ObdError {
  override readonly errno: Errno = 'EBUSY';
  readonly file: string;
  readonly bit: 'dirty' | 'corrupt';
  constructor(file: string, bit: 'dirty' | 'corrupt') {
    super(
      bit === 'dirty'
        ? `${file}: the image is marked dirty (not closed cleanly); repair it with "qemu-img check -r all ${file}", or pass --force to read it as is`
        : `${file}: the image is marked corrupt; repair it with "qemu-img check -r all ${file}", or pass --force to read it as is`,
    );
    this.file = file;
    this.bit = bit;
  }
}
