/**
 * Crash-test writer: opens (recovering) the writable layer, continues the op stream from the
 * number of operations that survived, flushes every few operations and reports each
 * completed flush on stdout as "F <ops durable>". Runs until killed.
 */
import { WritableLayer } from '../../src/lsmt/writable.ts';
import { crashOp } from './crash-ops.ts';

const [data, index, seedText] = process.argv.slice(2);
const seed = Number(seedText);
const layer = await WritableLayer.open(data!, index!);
const r = layer.recovery;
let i = r.entriesOnDisk - r.droppedEntries;
process.stdout.write(`R ${i}\n`);
let k = 0;
for (;;) {
  const every = 1 + ((seed + k++) % 23);
  for (let n = 0; n < every; n++, i++) {
    const op = crashOp(seed, i);
    if (op.kind === 'write') await layer.write(op.data, op.offset);
    else await layer.trim(op.offset, op.length);
  }
  await layer.flush();
  process.stdout.write(`F ${i}\n`);
}
