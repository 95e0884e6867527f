/**
 * SIGKILL trials of whole `obd` commands: the real CLI is started again and again over the
 * same state and killed at moments spread over its run; after every kill the target's check
 * asserts that the final output is absent or complete (equal to an unkilled run's), that
 * inputs are untouched and that nothing half-written took a final name; reruns must succeed.
 *
 * Most kills come at the k-th change the command makes under the directories it writes into
 * (inotify), k spread over an unkilled run's count, so they land all over the writing phase
 * rather than in Node's start-up, whatever the load; a few land before (start-up, checks).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { createReadStream, watch } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { WritableLayer } from '../../src/lsmt/writable.ts';
import { MAIN } from './cli.ts';

export interface KillTarget {
  /** CLI arguments for generation `gen` (a new generation starts after each complete output). */
  args(gen: number): string[];
  env?: NodeJS.ProcessEnv;
  /** Existing directories the command writes into (watched recursively to time the kills). */
  watch: string[];
  /** Files that must stay byte-identical, and directories whose listing must not change. */
  inputs: string[];
  /** Called once after the first, unkilled run: remember what a complete output is. */
  record(gen: number): Promise<void>;
  /**
   * Asserts the state a run left. `finished`: the run exited 0, so the output must be complete
   * and no temporary file of it may remain. Resolves whether the output is complete, and
   * whether anything showed an interrupted write (temp files, partial downloads or uploads).
   */
  check(gen: number, finished: boolean): Promise<{ complete: boolean; partial: boolean }>;
  /** Removes a complete output so the next run has its work to do again. */
  reset(gen: number): Promise<void>;
}

export interface KillStats {
  kills: number;
  /** Kills that left an interrupted write behind (the interesting ones). */
  partial: number;
  /** Kills that came after the output was complete (or the run finished first). */
  complete: number;
  reruns: number;
  /** Changes the first, unkilled run made under the watched directories. */
  events: number;
  /** ms from spawn to the first change, unkilled. */
  startMs: number;
}

/** A small deterministic PRNG (xorshift32), so a failing trial reproduces. */
export function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 2 ** 32;
  };
}

export async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(file, { highWaterMark: 1 << 20 })) h.update(c as Buffer);
  return 'sha256:' + h.digest('hex');
}

/** Virtual size of the trial layers. */
export const KILL_VSIZE = 8 << 20;

/** Deterministic incompressible bytes (AES-CTR of zeros under a key named by the label). */
export function noise(label: string, n: number): Buffer {
  const key = createHash('sha256').update(label).digest();
  return createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(n));
}

/** A writable layer of scattered writes (some overwritten, some trimmed): many mappings. */
export async function scatteredWritable(data: string, index: string, label: string, uuid: string, parentUuid?: string, writes = 250): Promise<void> {
  const rnd = prng(createHash('sha256').update(label).digest().readUInt32LE(0));
  const w = await WritableLayer.create(data, index, { virtualSize: KILL_VSIZE, uuid, parentUuid });
  try {
    for (let i = 0; i < writes; i++) {
      const len = (1 + Math.floor(rnd() * 16)) * 4096;
      const at = Math.floor(rnd() * ((KILL_VSIZE - len) / 4096)) * 4096;
      if (i % 9 === 8) await w.trim(at, len);
      else await w.write(noise(`${label}-${i}`, len), at);
    }
  } finally {
    await w.close();
  }
}

/** Digest of every input file, and the listing of every input directory. */
async function fingerprint(inputs: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const p of inputs) {
    if ((await stat(p)).isDirectory()) out.push(`${p}/: ${(await readdir(p)).sort().join(' ')}`);
    else out.push(`${p}: ${await sha256File(p)}`);
  }
  return out;
}

export interface RunResult {
  /** Exited by itself with code 0 (else it was killed). */
  finished: boolean;
  /** Changes seen under the watched directories. */
  events: number;
  /** ms from spawn to the first change (Infinity if none). */
  firstWrite: number;
}

export type Kill = { afterEvents: number } | { afterMs: number } | { when: () => boolean } | undefined;

/**
 * Runs the CLI and SIGKILLs it at the `afterEvents`-th change under the watched directories
 * (a point in its own progress, however loaded the machine), at the first change after which
 * `when()` holds, or `afterMs` after spawning; with no kill it must exit 0 by itself.
 */
export function runObd(target: Pick<KillTarget, 'args' | 'env' | 'watch'>, gen: number, kill: Kill): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const args = target.args(gen);
    // The compile cache stays where it always is, even when a target moves TMPDIR.
    const env = { NODE_COMPILE_CACHE: path.join(os.tmpdir(), 'node-compile-cache'), ...process.env, ...target.env };
    const child = spawn(process.execPath, [MAIN, ...args], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    let events = 0;
    let firstWrite = Infinity;
    const stop = () => child.kill('SIGKILL');
    const guard = setTimeout(stop, 60_000);
    const timer = kill && 'afterMs' in kill ? setTimeout(stop, kill.afterMs) : undefined;
    const watchers = target.watch.map((dir) =>
      // A directory removed while the watcher adds it only costs that directory's events.
      watch(dir, { recursive: true }, () => {
        if (events++ === 0) firstWrite = performance.now() - t0;
        if (kill && 'afterEvents' in kill ? events === kill.afterEvents : kill && 'when' in kill && kill.when()) stop();
      }).on('error', () => {}),
    );
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(guard);
      clearTimeout(timer);
      for (const w of watchers) w.close();
      if (signal === 'SIGKILL') resolve({ finished: false, events, firstWrite });
      else if (code === 0) resolve({ finished: true, events, firstWrite });
      else reject(new Error(`obd ${args.join(' ')} failed (code ${code}, signal ${signal}): ${stderr}`));
    });
  });
}

/**
 * The trial loop: one unkilled run to learn what a complete output is and how many changes
 * writing it makes, then `kills` killed runs (every third one followed by an unkilled rerun,
 * so leftovers of up to three kills meet a rerun), then a final unkilled run.
 */
export async function killTrials(target: KillTarget, kills: number, seed: number): Promise<KillStats> {
  const rnd = prng(seed);
  const inputs = await fingerprint(target.inputs);
  let gen = 0;
  const ref = await runObd(target, gen, undefined);
  assert.ok(ref.events > 0, `obd ${target.args(gen).join(' ')} wrote nothing under ${target.watch.join(', ')}`);
  await target.record(gen);
  assert.equal((await target.check(gen, true)).complete, true);
  await target.reset(gen++);
  // Only a run from scratch counts: reruns resume (pull, a layout's blobs) and make fewer.
  const events = ref.events;
  const stats: KillStats = { kills, partial: 0, complete: 0, reruns: 0, events, startMs: Math.round(ref.firstWrite) };

  const rerun = async (): Promise<void> => {
    await runObd(target, gen, undefined);
    stats.reruns++;
    assert.equal((await target.check(gen, true)).complete, true, `a rerun after a kill (generation ${gen}) did not complete the output`);
    await target.reset(gen++);
  };

  // Kill points: some during start-up, the rest stratified over the writing phase, in
  // shuffled order so consecutive kills hit different phases.
  const early = Math.max(1, Math.round(kills / 10));
  const slots = Array.from({ length: kills - early }, (_, j) => j);
  for (let j = slots.length - 1; j > 0; j--) {
    const k = Math.floor(rnd() * (j + 1));
    [slots[j], slots[k]] = [slots[k]!, slots[j]!];
  }
  for (let i = 0; i < kills; i++) {
    const r = await runObd(target, gen, i < early ? { afterMs: rnd() * ref.firstWrite } : { afterEvents: Math.max(1, Math.ceil((events * (slots[i - early]! + rnd())) / slots.length)) });
    const s = await target.check(gen, r.finished);
    if (r.finished) assert.ok(s.complete, `kill ${i}: the run finished but its output is not complete`);
    assert.deepEqual(await fingerprint(target.inputs), inputs, `an input changed (kill ${i})`);
    if (s.partial) stats.partial++;
    if (s.complete) {
      stats.complete++;
      await target.reset(gen++);
    } else if (i % 3 === 2) {
      await rerun();
    }
  }
  await rerun();
  assert.deepEqual(await fingerprint(target.inputs), inputs);
  return stats;
}
