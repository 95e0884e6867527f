/**
 * An indirection device (docs/control-api.md §3): every request goes to the current target,
 * and the target can be replaced between requests while connections stay up. A live snapshot
 * holds writes here for the few milliseconds its switch takes, so no write lands in the old
 * upper after it was flushed and none in the new one before the new stack is recorded.
 *
 * Each target is one generation; a request counts itself in the generation it started on, so
 * the owner can wait until nobody reads an old target any more before closing it.
 */
import { BusyError } from '../io/errors.ts';
import type { BlockDevice, DeviceCapabilities, Extent } from '../io/types.ts';
import { capabilitiesOf } from '../ops/capabilities.ts';

interface Generation {
  readonly target: BlockDevice;
  active: number;
  idle: (() => void) | undefined;
}

export class SwitchDevice implements BlockDevice {
  readonly name: string;
  #gen: Generation;
  /** Set while writes are held: new writes, trims and flushes wait for it. */
  #hold: Promise<void> | undefined;
  #release: (() => void) | undefined;
  /** Writes, trims and flushes running on any generation. */
  #mutating = 0;
  #mutationsDone: (() => void) | undefined;

  constructor(target: BlockDevice, name = target.name) {
    this.name = name;
    this.#gen = { target, active: 0, idle: undefined };
  }

  get target(): BlockDevice {
    return this.#gen.target;
  }
  get size(): number {
    return this.#gen.target.size;
  }
  get layerCount(): number {
    return this.#gen.target.layerCount;
  }
  get writable(): boolean {
    return this.#gen.target.writable;
  }
  get capabilities(): DeviceCapabilities {
    return capabilitiesOf(this.#gen.target);
  }
  get uuid(): string | undefined {
    return this.#gen.target.uuid;
  }
  get parentUuid(): string | undefined {
    return this.#gen.target.parentUuid;
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    const g = this.#enter();
    try {
      await g.target.read(buf, offset);
    } finally {
      this.#leave(g);
    }
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    const g = this.#enter();
    try {
      return await g.target.extents(offset, length);
    } finally {
      this.#leave(g);
    }
  }

  // Hot path (every NBD write), #mutate inlined: no closure and one async frame less per write.
  async write(buf: Uint8Array, offset: number): Promise<void> {
    while (this.#hold) await this.#hold;
    const g = this.#enter();
    this.#mutating++;
    try {
      await g.target.write!(buf, offset);
    } finally {
      this.#leave(g);
      if (--this.#mutating === 0) this.#mutationsDone?.();
    }
  }

  trim(offset: number, length: number): Promise<void> {
    return this.#mutate((t) => t.trim!(offset, length));
  }

  flush(): Promise<void> {
    return this.#mutate((t) => (t.flush ? t.flush() : Promise.resolve()));
  }

  async #mutate(op: (t: BlockDevice) => Promise<void>): Promise<void> {
    while (this.#hold) await this.#hold;
    const g = this.#enter();
    this.#mutating++;
    try {
      await op(g.target);
    } finally {
      this.#leave(g);
      if (--this.#mutating === 0) this.#mutationsDone?.();
    }
  }

  #enter(): Generation {
    const g = this.#gen;
    g.active++;
    return g;
  }

  #leave(g: Generation): void {
    if (--g.active === 0) g.idle?.();
  }

  /**
   * Holds new writes, trims and flushes, and resolves once those already running have
   * finished. Reads go on. Call release() (or swap with release) to let them through.
   */
  async quiesce(): Promise<void> {
    if (this.#hold) throw new BusyError('SwitchDevice: writes are already held');
    this.#hold = new Promise((r) => (this.#release = r));
    while (this.#mutating > 0) await new Promise<void>((r) => (this.#mutationsDone = r));
    this.#mutationsDone = undefined;
  }

  /** Lets held writes through (to the target current at that moment). */
  release(): void {
    const r = this.#release;
    this.#hold = undefined;
    this.#release = undefined;
    r?.();
  }

  /**
   * Makes `target` the device every later request goes to, and resolves the old target once
   * no request started on it is still running (its owner may then close it).
   */
  swap(target: BlockDevice): { old: BlockDevice; drained: Promise<void> } {
    const old = this.#gen;
    this.#gen = { target, active: 0, idle: undefined };
    const drained = old.active === 0 ? Promise.resolve() : new Promise<void>((r) => (old.idle = r));
    return { old: old.target, drained };
  }

  /** Closes the current target (the owner closes old ones after swap). */
  close(): Promise<void> {
    return this.#gen.target.close();
  }
}
