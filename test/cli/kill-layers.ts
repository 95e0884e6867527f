/**
 * The SIGKILL trials of commands that write one layer file (kill-commit.test.ts,
 * kill-import.test.ts, two files so they run side by side): killed anywhere, a command leaves
 * either no output or the complete one under the final name, never touches its inputs, and a
 * rerun writes the same bytes as a run that was never killed. OBD_KILL_TRIALS=N runs N kills
 * per command (default 6).
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { commitLayer } from '../../src/lsmt/commit.ts';
import { KILL_VSIZE, killTrials, noise, prng, scatteredWritable, sha256File, type KillTarget } from '../helpers/kill.ts';
import { suiteTempDir } from '../helpers/temp.ts';

const KILLS = Number(process.env.OBD_KILL_TRIALS) || 6;
const UUID = ['6f1d0c2e-0d7a-4c55-9a43-0c3e5b1f0a01', '6f1d0c2e-0d7a-4c55-9a43-0c3e5b1f0a02', '6f1d0c2e-0d7a-4c55-9a43-0c3e5b1f0a03'];

/** A target whose output is one file: absent or byte-equal to the unkilled run's. */
function fileTarget(work: string, inputs: string[], args: (out: string) => string[]): KillTarget {
  const out = path.join(work, 'out');
  let want = '';
  return {
    args: () => args(out),
    watch: [work],
    inputs,
    async record() {
      want = await sha256File(out);
    },
    async check(_gen, finished) {
      const names = await readdir(work);
      const strays = names.filter((n) => n !== 'out');
      for (const n of strays) assert.match(n, /^out\.tmp-/, `unexpected file ${n} next to the output`);
      const complete = names.includes('out');
      if (complete) assert.equal(await sha256File(out), want, 'the output under its final name differs from an unkilled run');
      if (finished) {
        assert.ok(complete, 'a finished run left no output');
        assert.deepEqual(strays, [], 'a finished run left temporary files');
      }
      return { complete, partial: strays.length > 0 };
    },
    async reset() {
      await rm(out);
    },
  };
}

/** Inputs by name: a writable layer w.data/w.index, sealed l0.lsmt ← l1.lsmt, disk.raw. */
export type Input = (name: string) => string;

/** One describe block of kill trials, one test per [name, arguments] case. */
export function layerKillSuite(title: string, seed: number, cases: Array<[string, (I: Input, out: string) => string[]]>): void {
  describe(title, { concurrency: 1 }, () => {
    const tmp = suiteTempDir('obd-kill-');
    let root: string;
    let inputs: string[];
    const I = (name: string) => path.join(root, 'in', name);
    before(async () => {
      root = tmp.path;
      await mkdir(path.join(root, 'in'));
      await scatteredWritable(I('w.data'), I('w.index'), 'w', UUID[2]!, UUID[1]);
      for (let k = 0; k < 2; k++) {
        await scatteredWritable(I(`l${k}.data`), I(`l${k}.index`), `l${k}`, UUID[k]!, k ? UUID[k - 1] : undefined);
        await commitLayer(I(`l${k}.data`), I(`l${k}.index`), I(`l${k}.lsmt`), { uuid: UUID[k] });
      }
      // A raw disk: the base's bytes with some blocks changed, some zeroed, the rest equal.
      const disk = noise('disk', KILL_VSIZE);
      const rnd = prng(7);
      for (let b = 0; b < KILL_VSIZE / 65536; b++) if (rnd() < 0.3) disk.fill(0, b * 65536, (b + 1) * 65536);
      await writeFile(I('disk.raw'), disk);
      inputs = [path.join(root, 'in'), ...(await readdir(path.join(root, 'in'))).map(I)];
    });

    cases.forEach(([name, args], k) => {
      test(`${name}: killed anywhere, no half-written output takes the final name; a rerun succeeds`, { timeout: 120_000 * Math.max(1, KILLS / 6) }, async (t) => {
        const work = path.join(root, `work${k}`);
        await mkdir(work);
        const s = await killTrials(fileTarget(work, inputs, (out) => args(I, out)), KILLS, seed + k);
        t.diagnostic(JSON.stringify(s));
        assert.ok(s.partial >= KILLS / 3, `only ${s.partial} of ${KILLS} kills interrupted a write (${JSON.stringify(s)})`);
      });
    });
  });
}
