/**
 * A device wrapper that counts and times every operation reaching the device (one export's
 * metrics): requests, bytes, failures and a latency histogram per operation. Everything else
 * is the inner device's: size (read at each use, a live disk may grow), capabilities, layers.
 */
import { RequestMeter } from '../io/metrics.ts';
import type { BlockDevice, DeviceCapabilities, Extent } from '../io/types.ts';
import { capabilitiesOf } from './capabilities.ts';

export type MeteredOp = 'read' | 'write' | 'trim' | 'flush' | 'extents';

export class MeteredDevice implements BlockDevice {
  readonly inner: BlockDevice;
  readonly capabilities: DeviceCapabilities;
  readonly meters: Record<MeteredOp, RequestMeter> = {
    read: new RequestMeter(),
    write: new RequestMeter(),
    trim: new RequestMeter(),
    flush: new RequestMeter(),
    extents: new RequestMeter(),
  };
  readonly write?: (buf: Uint8Array, offset: number) => Promise<void>;
  readonly trim?: (offset: number, length: number) => Promise<void>;
  readonly flush?: () => Promise<void>;

  constructor(inner: BlockDevice) {
    this.inner = inner;
    this.capabilities = capabilitiesOf(inner);
    // Only what the inner device has: a method present is a capability.
    if (inner.write) this.write = (buf, offset) => this.#timed('write', buf.length, () => inner.write!(buf, offset));
    if (inner.trim) this.trim = (offset, length) => this.#timed('trim', length, () => inner.trim!(offset, length));
    if (inner.flush) this.flush = () => this.#timed('flush', 0, () => inner.flush!());
  }

  get name(): string {
    return this.inner.name;
  }
  get size(): number {
    return this.inner.size;
  }
  get layerCount(): number {
    return this.inner.layerCount;
  }
  get writable(): boolean {
    return this.inner.writable;
  }
  get uuid(): string | undefined {
    return this.inner.uuid;
  }
  get parentUuid(): string | undefined {
    return this.inner.parentUuid;
  }

  read(buf: Uint8Array, offset: number): Promise<void> {
    return this.#timed('read', buf.length, () => this.inner.read(buf, offset));
  }

  extents(offset: number, length: number): Promise<Extent[]> {
    return this.#timed('extents', 0, () => this.inner.extents(offset, length));
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  #timed<T>(op: MeteredOp, bytes: number, fn: () => Promise<T>): Promise<T> {
    const done = this.meters[op].start();
    return fn().then(
      (r) => {
        done(bytes);
        return r;
      },
      (e: unknown) => {
        done(0, true);
        throw e;
      },
    );
  }
}
