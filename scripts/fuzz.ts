/**
 * npm run fuzz -- [--seed S] [--seconds N] [--count N] [--target NAME]... [--case N]
 *                 [--reports DIR] [--timeout MS] [--json] [--markdown FILE] [--list]
 *
 * Mutates valid seeds of every parser and protocol (src/fuzz/targets) and classifies each
 * case. Exits 1 when a case read back changed bytes a format should have caught, crashed
 * or hung; each such input is written under --reports (default ./fuzz-reports).
 *
 * Examples:
 *   npm run fuzz -- --seconds 60                         # a minute, a random seed
 *   npm run fuzz -- --seed 7 --count 200000 --seconds 7200 --markdown bench/results/fuzz.md
 *                                                        # the long run (then npm run bench -- --assemble)
 *   npm run fuzz -- --seed 7 --target zfile --case 1234  # reproduce one reported case
 */
import { parseArgs } from 'node:util';
import { spawnSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import os from 'node:os';
import { failureText, markdownSection, textTable } from '../src/fuzz/report.ts';
import { FAILING } from '../src/fuzz/target.ts';
import { runFuzz } from '../src/fuzz/runner.ts';
import { DEFAULT_TARGETS, listTargets } from '../src/fuzz/targets/index.ts';

const { values } = parseArgs({
  options: {
    seed: { type: 'string' },
    seconds: { type: 'string', default: '60' },
    count: { type: 'string' },
    target: { type: 'string', multiple: true },
    case: { type: 'string' },
    reports: { type: 'string', default: 'fuzz-reports' },
    timeout: { type: 'string', default: '10000' },
    json: { type: 'boolean', default: false },
    markdown: { type: 'string' },
    list: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

if (values.help) {
  process.stdout.write(
    [
      'usage: npm run fuzz -- [--seed S] [--seconds N] [--count N] [--target NAME]... [--case N] [--reports DIR] [--timeout MS] [--json] [--list]',
      '  --seed      run seed (default: random, printed)      --seconds  time bound (default 60)',
      '  --count     most cases in all                        --target   only these targets (repeatable)',
      '  --case      run one case number (reproduce a report) --reports  where failing inputs go (default fuzz-reports)',
      '  --timeout   ms before a case counts as a hang (default 10000)',
      '  --json      the report as JSON                       --markdown FILE  the docs/benchmarks.md section',
      'examples: npm run fuzz -- --seconds 60 · npm run fuzz -- --seed 7 --target zfile --case 1234',
      '',
    ].join('\n'),
  );
  process.exit(0);
}
if (values.list) {
  for (const t of listTargets()) process.stdout.write(`${t.name.padEnd(12)} ${t.about}${t.hidden ? ' (only when named)' : ''}\n`);
  process.exit(0);
}

function num(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const v = Number(text);
  if (!Number.isFinite(v) || v < 0) {
    process.stderr.write(`--${name} ${text}: expected a non-negative number\n`);
    process.exit(2);
  }
  return v;
}

const only = values.case === undefined ? undefined : num('case', values.case, 0);
const seed = values.seed ?? String(Math.floor(Math.random() * 2 ** 31));
// Ctrl-C or a kill ends the run after the current case, cleaning up and reporting what ran.
const stop = new AbortController();
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => stop.abort());
const report = await runFuzz({
  seed,
  signal: stop.signal,
  seconds: only === undefined ? num('seconds', values.seconds, 60) : Infinity,
  count: num('count', values.count, Infinity),
  targets: values.target ?? DEFAULT_TARGETS,
  reportsDir: values.reports!,
  caseTimeoutMs: num('timeout', values.timeout, 10_000),
  only,
  onCase: only === undefined ? undefined : (c) => process.stdout.write(`${c.target} case ${c.caseNo} (seed ${c.seed}; ${c.ops.join(', ')}): ${c.cls} ${c.detail}\n`),
  onProgress: values.json || !process.stderr.isTTY ? undefined : (r) => process.stderr.write(`\r${r.cases} cases, ${r.failures.length} failing, ${r.seconds.toFixed(0)} s `),
});

if (values.json) process.stdout.write(JSON.stringify(report, null, 2) + '\n');
else {
  if (process.stderr.isTTY) process.stderr.write('\n');
  process.stdout.write(`seed ${report.seed}: ${report.cases} cases in ${report.seconds.toFixed(1)} s\n${textTable(report)}\n`);
  if (report.failures.length) process.stdout.write(`\n${failureText(report)}\n`);
}
if (values.markdown) {
  const commit = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).stdout.trim() || 'unknown';
  await writeFile(values.markdown, markdownSection(report, { node: process.version, commit, nice: os.getPriority() }));
}
process.exit(report.failures.some((f) => FAILING.has(f.cls)) ? 1 : 0);
