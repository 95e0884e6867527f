/**
 * Refcounted sharing of things that are costly to open twice (a layer blob, a registry
 * client, a disk cache), by key: the first user opens, later users get the same value, and
 * the last to release closes it. One server holds one of these so its exports open each
 * layer once (src/image/layer-pool.ts); without one, every open is private as before.
 */
import { stat } from 'node:fs/promises';
import { wrapFsError } from './file.ts';
import { ForwardingSource } from './forwarding.ts';
import type { ByteSource } from './types.ts';

/** One user's hold on a shared value; release() is idempotent. */
export interface Lease<T> {
  readonly value: T;
  release(): Promise<void>;
}

interface Entry<T> {
  refs: number;
  value: Promise<T>;
  /** The value once opened. */
  opened?: T;
  close: (v: T) => Promise<void>;
  closed?: boolean;
}

/** A shared blob: its byte source and, once some opener peeled it, what it became (a layer). */
export interface SharedBlob {
  readonly key: string;
  readonly source: ByteSource;
  /** Set by the first opener that decoded the blob; later openers reuse it. */
  decoded?: Promise<{ readonly source: ByteSource }>;
  /** A background download of this blob was started by some user (one is enough). */
  downloading?: boolean;
}

/** Leased blob handles → the blob they hold (a lookup, not a type test, finds it). */
const blobOfHandle = new WeakMap<ByteSource, SharedBlob>();

export class SharedResources {
  readonly #entries = new Map<string, Entry<unknown>>();
  readonly #closing = new Map<string, Promise<void>>();

  /** Keys held, with their user counts (for tests and metrics). */
  held(): Array<{ key: string; refs: number }> {
    return [...this.#entries].map(([key, e]) => ({ key, refs: e.refs }));
  }

  /** The opened values whose keys start with `prefix` (for metrics). */
  values(prefix: string): unknown[] {
    return [...this.#entries].filter(([k, e]) => k.startsWith(prefix) && e.opened !== undefined).map(([, e]) => e.opened);
  }

  /**
   * The value under `key`, opened by `open` when nobody holds it. A failed open is not
   * remembered: every waiter gets the error and the next acquire tries again.
   */
  async acquire<T>(key: string, open: () => Promise<T>, close: (v: T) => Promise<void>): Promise<Lease<T>> {
    let e = this.#entries.get(key) as Entry<T> | undefined;
    if (e) e.refs++;
    else {
      // A value of this key still closing (its last user just left) is closed before it opens again.
      const closing = this.#closing.get(key);
      const fresh: Entry<T> = { refs: 1, value: closing ? closing.then(open) : open(), close };
      e = fresh;
      this.#entries.set(key, fresh as Entry<unknown>);
      fresh.value.then(
        (v) => (fresh.opened = v),
        () => {
          if (this.#entries.get(key) === (fresh as Entry<unknown>)) this.#entries.delete(key);
        },
      );
    }
    const entry = e;
    const value = await entry.value;
    let released = false;
    return {
      value,
      release: async () => {
        if (released) return;
        released = true;
        if (--entry.refs > 0 || entry.closed) return;
        entry.closed = true;
        if (this.#entries.get(key) === (entry as Entry<unknown>)) this.#entries.delete(key);
        const done = entry.close(value);
        const settled: Promise<void> = done
          .catch(() => {})
          .then(() => {
            if (this.#closing.get(key) === settled) this.#closing.delete(key);
          });
        this.#closing.set(key, settled);
        await done;
      },
    };
  }

  /**
   * A handle on the blob under `key` (opened by `open` when nobody holds it): a source that
   * reads the shared one and whose close() releases this user's hold. When the last holder
   * goes, the blob closes, through what it was decoded into when it was.
   */
  async blob(key: string, open: () => Promise<ByteSource>, onClose?: () => Promise<void>): Promise<ByteSource> {
    const lease = await this.acquire<SharedBlob>(
      key,
      async () => ({ key, source: await open() }),
      async (b) => {
        try {
          const decoded = await b.decoded?.catch(() => undefined);
          await (decoded ?? b).source.close();
        } finally {
          await onClose?.();
        }
      },
    );
    const handle = new LeasedSource(lease);
    blobOfHandle.set(handle, lease.value);
    return handle;
  }

  /** Closes whatever is still held, whoever holds it (the server is going away). */
  async close(): Promise<void> {
    const all = [...this.#entries.values()];
    this.#entries.clear();
    await Promise.allSettled(
      all.map(async (e) => {
        const v = await e.value;
        if (e.closed) return;
        e.closed = true;
        await e.close(v);
      }),
    );
  }
}

/** The key a local file is shared by: its device and inode, whatever path names it. */
export async function fileBlobKey(path: string): Promise<string> {
  const st = await stat(path).catch((e: unknown) => {
    throw wrapFsError(path, e);
  });
  return `file:${st.dev}:${st.ino}`;
}

/** The shared blob behind a handle from SharedResources.blob(), if `src` is one. */
export function sharedBlobOf(src: ByteSource): SharedBlob | undefined {
  return blobOfHandle.get(src);
}

/** One user's view of a shared blob: reads forward, close releases the hold. */
class LeasedSource extends ForwardingSource {
  readonly #lease: Lease<SharedBlob>;
  constructor(lease: Lease<SharedBlob>) {
    super(lease.value.source);
    this.#lease = lease;
  }
  override close(): Promise<void> {
    return this.#lease.release();
  }
}
