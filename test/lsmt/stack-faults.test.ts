/**
 * A stack read whose pieces fail: it settles only after every piece it started has settled,
 * and no piece's failure escapes as an unhandled rejection.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ChecksumError, ShortReadError } from '../../src/io/errors.ts';
import type { ByteSource } from '../../src/io/types.ts';
import { Stack } from '../../src/lsmt/stack.ts';
import { openSealedLayer } from '../../src/lsmt/sealed.ts';
import { buildLayerBytes } from '../helpers/layers.ts';
import { MemorySource } from '../../src/io/memory.ts';

const KiB = 1024;

/** Reads through `inner` after a delay, then optionally fails; counts reads still running. */
class SlowSource implements ByteSource {
  readonly name = 'slow';
  running = 0;
  readonly inner: ByteSource;
  readonly failAfterRead: boolean;
  constructor(inner: ByteSource, failAfterRead: boolean) {
    this.inner = inner;
    this.failAfterRead = failAfterRead;
  }
  get size(): number {
    return this.inner.size;
  }
  async read(buf: Uint8Array, offset: number): Promise<number> {
    this.running++;
    try {
      await new Promise((r) => setTimeout(r, 30));
      const n = await this.inner.read(buf, offset);
      if (this.failAfterRead) throw new ShortReadError(this.name, offset, buf.length, 0);
      return n;
    } finally {
      this.running--;
    }
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

/** Fails every read at once, synchronously, as a zfile with a bad block in the page cache does. */
class BadSource implements ByteSource {
  readonly name = 'bad';
  readonly inner: ByteSource;
  constructor(inner: ByteSource) {
    this.inner = inner;
  }
  get size(): number {
    return this.inner.size;
  }
  tryReadSync(): number | undefined {
    throw new ChecksumError(this.name, 0, 'CRC mismatch');
  }
  read(): Promise<number> {
    return Promise.reject(new ChecksumError(this.name, 0, 'CRC mismatch'));
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

describe('stack reads with failing pieces', () => {
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown): void => void unhandled.push(e);
  before(() => process.on('unhandledRejection', onUnhandled));
  after(() => process.off('unhandledRejection', onUnhandled));

  for (const failAfterRead of [false, true]) {
    it(`waits for the earlier async piece (which ${failAfterRead ? 'fails too' : 'succeeds'}) before rejecting`, async () => {
      const vsize = 1 << 20;
      const base = await buildLayerBytes({ virtualSize: vsize }, [{ offset: 0, data: new Uint8Array(64 * KiB).fill(1) }]);
      const top = await buildLayerBytes({ virtualSize: vsize }, [{ offset: 64 * KiB, data: new Uint8Array(64 * KiB).fill(2) }]);
      const slow = new SlowSource(new MemorySource(base, 'base'), failAfterRead);
      const l0 = await openSealedLayer(new MemorySource(base, 'base'));
      const l1 = await openSealedLayer(new MemorySource(top, 'top'));
      const stack = new Stack([{ ...l0, source: slow }, { ...l1, source: new BadSource(l1.source) }]);
      const buf = new Uint8Array(128 * KiB);
      await assert.rejects(stack.read(buf, 0), ChecksumError);
      assert.equal(slow.running, 0, 'the read settled while a piece was still filling the buffer');
      assert.equal(buf[0], 1, 'the earlier piece finished filling its part');
      await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(unhandled, []);
    });
  }
});
