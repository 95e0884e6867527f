/**
 * The fuzzing harness (src/fuzz, `npm run fuzz`): a short seeded run over every target must
 * end with no undetected change, crash or hang; and the harness itself must tell those
 * apart and write out each failing input (its self-test target fails on purpose).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { runFuzz, type FuzzReport } from '../../src/fuzz/runner.ts';
import { DEFAULT_TARGETS } from '../../src/fuzz/targets/index.ts';
import { CLASSES } from '../../src/fuzz/target.ts';
import { tempDir } from '../helpers/temp.ts';

async function run(t: TestContext, opts: Omit<Parameters<typeof runFuzz>[0], 'reportsDir'>): Promise<FuzzReport> {
  return runFuzz({ ...opts, reportsDir: await tempDir(t, 'obd-fuzz-test-') });
}

const total = (c: Record<string, number>) => CLASSES.reduce((s, k) => s + c[k]!, 0);

test('a 20 s fuzzing run over every parser and protocol finds no undetected change, crash or hang', { timeout: 180_000 }, async (t) => {
  const r = await run(t, { seed: '20261201', seconds: 20, count: Infinity, targets: DEFAULT_TARGETS, caseTimeoutMs: 10_000 });
  for (const name of DEFAULT_TARGETS) assert.ok(total(r.counts[name]!) > 0, `target ${name} ran`);
  const failing = r.failures.map((f) => `${f.cls} ${f.target} #${f.caseNo} (${f.seed}: ${f.ops.join(', ')}): ${f.detail}\n    ${f.reproduce}`);
  assert.deepEqual(failing, [], `${failing.length} failing cases of ${r.cases}:\n${failing.join('\n')}`);
});

test('the harness classifies typed errors, changed output, crashes, unhandled rejections and hangs, and writes each failing input', { timeout: 60_000 }, async (t) => {
  const r = await run(t, { seed: '1', seconds: 30, count: 24, targets: ['selftest'], caseTimeoutMs: 1000 });
  const c = r.counts.selftest!;
  assert.equal(total(c), 24);
  for (const k of ['typed', 'exact', 'undetected', 'crash', 'hang'] as const) assert.ok(c[k] > 0, `some ${k} cases: ${JSON.stringify(c)}`);
  assert.ok(r.failures.some((f) => /unhandled rejection: RangeError/.test(f.detail)) || r.failures.some((f) => /TypeError/.test(f.detail)), 'untyped endings are crashes');
  const hang = r.failures.find((f) => f.cls === 'hang')!;
  assert.match(hang.reproduce, /--seed 1 --target selftest --case \d+/);
  assert.ok(existsSync(hang.file), 'the hanging input is written');
  assert.equal(JSON.parse(await readFile(hang.file.replace(/\.bin$/, '.json'), 'utf8')).cls, 'hang');
});
