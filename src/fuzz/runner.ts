/**
 * Runs fuzz cases round-robin over the targets in a worker thread with a watchdog: a case
 * over its time budget is a hang, the thread is terminated and a new one started. Tallies
 * every case's class per target and writes each failing input (and what was done to it)
 * under the reports directory.
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { makeCase } from './cases.ts';
import type { ToRunner, ToWorker } from './messages.ts';
import { CLASSES, FAILING, type CaseClass, type Seed } from './target.ts';
import { hasTarget, loadTarget } from './targets/index.ts';

export interface FuzzOptions {
  seed: string;
  /** Stop after this long (seconds of cases: building seeds and starting workers do not count). */
  seconds: number;
  /** Stop after this many cases in all. */
  count: number;
  targets: readonly string[];
  /** Where failing inputs are written. */
  reportsDir: string;
  /** A case running longer than this is a hang (default 10 s). */
  caseTimeoutMs?: number;
  /** Most bytes of content one case reads back (default 64 MiB). */
  readCap?: number;
  /** Where workers make their temporary directories (default /dev/shm when present: fsync is free there). */
  tmpRoot?: string;
  /** Run only this case number (of each target named): reproduces a reported case. */
  only?: number;
  onProgress?: (r: FuzzReport) => void;
  /** Stops the run after the case in progress (the report covers the cases run). */
  signal?: AbortSignal;
  /** Called with every case's ending (e.g. to show what a reproduced case did). */
  onCase?: (c: { target: string; caseNo: number; cls: CaseClass; detail: string; seed: string; ops: string[] }) => void;
}

export interface Failure {
  target: string;
  caseNo: number;
  cls: CaseClass;
  detail: string;
  seed: string;
  ops: string[];
  /** The failing input, written under the reports directory. */
  file: string;
  reproduce: string;
}

export interface FuzzReport {
  seed: string;
  started: string;
  seconds: number;
  cases: number;
  counts: Record<string, Record<CaseClass, number>>;
  failures: Failure[];
}

const LOAD_TIMEOUT_MS = 180_000;

type Reply = ToRunner | { type: 'timeout' } | { type: 'died'; detail: string };

/** One worker thread and the single request it may have outstanding. */
class Runner {
  readonly #worker: Worker;
  readonly #loaded = new Set<string>();
  #waiting: ((r: Reply) => void) | undefined;
  #dead: string | undefined;
  tmp: string | undefined;

  constructor(onLate: (m: Extract<ToRunner, { type: 'late' }>) => void) {
    // A heap bound turns a runaway allocation into a dead worker (a crash) instead of a dead machine.
    this.#worker = new Worker(new URL('./worker.ts', import.meta.url), { resourceLimits: { maxOldGenerationSizeMb: 1536 } });
    this.#worker.on('message', (m: ToRunner) => {
      if (m.type === 'late') return onLate(m);
      const w = this.#waiting;
      this.#waiting = undefined;
      w?.(m);
    });
    const die = (detail: string) => {
      this.#dead ??= detail;
      const w = this.#waiting;
      this.#waiting = undefined;
      w?.({ type: 'died', detail });
    };
    this.#worker.on('error', (e) => die(`worker error: ${e.stack ?? e}`));
    this.#worker.on('exit', (code) => die(`worker exited with code ${code}`));
  }

  call(m: ToWorker, timeoutMs: number): Promise<Reply> {
    if (this.#dead) return Promise.resolve({ type: 'died', detail: this.#dead });
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#waiting = undefined;
        resolve({ type: 'timeout' });
      }, timeoutMs);
      this.#waiting = (r) => {
        clearTimeout(timer);
        resolve(r);
      };
      this.#worker.postMessage(m);
    });
  }

  async start(readCap: number, tmpRoot: string): Promise<void> {
    const r = await this.call({ type: 'init', readCap, tmpRoot }, LOAD_TIMEOUT_MS);
    if (r.type !== 'ready') throw new Error(`fuzz worker did not start: ${JSON.stringify(r)}`);
    this.tmp = r.tmp;
  }

  /** Builds a target's seeds in the worker (not timed as a case). */
  async load(target: string): Promise<void> {
    if (this.#loaded.has(target)) return;
    const r = await this.call({ type: 'load', target }, LOAD_TIMEOUT_MS);
    if (r.type !== 'loaded') throw new Error(`fuzz target ${target} did not load: ${'detail' in r ? r.detail : r.type}`);
    this.#loaded.add(target);
  }

  async stop(graceful: boolean): Promise<void> {
    if (graceful && !this.#dead) await this.call({ type: 'close' }, 10_000);
    await this.#worker.terminate();
    if (this.tmp) await rm(this.tmp, { recursive: true, force: true });
  }
}

function emptyCounts(): Record<CaseClass, number> {
  return Object.fromEntries(CLASSES.map((c) => [c, 0])) as Record<CaseClass, number>;
}

/** Seeds rebuilt in the runner (deterministically) to write out the input of a failing case. */
class SeedStore {
  readonly #seeds = new Map<string, Promise<Seed[]>>();
  #tmp: Promise<string> | undefined;
  get(target: string): Promise<Seed[]> {
    let s = this.#seeds.get(target);
    if (!s) {
      this.#tmp ??= mkdtemp(path.join(os.tmpdir(), 'obd-fuzz-seeds-'));
      s = this.#tmp.then(async (tmp) => (await loadTarget(target)).seeds({ tmp, readCap: 0 }));
      this.#seeds.set(target, s);
    }
    return s;
  }
  async close(): Promise<void> {
    for (const t of this.#seeds.keys()) await (await loadTarget(t)).close?.();
    if (this.#tmp) await rm(await this.#tmp, { recursive: true, force: true });
  }
}

export async function runFuzz(opts: FuzzOptions): Promise<FuzzReport> {
  for (const t of opts.targets) if (!hasTarget(t)) throw new Error(`no fuzz target "${t}"`);
  const caseTimeout = opts.caseTimeoutMs ?? 10_000;
  const readCap = opts.readCap ?? 64 << 20;
  const tmpRoot = opts.tmpRoot ?? (existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir());
  const t0 = performance.now();
  const report: FuzzReport = { seed: opts.seed, started: new Date().toISOString(), seconds: 0, cases: 0, counts: {}, failures: [] };
  for (const t of opts.targets) report.counts[t] = emptyCounts();
  const seeds = new SeedStore();

  // Awaited before the next case starts: the worker counts the process's open descriptors.
  const fail = async (f: Omit<Failure, 'file' | 'reproduce'>) => {
    const file = path.join(opts.reportsDir, `${f.target}-${f.caseNo}.bin`);
    const failure: Failure = { ...f, file, reproduce: `npm run fuzz -- --seed ${opts.seed} --target ${f.target} --case ${f.caseNo}` };
    report.failures.push(failure);
    const all = await seeds.get(f.target);
    const c = makeCase(all, opts.seed, f.target, f.caseNo);
    failure.seed = all[c.seedIndex]!.name;
    failure.ops = c.ops;
    await mkdir(opts.reportsDir, { recursive: true });
    await writeFile(file, c.bytes);
    await writeFile(file.replace(/\.bin$/, '.json'), JSON.stringify({ ...failure, runSeed: opts.seed }, null, 2) + '\n');
  };
  const late: Promise<void>[] = [];
  const onLate = (m: { target: string; caseNo: number; detail: string }) => {
    report.counts[m.target]!.crash++;
    late.push(fail({ target: m.target, caseNo: m.caseNo, cls: 'crash', detail: `after the case ended: ${m.detail}`, seed: '?', ops: [] }));
  };

  let runner = new Runner(onLate);
  await runner.start(readCap, tmpRoot);
  const next = new Map(opts.targets.map((t) => [t, opts.only ?? 0]));
  // Each target gets an equal share of the time, so slow targets do not starve fast ones.
  const spent = new Map(opts.targets.map((t) => [t, 0]));
  let setupMs = 0;
  const setup = async (f: () => Promise<void>) => {
    const began = performance.now();
    await f();
    setupMs += performance.now() - began;
  };
  try {
    for (;;) {
      const elapsed = (performance.now() - t0 - setupMs) / 1000;
      if (report.cases >= (opts.only !== undefined ? opts.targets.length : opts.count) || elapsed >= opts.seconds || opts.signal?.aborted) break;
      const target = opts.only !== undefined ? opts.targets[report.cases]! : [...spent].reduce((a, b) => (b[1] < a[1] ? b : a))[0];
      const caseNo = next.get(target)!;
      next.set(target, caseNo + 1);
      await setup(() => runner.load(target));
      const began = performance.now();
      const r = await runner.call({ type: 'case', target, runSeed: opts.seed, caseNo }, caseTimeout);
      spent.set(target, spent.get(target)! + performance.now() - began);
      report.cases++;
      if (r.type === 'result') {
        report.counts[target]![r.cls]++;
        opts.onCase?.(r);
        if (FAILING.has(r.cls)) await fail({ target, caseNo, cls: r.cls, detail: r.detail, seed: r.seed, ops: r.ops });
      } else {
        const cls: CaseClass = r.type === 'timeout' ? 'hang' : 'crash';
        report.counts[target]![cls]++;
        const detail = r.type === 'timeout' ? `no answer within ${caseTimeout} ms` : 'detail' in r ? r.detail : r.type;
        await fail({ target, caseNo, cls, detail, seed: '?', ops: [] });
        await setup(async () => {
          await runner.stop(false);
          runner = new Runner(onLate);
          await runner.start(readCap, tmpRoot);
        });
      }
      if (opts.onProgress && report.cases % 500 === 0) opts.onProgress({ ...report, seconds: (performance.now() - t0) / 1000 });
    }
  } finally {
    await runner.stop(true);
    await Promise.allSettled(late);
    await seeds.close();
  }
  report.seconds = (performance.now() - t0) / 1000;
  return report;
}
