/** Starting and stopping a server on a private unix socket, plus test devices. */
import path from 'node:path';
import type { BlockDevice, Extent } from '../../../src/io/types.ts';
import { NbdServer, type NbdServerOptions } from '../../../src/nbd/index.ts';
import type { NbdEvent } from '../../../src/nbd/index.ts';
import { makeTempDir, removeTempDir } from '../../helpers/temp.ts';

export interface Running {
  server: NbdServer;
  socket: string;
  dir: string;
  events: NbdEvent[];
  uri(name?: string): string;
  stop(): Promise<void>;
}

export async function startServer(opts: NbdServerOptions): Promise<Running> {
  const dir = await makeTempDir('obd-nbd-');
  const socket = path.join(dir, 'nbd.sock');
  const events: NbdEvent[] = [];
  const server = new NbdServer({ ...opts, onEvent: (e) => { events.push(e); opts.onEvent?.(e); } });
  await server.listen({ socket });
  return {
    server,
    socket,
    dir,
    events,
    uri: (name = '') => server.uri(name),
    async stop() {
      try {
        await server.close({ timeoutMs: 5000 });
      } finally {
        await removeTempDir(dir);
      }
    },
  };
}

/**
 * Wraps a device to observe the server: counts operations and the most running at once,
 * and can hold reads until the test releases them.
 */
export class ProbeDevice implements BlockDevice {
  readonly inner: BlockDevice;
  running = 0;
  maxRunning = 0;
  reads = 0;
  writes = 0;
  flushes = 0;
  #gate: ((offset: number) => boolean) | undefined;
  #held: (() => void)[] = [];

  constructor(inner: BlockDevice) {
    this.inner = inner;
  }
  get name() { return this.inner.name; }
  get size() { return this.inner.size; }
  get layerCount() { return this.inner.layerCount; }
  get writable() { return this.inner.writable; }

  /** Reads whose offset matches wait until release(); undefined lifts the gate. */
  hold(match: ((offset: number) => boolean) | undefined): void {
    this.#gate = match;
  }
  get heldCount(): number {
    return this.#held.length;
  }
  release(): void {
    const h = this.#held;
    this.#held = [];
    for (const r of h) r();
  }

  async #op<T>(f: () => Promise<T>): Promise<T> {
    this.running++;
    this.maxRunning = Math.max(this.maxRunning, this.running);
    try {
      return await f();
    } finally {
      this.running--;
    }
  }

  read(buf: Uint8Array, offset: number): Promise<void> {
    this.reads++;
    return this.#op(async () => {
      if (this.#gate?.(offset)) await new Promise<void>((r) => this.#held.push(r));
      return this.inner.read(buf, offset);
    });
  }
  extents(offset: number, length: number): Promise<Extent[]> {
    return this.inner.extents(offset, length);
  }
  write(buf: Uint8Array, offset: number): Promise<void> {
    this.writes++;
    return this.#op(() => this.inner.write!(buf, offset));
  }
  trim(offset: number, length: number): Promise<void> {
    return this.#op(() => this.inner.trim!(offset, length));
  }
  flush(): Promise<void> {
    this.flushes++;
    return this.#op(() => this.inner.flush?.() ?? Promise.resolve());
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

/** A device whose reads and writes fail in [badFrom, badTo) with the given error. */
export class FaultyDevice implements BlockDevice {
  readonly inner: BlockDevice;
  readonly badFrom: number;
  readonly badTo: number;
  readonly error: () => Error;
  constructor(inner: BlockDevice, badFrom: number, badTo: number, error: () => Error) {
    this.inner = inner;
    this.badFrom = badFrom;
    this.badTo = badTo;
    this.error = error;
  }
  get name() { return this.inner.name; }
  get size() { return this.inner.size; }
  get layerCount() { return this.inner.layerCount; }
  get writable() { return this.inner.writable; }
  #bad(offset: number, len: number): boolean {
    return offset < this.badTo && offset + len > this.badFrom;
  }
  async read(buf: Uint8Array, offset: number): Promise<void> {
    if (this.#bad(offset, buf.length)) throw this.error();
    return this.inner.read(buf, offset);
  }
  extents(offset: number, length: number): Promise<Extent[]> {
    return this.inner.extents(offset, length);
  }
  async write(buf: Uint8Array, offset: number): Promise<void> {
    if (this.#bad(offset, buf.length)) throw this.error();
    return this.inner.write!(buf, offset);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}
