/**
 * Kill-test writer for online compaction: opens the writable layer, writes and trims slots
 * from op START on (compact-ops.ts), flushing every few ops and reporting "F <ops durable>",
 * while compacting the layer back to back ("C <n>" after each). Runs until killed.
 */
import { WritableLayer } from '../../src/lsmt/writable.ts';
import { SLOT, opAt, slotContent } from './compact-ops.ts';

const [data, index, startText, seedText] = process.argv.slice(2);
const seed = Number(seedText);
const layer = await WritableLayer.open(data!, index!);
process.stdout.write('R\n');
void (async () => {
  for (let n = 1; ; n++) {
    await layer.compact();
    process.stdout.write(`C ${n}\n`);
  }
})();
let i = Number(startText);
for (let k = 0; ; k++) {
  const every = 1 + ((seed + k) % 13);
  for (let n = 0; n < every; n++, i++) {
    const op = opAt(seed, i);
    if (op.trim) await layer.trim(op.slot * SLOT, SLOT);
    else await layer.write(slotContent(i), op.slot * SLOT);
  }
  await layer.flush();
  process.stdout.write(`F ${i}\n`);
}
