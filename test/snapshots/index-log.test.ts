/**
 * The writable layer's index log on its own, as sealing and compaction will drive it: the
 * durable point, what a reopen recovers, and the latch that stops the log after a failure.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import { ObdError } from '../../src/io/errors.ts';
import { HT_SPACE } from '../../src/lsmt/format.ts';
import { IndexLog } from '../../src/lsmt/index-log.ts';
import { WritableFiles } from '../../src/lsmt/writable-files.ts';
import { inDir } from './helpers.ts';
import { tempDir } from '../helpers/temp.ts';

test('flush is the durable point: a reopen recovers exactly the entries flushed before it', async (ctx) => {
  const t = inDir(await tempDir(ctx));
  const files = await WritableFiles.create(t.file('d'), t.file('i'), { virtualSize: 1 << 20 });
  await files.data.write(new Uint8Array(16 * 512), 0, 16 * 512, HT_SPACE);
  const log = IndexLog.empty(files);
  log.dataWritten();
  log.append(0, 8, 8, false);
  log.append(100, 8, 16, false);
  log.append(4, 200, 24, true);
  assert.equal(log.pendingCount, 3);
  assert.equal((await stat(t.file('i'))).size, HT_SPACE, 'nothing reaches the index file before a flush');
  await log.flush();
  assert.equal(log.pendingCount, 0);
  log.append(300, 1, 8, true);
  assert.equal(log.entries.count, 3, 'an entry appended after the flush is current at once');
  assert.equal(log.pendingCount, 1);
  await files.close();

  const again = await WritableFiles.open(t.file('d'), t.file('i'), { readOnly: true });
  try {
    const back = await IndexLog.recover(again, false);
    assert.deepEqual(back.recovery, { entriesOnDisk: 3, droppedEntries: 0, droppedBytes: 0 });
    assert.deepEqual(back.entries.toTable().toArray(), [
      { offset: 0, length: 4, moffset: 8, zeroed: false, tag: 0 },
      { offset: 4, length: 200, moffset: 24, zeroed: true, tag: 0 },
    ]);
  } finally {
    await again.close();
  }
});

test('a failed flush latches the log: every later flush throws the same error, the entries stay readable', async (ctx) => {
  const t = inDir(await tempDir(ctx));
  const files = await WritableFiles.create(t.file('d'), t.file('i'), { virtualSize: 1 << 20 });
  const log = IndexLog.empty(files);
  log.append(0, 8, 8, true);
  // The index file's descriptor goes away under the log: appending its entries fails.
  await files.index.close();
  const failed = await log.flush().then(
    () => assert.fail('the flush succeeded'),
    (e: unknown) => e,
  );
  assert.ok(failed instanceof ObdError);
  assert.match(failed.message, /\/i: appending index entries \(the layer accepts no more writes\) failed/);
  assert.equal(log.broken, failed);
  log.append(16, 8, 8, true);
  await assert.rejects(log.flush(), (e) => e === failed);
  assert.equal(log.entries.count, 2);
  assert.equal(log.pendingCount, 2, 'nothing was taken out of the pending entries');
  await files.close();
  assert.equal((await stat(t.file('i'))).size, HT_SPACE);
});
