/**
 * Runs the benchmarks one after another (never two at once: they pin CPUs and compare
 * side by side), then assembles docs/benchmarks.md from bench/results/*.md.
 *
 *   npm run bench                 # all of them
 *   npm run bench -- lsmt zfile   # some of them; extra flags (e.g. --quick) are passed on
 *   npm run bench -- --assemble   # only rebuild docs/benchmarks.md
 */
import { spawnSync } from 'node:child_process';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const ORDER = ['reference', 'lsmt', 'snapshots', 'compact', 'zfile', 'nbd', 'nbd-tls', 'remote', 'proxy', 'cold-open', 'memory', 'qcow2', 'verity', 'live', 'shared-layers', 'tar', 'convert'];
const args = process.argv.slice(2);
const names = args.filter((a) => !a.startsWith('-'));
const flags = args.filter((a) => a.startsWith('-') && a !== '--assemble');

if (!args.includes('--assemble')) {
  for (const name of names.length ? names : ORDER) {
    if (!ORDER.includes(name)) throw new Error(`unknown benchmark "${name}" (have: ${ORDER.join(', ')})`);
    process.stderr.write(`\n=== bench/${name}.ts ${flags.join(' ')}\n`);
    const r = spawnSync(process.execPath, [path.join(here, `${name}.ts`), ...flags], { stdio: 'inherit' });
    if (r.status !== 0) process.exitCode = 1;
  }
}

const files = (await readdir(path.join(here, 'results'))).filter((f) => f.endsWith('.md'));
// fuzz.md is not a benchmark: `npm run fuzz -- --markdown bench/results/fuzz.md` records a long run.
const sections = [...ORDER, 'fuzz'].filter((n) => files.includes(`${n}.md`)).map((n) => readFile(path.join(here, 'results', `${n}.md`), 'utf8'));
const intro = `# Benchmarks

Written by \`npm run bench\` (bench/run.ts) from the per-area results in bench/results/. Every
figure is measured side by side with its peer in the same run on the project's machine kind
(2 vCPU, data on tmpfs or locked in RAM — see the notes in each section); compare the ratios,
not absolute numbers across sections or runs.
`;
await writeFile(path.join(here, '..', 'docs', 'benchmarks.md'), [intro, ...(await Promise.all(sections))].join('\n\n').replace(/\n{3,}/g, '\n\n'));
process.stderr.write('docs/benchmarks.md written\n');
