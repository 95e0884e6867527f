/**
 * The exports of a running server, added and removed while it serves: attaching opens an
 * image through the server's layer pool (so it shares every layer it has in common with the
 * other exports) and offers it; detaching stops offering it — its clients' running requests
 * finish and they are disconnected, a writable export is flushed — then closes it, which
 * releases its layers (the last export using a layer closes it).
 */
import path from 'node:path';
import { BusyError, InvalidArgumentError, NotFoundError } from '../io/errors.ts';
import type { BlockDevice } from '../io/types.ts';
import type { NbdServer } from '../nbd/server.ts';
import type { LayerPool } from './layer-pool.ts';
import { openImage, type ImageOptions } from './open.ts';

export interface AttachOptions {
  /** Serve it writable, recording writes in `upper` (created when both files are missing). */
  writable?: boolean;
  upper?: { data: string; index: string };
}

export interface ServedHooks {
  /** The device to offer for an attached image (e.g. metered: ServerMetrics.export). */
  wrap?(name: string, device: BlockDevice): BlockDevice;
  /** Told of a detached export (e.g. ServerMetrics.removeExport). */
  forget?(name: string): void;
}

export class ServedExports {
  readonly #server: NbdServer;
  readonly #imageOptions: ImageOptions;
  readonly #hooks: ServedHooks;
  readonly #devices = new Map<string, BlockDevice>();
  /** Names being attached or detached: a second request for one of them is refused. */
  readonly #busy = new Set<string>();

  /** `imageOptions` carry the pool every attached image opens through. */
  constructor(server: NbdServer, imageOptions: ImageOptions & { pool: LayerPool }, hooks: ServedHooks = {}) {
    this.#server = server;
    this.#imageOptions = imageOptions;
    this.#hooks = hooks;
  }

  /** Takes charge of an export the server was started with (so it can be detached). */
  adopt(name: string, device: BlockDevice): void {
    this.#devices.set(name, device);
  }

  names(): string[] {
    return [...this.#devices.keys()];
  }

  /** Opens `image` (layer files, config.v1.json, oci:DIR, a reference) and offers it as `name`. */
  async attach(name: string, image: readonly string[], opts: AttachOptions = {}): Promise<void> {
    if (this.#devices.has(name) || this.#busy.has(name)) throw new BusyError(`export "${name}" exists already`);
    if (opts.upper && !opts.writable) throw new InvalidArgumentError(`attach ${name}: an upper layer goes with writable`);
    if (opts.writable && !opts.upper) throw new InvalidArgumentError(`attach ${name}: writable needs an upper layer (data and index files)`);
    this.#busy.add(name);
    try {
      const dev = await openImage(image, { ...this.#imageOptions, upper: opts.upper, readOnly: !opts.writable, trace: undefined });
      try {
        if (opts.writable && !dev.writable) throw new InvalidArgumentError(`attach ${name}: ${dev.name} has no writable layer to record writes in`);
        const device = this.#hooks.wrap ? this.#hooks.wrap(name, dev) : dev;
        this.#server.addExport(name, { device, readOnly: !opts.writable, description: image.map((p) => path.basename(p)).join(' + ') });
      } catch (e) {
        await dev.close();
        throw e;
      }
      this.#devices.set(name, dev);
    } finally {
      this.#busy.delete(name);
    }
  }

  /**
   * Stops offering `name`: running requests finish, its clients are disconnected, a
   * writable export is flushed; then the image is closed and its layers released.
   */
  async detach(name: string): Promise<void> {
    const dev = this.#devices.get(name);
    if (!dev) throw new NotFoundError(`no export "${name}"`);
    if (this.#busy.has(name)) throw new BusyError(`export "${name}" is being detached already`);
    this.#busy.add(name);
    try {
      await this.#server.removeExport(name);
      this.#hooks.forget?.(name);
      this.#devices.delete(name);
      await dev.close();
    } finally {
      this.#busy.delete(name);
    }
  }

  /** Closes every export's image (after the server has stopped). */
  async close(): Promise<void> {
    const all = [...this.#devices.values()];
    this.#devices.clear();
    await Promise.allSettled(all.map((d) => d.close()));
  }
}
