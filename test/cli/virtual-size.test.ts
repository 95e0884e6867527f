/** Layers with impossible virtual sizes are refused by the commands that open them, quickly and by name. */
import assert from 'node:assert/strict';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { obd } from '../helpers/cli.ts';
import { FIXTURES } from '../helpers/recipes.ts';
import { suiteTempDir } from '../helpers/temp.ts';

describe('virtual size validation through the CLI', { timeout: 60_000 }, () => {
  const tmp = suiteTempDir('obd-vsize-cli-');

  for (const [what, vsize, message] of [
    ['2^63', 2n ** 63n, /bad\.lsmt @\d+: virtual size \d+ exceeds the largest supported size 9007199254740480/],
    ['odd', 1000n * 1000n + 1n, /bad\.lsmt @\d+: virtual size 1000001 is not a multiple of 512/],
    ['zero', 0n, /no layer of the stack sets a virtual size/],
    ['smaller than its data', 512n, /virtual size 512 is smaller than the data its index maps/],
  ] as const) {
    it(`a trailer virtual size ${what}: export, info and serve fail with a clear message`, async () => {
      const b = await readFile(path.join(FIXTURES, 'lsmt', 'layer1.lsmt'));
      b.writeBigUInt64LE(vsize, b.length - 4096 + 48);
      const bad = path.join(tmp.path, 'bad.lsmt');
      await writeFile(bad, b);
      const t0 = performance.now();
      const commands = [['export', bad, path.join(tmp.path, 'out.raw')], ['map', bad], ['serve', bad, '--socket', path.join(tmp.path, 's.sock')]];
      // A layer of size 0 is valid on its own (it takes the size of the layers below); only stacking it alone fails.
      if (vsize === 0n) assert.match((await obd(['info', bad])).stdout, /virtual size\s+0 B\b/);
      else commands.push(['info', bad]);
      for (const args of commands) {
        const r = await obd(args);
        assert.equal(r.code, 1, `${args[0]}: ${r.stderr}`);
        assert.match(r.stderr, message, args[0]);
        assert.doesNotMatch(r.stderr, /\n\s+at /, `${args[0]} printed a stack trace`);
      }
      assert.ok(performance.now() - t0 < 20_000, 'refused quickly, no spinning');
      assert.deepEqual((await readdir(tmp.path)).sort(), ['bad.lsmt']);
    });
  }
});
