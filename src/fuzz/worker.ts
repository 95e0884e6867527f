/**
 * The worker thread that runs fuzz cases, so the runner can stop one that hangs (even in a
 * synchronous loop) by terminating the thread. It builds each target's seeds once, runs
 * every seed unmutated for the expected output, then answers one message per case.
 * Unhandled rejections, uncaught exceptions and file descriptors left open are charged to
 * the case that was running (or, when they come later, reported as late with the last
 * case's number).
 */
import { existsSync, readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import { parentPort } from 'node:worker_threads';
import { makeCase } from './cases.ts';
import { classifyError, classifyOutput, describeError } from './classify.ts';
import type { CaseClass, Outcome, Seed, Target, TargetContext } from './target.ts';
import { loadTarget } from './targets/index.ts';
import type { ToRunner, ToWorker } from './messages.ts';

interface Loaded {
  target: Target;
  seeds: Seed[];
  expected: Outcome[];
}

const port = parentPort!;
const send = (m: ToRunner, transfer?: ArrayBuffer[]) => port.postMessage(m, transfer ?? []);
const loaded = new Map<string, Loaded>();
let ctx: TargetContext;
let current: { target: string; caseNo: number; stray: unknown[] } | undefined;
let last: { target: string; caseNo: number } | undefined;

function stray(e: unknown, how: string): void {
  const what = `${how}: ${describeError(e)}`;
  if (current) current.stray.push(what);
  else if (last) send({ type: 'late', target: last.target, caseNo: last.caseNo, detail: what });
}
process.on('unhandledRejection', (e) => stray(e, 'unhandled rejection'));
process.on('uncaughtException', (e) => stray(e, 'uncaught exception'));

/** Open descriptors of the process (Linux), to catch a failed open that leaves files open. */
const fds = existsSync('/proc/self/fd') ? () => readdirSync('/proc/self/fd').length : () => 0;

const turns = async (n: number) => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

async function load(name: string): Promise<Loaded> {
  const have = loaded.get(name);
  if (have) return have;
  const target = await loadTarget(name);
  const seeds = await target.seeds(ctx);
  const expected: Outcome[] = [];
  for (const s of seeds) {
    const o = await target.run(s, s.bytes, ctx);
    const clean = 'output' in o ? o.failure === undefined : o.verdict === 'exact';
    if (!clean) throw new Error(`${name}: seed ${s.name} does not run cleanly: ${'output' in o ? describeError(o.failure) : `${o.verdict} ${o.detail}`}`);
    expected.push(o);
  }
  const l = { target, seeds, expected };
  loaded.set(name, l);
  return l;
}

async function runCase(l: Loaded, runSeed: string, caseNo: number): Promise<ToRunner> {
  const c = makeCase(l.seeds, runSeed, l.target.name, caseNo);
  const seed = l.seeds[c.seedIndex]!;
  const started = performance.now();
  const fdsBefore = fds();
  current = { target: l.target.name, caseNo, stray: [] };
  let cls: CaseClass;
  let detail = '';
  try {
    const o: Outcome = await l.target.run(seed, c.bytes, ctx);
    const want = l.expected[c.seedIndex]!;
    if ('output' in o && 'output' in want) ({ cls, detail } = classifyOutput(want, o, seed.guarded && !c.resealed));
    else if ('verdict' in o) ({ verdict: cls, detail } = o);
    else throw new Error(`${l.target.name}: seed ${seed.name} gave a verdict, the case an output`);
  } catch (e) {
    ({ cls, detail } = classifyError(e));
  }
  // Pieces a failed read abandoned may still settle: give them a few turns to show up.
  await turns(3);
  // Sockets and handles may close a moment later (a busy machine is slow): look again for up
  // to a second before calling it a leak.
  for (let waited = 0; fds() > fdsBefore && waited < 1000; waited += 50) await new Promise((r) => setTimeout(r, 50));
  if (fds() > fdsBefore) current.stray.push(`${fds() - fdsBefore} file descriptor(s) left open by the case`);
  if (current.stray.length) {
    cls = 'crash';
    detail = [...current.stray, detail].filter(Boolean).join('; ');
  }
  last = { target: l.target.name, caseNo };
  current = undefined;
  return { type: 'result', target: l.target.name, caseNo, cls, detail, seed: seed.name, ops: c.ops, ms: performance.now() - started };
}

port.on('message', async (m: ToWorker) => {
  try {
    if (m.type === 'init') {
      ctx = { tmp: await mkdtemp(path.join(m.tmpRoot, 'obd-fuzz-')), readCap: m.readCap };
      send({ type: 'ready', tmp: ctx.tmp });
    } else if (m.type === 'load') {
      const l = await load(m.target);
      send({ type: 'loaded', target: m.target, seeds: l.seeds.length });
    } else if (m.type === 'case') {
      send(await runCase(await load(m.target), m.runSeed, m.caseNo));
    } else if (m.type === 'close') {
      for (const l of loaded.values()) await l.target.close?.();
      await rm(ctx.tmp, { recursive: true, force: true });
      send({ type: 'closed' });
    }
  } catch (e) {
    send({ type: 'fatal', detail: describeError(e) });
  }
});
