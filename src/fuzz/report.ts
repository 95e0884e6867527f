/** A fuzz run as text: the per-target table for the terminal and the section of docs/benchmarks.md. */
import { CLASSES, type CaseClass } from './target.ts';
import type { FuzzReport } from './runner.ts';

const LABEL: Record<CaseClass, string> = {
  typed: '(a) typed error',
  exact: '(b) exact bytes',
  undetectable: '(c) undetectable change',
  undetected: '(d) undetected change',
  crash: '(e) crash',
  hang: '(f) hang',
};

function rows(r: FuzzReport): string[][] {
  const sum = (c: Record<CaseClass, number>) => CLASSES.reduce((s, k) => s + c[k], 0);
  const body = Object.entries(r.counts).map(([t, c]) => [t, ...CLASSES.map((k) => String(c[k])), String(sum(c))]);
  const all = Object.fromEntries(CLASSES.map((k) => [k, Object.values(r.counts).reduce((s, c) => s + c[k], 0)])) as Record<CaseClass, number>;
  return [...body, ['all', ...CLASSES.map((k) => String(all[k])), String(sum(all))]];
}

export function textTable(r: FuzzReport): string {
  const head = ['target', ...CLASSES, 'total'];
  const table = [head, ...rows(r)];
  const w = head.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  return table.map((row) => row.map((x, i) => (i ? x.padStart(w[i]!) : x.padEnd(w[i]!))).join('  ')).join('\n');
}

export function failureText(r: FuzzReport): string {
  return r.failures.map((f) => `${f.cls.toUpperCase()} ${f.target} case ${f.caseNo} (seed ${f.seed}; ${f.ops.join(', ')})\n  ${f.detail}\n  input: ${f.file}\n  again: ${f.reproduce}`).join('\n\n');
}

/** The docs/benchmarks.md section; `notes` (one paragraph each) follow the table. */
export function markdownSection(r: FuzzReport, env: { node: string; commit: string; nice: number }, notes: readonly string[] = []): string {
  const num = (s: string) => (/^\d+$/.test(s) ? Number(s).toLocaleString('en-US') : s);
  const lines = [
    '## Fuzzing (npm run fuzz)',
    '',
    `_Run ${r.started.slice(0, 16).replace('T', ' ')} UTC at commit ${env.commit}, Node ${env.node}: seed ${r.seed}, ${r.cases.toLocaleString('en-US')} inputs in ${Math.round(r.seconds)} s on one core${env.nice > 0 ? ` (nice ${env.nice})` : ''}, each case in a watched worker thread._`,
    '',
    'Every input is a mutation of a valid seed (the reference fixtures and files written by the project’s own writers: bit flips, byte sets, truncation, extension, splices, edge integers at header and index fields; structural edits for JSON; checksums recomputed for some), opened and read back the way the product does. (c) is expected where the format has no checksum (plain LSMT data and index, writable layers, JSON); (d), (e) and (f) fail the run.',
    '',
    `| target | ${CLASSES.map((k) => LABEL[k]).join(' | ')} | total |`,
    `|---|${CLASSES.map(() => '---:').join('|')}|---:|`,
    ...rows(r).map((row) => `| ${row.map((x, i) => (i === 0 && x === 'all' ? '**all**' : num(x))).join(' | ')} |`),
    '',
    r.failures.length ? `Failing cases (${r.failures.length}):` : 'No case changed guarded bytes, crashed or hung.',
    ...r.failures.slice(0, 30).map((f) => `- ${f.cls} ${f.target} #${f.caseNo} (${f.seed}): ${f.detail.replace(/\|/g, '\\|').slice(0, 240)} — \`${f.reproduce}\``),
    '',
    ...notes.flatMap((n) => [n, '']),
  ];
  return lines.join('\n');
}
