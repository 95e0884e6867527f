import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { SyncReadGate, SyncWriteGate } from '../../src/io/fd-io.ts';
import { FileSource } from '../../src/io/file.ts';
import { tempDir } from '../helpers/temp.ts';

/** A temporary file holding '0123456789', open with `flags` until the test ends. */
async function digitsFile(t: TestContext, flags: string): Promise<{ file: string; fd: number }> {
  const file = path.join(await tempDir(t, 'obd-gate-'), 'f');
  writeFileSync(file, Buffer.from('0123456789'));
  const fd = openSync(file, flags);
  t.after(() => closeSync(fd));
  return { file, fd };
}

test('SyncReadGate reads synchronously, backs off after a run of slow reads, and comes back', async (t) => {
  const { fd } = await digitsFile(t, 'r');

  let clock = 0;
  let step = 0; // how far each clock read moves time: 0 = instant reads, 1 = 1 ms per read
  const gate = new SyncReadGate(true, () => (clock += step));
  const buf = new Uint8Array(4);
  assert.equal(gate.read(fd, buf, 2), 4);
  assert.equal(Buffer.from(buf).toString(), '2345');
  assert.equal(gate.read(fd, new Uint8Array(512 * 1024), 0), undefined, 'large reads go to the thread pool');

  step = 1;
  for (let i = 0; i < 3; i++) assert.equal(gate.read(fd, buf, 0), 4, `slow read ${i + 1} is still served`);
  step = 0;
  assert.equal(gate.read(fd, buf, 0), 4, 'a fast read breaks the run');
  step = 1;
  for (let i = 0; i < 4; i++) assert.equal(gate.read(fd, buf, 0), 4);
  step = 0;
  assert.equal(gate.read(fd, buf, 0), undefined, 'four slow reads in a row: reads go async');
  clock += 999;
  assert.equal(gate.read(fd, buf, 0), undefined, 'still backing off just before a second has passed');
  clock += 2;
  assert.equal(gate.read(fd, buf, 6), 4, 'synchronous again after the back-off');
  assert.equal(Buffer.from(buf).toString(), '6789');

  assert.equal(new SyncReadGate(false).read(fd, buf, 0), undefined, 'a disabled gate never reads');
});

test('SyncReadGate.readAt reads into a range of a buffer and times one read in four', async (t) => {
  const { fd } = await digitsFile(t, 'r');

  let clock = 0;
  let reads = 0;
  const gate = new SyncReadGate(true, () => (reads++, (clock += 1)));
  const buf = new Uint8Array(8).fill(0x2e);
  assert.equal(gate.readAt(fd, buf, 2, 4, 3), 4);
  assert.equal(Buffer.from(buf).toString(), '..3456..');
  assert.equal(gate.readAt(fd, buf, 0, 8, 6), 4, 'short at the end of the file');
  assert.equal(gate.readAt(fd, new Uint8Array(512 * 1024), 0, 512 * 1024, 0), undefined, 'large reads go to the thread pool');
  // Every clock read moves time 1 ms: each timed read is slow. Four timed reads in a row back off.
  reads = 0;
  for (let i = 3; i < 16; i++) assert.equal(gate.readAt(fd, buf, 0, 4, 0), 4, `read ${i + 1} is still served`);
  assert.ok(reads <= 8, `only sampled reads look at the clock (${reads} clock reads)`);
  assert.equal(gate.readAt(fd, buf, 0, 4, 0), undefined, 'four slow samples in a row: reads go async');
  clock += 1000;
  assert.equal(gate.readAt(fd, buf, 0, 4, 0), 4, 'synchronous again after the back-off');
  assert.equal(new SyncReadGate(false).readAt(fd, buf, 0, 4, 0), undefined, 'a disabled gate never reads');
});

test('SyncWriteGate writes small buffers synchronously, backs off after one slow write, and comes back', async (t) => {
  const { file, fd } = await digitsFile(t, 'r+');
  const contents = () => readFileSync(file).toString();

  let clock = 0;
  let step = 0;
  const gate = new SyncWriteGate(true, () => (clock += step));
  assert.equal(gate.write(fd, Buffer.from('ab'), 2), true);
  assert.equal(contents(), '01ab456789', 'the bytes are in the file when write returns');
  assert.equal(gate.write(fd, new Uint8Array(64 * 1024 + 1), 0), false, 'large writes go to the thread pool');
  assert.equal(contents(), '01ab456789', 'a refused write writes nothing');

  step = 2;
  assert.equal(gate.write(fd, Buffer.from('cd'), 4), true, 'the slow write itself completes');
  step = 0;
  assert.equal(gate.write(fd, Buffer.from('xx'), 0), false, 'one slow write: writes go async');
  clock += 999;
  assert.equal(gate.write(fd, Buffer.from('xx'), 0), false, 'still backing off just before a second has passed');
  clock += 4;
  assert.equal(gate.write(fd, Buffer.from('ef'), 6), true, 'synchronous again after the back-off');
  assert.equal(contents(), '01abcdef89');

  const ro = openSync(file, 'r');
  t.after(() => closeSync(ro));
  assert.throws(() => gate.write(ro, Buffer.from('z'), 0), { code: 'EBADF' }, 'a failed write throws, for the caller to wrap');
  assert.equal(new SyncWriteGate(false).write(fd, Buffer.from('z'), 0), false, 'a disabled gate never writes');
});

test('FileSource.tryReadSyncAt reads into the middle of a buffer as tryReadSync does, short at the end', async (t) => {
  const { file } = await digitsFile(t, 'r');
  const src = await FileSource.open(file);
  t.after(() => src.close());
  const buf = Buffer.alloc(8, '.');
  assert.equal(src.tryReadSyncAt(buf, 2, 4, 3), 4);
  assert.equal(buf.toString(), '..3456..');
  assert.equal(src.tryReadSyncAt(buf, 0, 8, 7), 3, 'short at the end of the file');
  assert.equal(buf.toString(), '789456..');
  assert.equal(src.tryReadSyncAt(buf, 0, 4, 10), 0, 'nothing at or past the end');
  assert.equal(src.tryReadSyncAt(buf, 0, 4, 99), 0);
});
