/**
 * The operations between a device and whatever exports it (NBD today; a FUSE file or ublk
 * tomorrow), as nbdkit's server/plugins.c and qemu's block/io.c sit between protocol and
 * driver: every request is checked here once (range, read-only), and what the device does not
 * do natively is emulated here — FUA by a flush, write-zeroes by trimming or writing zeros,
 * discard trimmed to the device's block, prefetch by reading through. An export maps its
 * protocol's flags onto these calls and its replies onto their results, nothing more.
 */
import { NoSpaceError, NotSupportedError, OutOfRangeError, ReadOnlyError, type ObdError } from '../io/errors.ts';
import type { BlockDevice, DeviceCapabilities, Extent } from '../io/types.ts';
import { inRange } from '../io/util.ts';
import { capabilitiesOf } from './capabilities.ts';

export type OpKind = 'read' | 'write' | 'trim' | 'zero' | 'cache' | 'extents';

export interface WriteFlags {
  /** Durable before the call resolves (Forced Unit Access). */
  fua?: boolean;
}

export interface ZeroFlags extends WriteFlags {
  /** The range may become a hole (trimmed) instead of written zeros. */
  mayTrim?: boolean;
  /** Fail with NotSupportedError rather than zero slowly (by writing). */
  fast?: boolean;
}

/** Zeros written per step when write-zeroes is emulated by writing. */
const ZEROS = new Uint8Array(1 << 20);
/** Bytes read per step by a prefetch. */
const PREFETCH_STEP = 1 << 20;

export class DeviceOps {
  readonly device: BlockDevice;
  readonly capabilities: DeviceCapabilities;
  /** Writes, trims and zeroing are refused (the device cannot, or the export was asked not to). */
  readonly readOnly: boolean;

  constructor(device: BlockDevice, opts: { readOnly?: boolean } = {}) {
    this.device = device;
    this.capabilities = capabilitiesOf(device);
    this.readOnly = Boolean(opts.readOnly) || !this.capabilities.writable;
  }

  /** The device's size now: a live disk may grow while it is served. */
  get size(): number {
    return this.device.size;
  }

  /** Whether write-zeroes with these flags can be done fast (by trimming). */
  fastZero(mayTrim: boolean): boolean {
    return mayTrim && this.capabilities.zero === 'trim';
  }

  /** Why a request would be refused before reaching the device, or undefined when it is fine. */
  refusal(kind: OpKind, offset: number, length: number): ObdError | undefined {
    if (kind !== 'read' && kind !== 'cache' && kind !== 'extents' && this.readOnly) return new ReadOnlyError(this.device.name);
    if (!inRange(offset, length, this.size)) {
      // Writing past the end means the disk is full (ENOSPC); anything else is a bad range.
      if (kind === 'write' || kind === 'zero') return new NoSpaceError(`${this.device.name}: range [${offset}, ${offset + length}) is past the end of the device (${this.size} bytes)`);
      return new OutOfRangeError(this.device.name, offset, length, this.size);
    }
    return undefined;
  }

  read(buf: Uint8Array, offset: number): Promise<void> {
    const bad = this.refusal('read', offset, buf.length);
    if (bad) return Promise.reject(bad);
    return this.device.read(buf, offset);
  }

  async write(buf: Uint8Array, offset: number, flags: WriteFlags = {}): Promise<void> {
    this.#check('write', offset, buf.length);
    if (buf.length > 0) await this.device.write!(buf, offset);
    if (flags.fua) await this.#fua();
  }

  /** A discard hint: only whole blocks of the device are trimmed; the rest is left as it is. */
  async trim(offset: number, length: number, flags: WriteFlags = {}): Promise<void> {
    this.#check('trim', offset, length);
    const bs = this.capabilities.minBlock;
    const a = Math.ceil(offset / bs) * bs;
    const b = Math.floor((offset + length) / bs) * bs;
    if (a < b && this.capabilities.trim) {
      await this.device.trim!(a, b - a);
      if (flags.fua) await this.#fua();
    }
  }

  /** Makes the range read as zeros: by trimming whole blocks when allowed, else by writing zeros. */
  async zero(offset: number, length: number, flags: ZeroFlags = {}): Promise<void> {
    this.#check('zero', offset, length);
    const viaTrim = this.fastZero(flags.mayTrim ?? false);
    if (flags.fast && !viaTrim) throw new NotSupportedError(`${this.device.name}: zeroing without holes is no faster than writing`);
    const end = offset + length;
    const bs = this.capabilities.minBlock;
    const a = Math.ceil(offset / bs) * bs;
    const b = Math.floor(end / bs) * bs;
    if (viaTrim && a < b) {
      if (a > offset) await this.#writeZeros(offset, a);
      await this.device.trim!(a, b - a);
      if (end > b) await this.#writeZeros(b, end);
    } else {
      await this.#writeZeros(offset, end);
    }
    if (flags.fua) await this.#fua();
  }

  /** Reads the range through the device, discarding the bytes, so caches and downloads below fill. */
  async cache(offset: number, length: number): Promise<void> {
    this.#check('cache', offset, length);
    const scratch = new Uint8Array(Math.min(length, PREFETCH_STEP));
    for (let pos = offset; pos < offset + length; pos += scratch.length) {
      const n = Math.min(scratch.length, offset + length - pos);
      await this.device.read(n === scratch.length ? scratch : scratch.subarray(0, n), pos);
    }
  }

  /** Makes every completed write durable; nothing to do on a device that cannot write. */
  async flush(): Promise<void> {
    if (this.capabilities.flush && !this.readOnly) await this.device.flush!();
  }

  extents(offset: number, length: number): Promise<Extent[]> {
    const bad = this.refusal('extents', offset, length);
    if (bad) return Promise.reject(bad);
    return this.device.extents(offset, length);
  }

  #check(kind: OpKind, offset: number, length: number): void {
    const bad = this.refusal(kind, offset, length);
    if (bad) throw bad;
  }

  /** The device has no FUA of its own: a flush after the write gives the same guarantee. */
  async #fua(): Promise<void> {
    if (this.capabilities.fua === 'flush') await this.device.flush!();
  }

  async #writeZeros(from: number, to: number): Promise<void> {
    for (let pos = from; pos < to; pos += ZEROS.length) await this.device.write!(ZEROS.subarray(0, Math.min(ZEROS.length, to - pos)), pos);
  }
}
