/**
 * The operations every export goes through, driven directly — no socket, no protocol — as a
 * second export (a FUSE file, ublk) would drive them.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { NoSpaceError, NotSupportedError, OutOfRangeError, ReadOnlyError } from '../../src/io/errors.ts';
import { MemoryDevice, MemorySource } from '../../src/io/memory.ts';
import { RawDevice } from '../../src/io/raw.ts';
import { inRange } from '../../src/io/util.ts';
import type { BlockDevice, Extent } from '../../src/io/types.ts';
import { capabilitiesOf } from '../../src/ops/capabilities.ts';
import { DeviceOps } from '../../src/ops/device-ops.ts';
import { Stack } from '../../src/lsmt/stack.ts';
import { WritableLayer } from '../../src/lsmt/writable.ts';
import { buildLayer } from '../helpers/layers.ts';
import { tempDir } from '../helpers/temp.ts';

const MiB = 1 << 20;

/** Counts what reaches the device below, and has no trim (so zeroing must write). */
class CountingDevice implements BlockDevice {
  readonly name = 'counting';
  readonly layerCount = 1;
  readonly writable = true;
  readonly inner = new MemoryDevice(MiB);
  readonly size = MiB;
  calls: string[] = [];
  read(buf: Uint8Array, offset: number): Promise<void> {
    this.calls.push(`read ${offset}+${buf.length}`);
    return this.inner.read(buf, offset);
  }
  write(buf: Uint8Array, offset: number): Promise<void> {
    this.calls.push(`write ${offset}+${buf.length}`);
    return this.inner.write(buf, offset);
  }
  flush(): Promise<void> {
    this.calls.push('flush');
    return Promise.resolve();
  }
  extents(offset: number, length: number): Promise<Extent[]> {
    return this.inner.extents(offset, length);
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

describe('device operations', () => {
  it('derive capabilities once for a device that declares none, and emulate what it lacks', async () => {
    const dev = new CountingDevice();
    const caps = capabilitiesOf(dev);
    assert.equal(capabilitiesOf(dev), caps, 'computed once');
    assert.deepEqual([caps.writable, caps.trim, caps.zero, caps.fua, caps.flush], [true, false, 'write', 'flush', true]);
    const ops = new DeviceOps(dev);
    await ops.write(new Uint8Array(4096).fill(1), 0, { fua: true });
    assert.deepEqual(dev.calls, ['write 0+4096', 'flush'], 'FUA is a flush after the write');
    dev.calls = [];
    // No trim: zeroing writes zeros, may-trim or not; asking for fast zeroing is refused.
    await ops.zero(100, 3000, { mayTrim: true });
    assert.deepEqual(dev.calls, ['write 100+3000']);
    await assert.rejects(ops.zero(0, 4096, { mayTrim: true, fast: true }), NotSupportedError);
    const back = new Uint8Array(4096);
    await ops.read(back, 0);
    assert.ok(back.subarray(100, 3100).every((b) => b === 0) && back[99] === 1 && back[3100] === 1);
    // A discard on a device without trim is a no-op hint, not an error.
    dev.calls = [];
    await ops.trim(0, 4096);
    assert.deepEqual(dev.calls, []);
  });

  it('zero by trimming whole blocks where the device trims, writing only the partial ends', async () => {
    const dev = new MemoryDevice(MiB);
    const ops = new DeviceOps(dev);
    assert.equal(ops.fastZero(true), true);
    assert.equal(ops.fastZero(false), false);
    await ops.write(new Uint8Array(8192).fill(7), 0);
    await ops.zero(100, 8000, { mayTrim: true, fast: true });
    const ext = await ops.extents(0, 8192);
    assert.deepEqual(
      ext.map((e) => [e.offset, e.length, e.kind]),
      [[0, 512, 'data'], [512, 7168, 'zero'], [7680, 512, 'data']],
    );
    // A trim hint covers only whole sectors.
    await ops.write(new Uint8Array(2048).fill(9), 0);
    await ops.trim(100, 1000);
    const b = new Uint8Array(2048);
    await ops.read(b, 0);
    assert.deepEqual([b[99], b[100], b[511], b[512], b[1023], b[1100]], [9, 9, 9, 0, 0, 9]);
  });

  it('check every request once: range, past-the-end writes, read-only devices and exports', async () => {
    const ops = new DeviceOps(new MemoryDevice(MiB));
    await assert.rejects(ops.read(new Uint8Array(10), MiB - 5), OutOfRangeError);
    await assert.rejects(ops.write(new Uint8Array(10), MiB - 5), NoSpaceError);
    await assert.rejects(ops.zero(MiB - 5, 10), NoSpaceError);
    await assert.rejects(ops.trim(MiB - 5, 10), OutOfRangeError);
    await assert.rejects(ops.cache(-1, 10), OutOfRangeError);
    assert.equal(ops.refusal('read', 0, MiB), undefined);

    const readOnly = new DeviceOps(new MemoryDevice(MiB), { readOnly: true });
    await assert.rejects(readOnly.write(new Uint8Array(10), 0), ReadOnlyError);
    await assert.rejects(readOnly.trim(0, 512), ReadOnlyError);
    await readOnly.flush();

    const stack = new Stack([await buildLayer({ virtualSize: MiB }, [{ offset: 0, data: new Uint8Array(4096).fill(3) }])]);
    const sealed = new DeviceOps(stack);
    assert.equal(sealed.readOnly, true, 'a sealed stack cannot be written whatever the export asks');
    assert.deepEqual([sealed.capabilities.trim, sealed.capabilities.zero, sealed.capabilities.prefetch], [false, 'none', true]);
    await assert.rejects(sealed.zero(0, 512), ReadOnlyError);
    await sealed.cache(0, MiB);
    const b = new Uint8Array(4096);
    await sealed.read(b, 0);
    assert.ok(b.every((x) => x === 3));
  });

  it('refuse the same bad ranges as the devices reached directly, with the one shared check', async (t) => {
    const dir = await tempDir(t);
    const layer = await buildLayer({ virtualSize: MiB }, [{ offset: 0, data: new Uint8Array(4096).fill(3) }]);
    const stack = new Stack([layer]);
    const upper = await WritableLayer.create(path.join(dir, 'rw.data'), path.join(dir, 'rw.index'), { virtualSize: MiB, lower: stack });
    const devices: BlockDevice[] = [new MemoryDevice(MiB), stack, upper, new RawDevice(new MemorySource(new Uint8Array(MiB), 'raw'))];
    const bad: Array<[number, number]> = [[-512, 512], [MiB - 5, 10], [Number.NaN, 512], [0.5, 512], [0, -1], [2 ** 53, 512]];
    try {
      for (const dev of devices) {
        const ops = new DeviceOps(dev);
        for (const [offset, length] of bad) {
          assert.ok(ops.refusal('read', offset, length) instanceof OutOfRangeError, `ops refuses ${offset}+${length} of ${dev.name}`);
          assert.equal(inRange(offset, length, dev.size), false);
          await assert.rejects(dev.extents(offset, length), OutOfRangeError, `${dev.name} itself refuses extents ${offset}+${length}`);
          if (length >= 0 && Number.isSafeInteger(length)) await assert.rejects(dev.read(new Uint8Array(length), offset), OutOfRangeError, `${dev.name} itself refuses a read at ${offset}+${length}`);
        }
        assert.equal(ops.refusal('read', MiB - 512, 512), undefined);
      }
    } finally {
      await upper.close();
      await stack.close();
    }
  });
});
