/**
 * The base of byte-source wrappers: everything forwards to the source below, so a wrapper
 * overrides only what it changes and never drops a capability by omission (the synchronous
 * fast path, eviction of a corrupt copy).
 */
import type { ByteSource, IntegrityReport } from './types.ts';

export class ForwardingSource implements ByteSource {
  readonly inner: ByteSource;
  constructor(inner: ByteSource) {
    this.inner = inner;
  }
  get name(): string {
    return this.inner.name;
  }
  get size(): number {
    return this.inner.size;
  }
  read(buf: Uint8Array, offset: number): Promise<number> {
    return this.inner.read(buf, offset);
  }
  tryReadSync(buf: Uint8Array, offset: number): number | undefined {
    return this.inner.tryReadSync?.(buf, offset);
  }
  evict(offset: number, length: number): Promise<void> {
    return this.inner.evict?.(offset, length) ?? Promise.resolve();
  }
  checkIntegrity(): Promise<IntegrityReport | undefined> {
    return this.inner.checkIntegrity?.() ?? Promise.resolve(undefined);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}
