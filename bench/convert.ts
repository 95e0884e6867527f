/**
 * Container conversion (issue 18): `obd convert oci:IN oci:OUT` side by side with the
 * reference's userspace path as the ACI convertor drives it, per layer bottom first:
 * `overlaybd-create -s data index 64 [--mkfs]` (mkfs only for the first layer),
 * `overlaybd-apply layer.tar.gz config.json` (lowers = the layers converted so far, upper =
 * this layer's writable files), `overlaybd-commit -z -t --uuid U [--parent-uuid P]` with uuids
 * from the chainIDs. Same run, same input (bench/convert-image.ts: ≥ 500 MiB, 12 layers), all
 * on tmpfs; contenders alternate round by round. Reports total time and per-stage breakdown,
 * per-layer blob sizes, LSMT data vs tar size, reconversion with a cache (all but the top 2
 * layers converted before), and mke2fs -d of the final tree (umoci-unpacked) as the e2fsprogs
 * data point. Both results are checked with e2fsck -fn on an export of their stack.
 * Without the reference tools or without `obd convert`, those rows say "not measured".
 *
 *   node bench/convert.ts [--runs N] [--quick] [--scale F]   (writes bench/results/convert.md)
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { cp, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describeLayer } from '../src/image/info.ts';
import { openLayerFile } from '../src/image/open.ts';
import { ensureImage, type LayerMeta } from './convert-image.ts';
import { median, referenceServiceConfig, run, table, writeResults, type Timing } from './util.ts';

const args = process.argv.slice(2);
const argNum = (name: string, dflt: number) => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : dflt);
const RUNS = args.includes('--quick') ? 1 : argNum('--runs', 2);
const SCALE = argNum('--scale', 1);
const REF = process.env.OBD_REF_BIN ?? '/opt/obdref/bin';
const haveRef = ['overlaybd-create', 'overlaybd-apply', 'overlaybd-commit', 'obdref'].every((t) => existsSync(path.join(REF, t)));
const HERE = path.dirname(fileURLToPath(import.meta.url));
const OBD = path.join(HERE, '..', 'src', 'cli', 'obd.js');
// An unknown command prints the program's help, so look for the command's own usage line.
const haveOurs = spawnSync(process.execPath, [OBD, 'convert', '--help'], { encoding: 'utf8' }).stdout.includes('Usage: obd convert');
const WORK = `/dev/shm/obd-bench-convert-${process.pid}`;
const w = (...p: string[]) => path.join(WORK, ...p);
const MiB = 2 ** 20;
const NO_REF = 'reference tools not present: not measured';
const NO_OURS = '`obd convert` not present: not measured';
const log = (s: string) => process.stderr.write(`${s}\n`);

// ---------------------------------------------------------------- the reference's path

/** The ACI convertor's layer uuid: the chainID's first 32 hex digits as 8-4-4-4-12. */
function chainUuids(diffIds: string[]): string[] {
  let chain = '';
  return diffIds.map((d) => {
    chain = chain ? `sha256:${createHash('sha256').update(`${chain} ${d}`).digest('hex')}` : d;
    const h = chain.slice(7);
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
  });
}

interface RefLayer {
  create: Timing;
  apply: Timing;
  commit: Timing;
  blob: string;
}

/**
 * Converts `layers` with the reference tools into `dir`; layers below `from` are taken as
 * already converted there (the ACI convertor skips a layer whose commit file exists).
 */
async function refConvert(layers: LayerMeta[], dir: string, svc: string, from = 0): Promise<RefLayer[]> {
  const uuids = chainUuids(layers.map((l) => l.diffId));
  const out: RefLayer[] = [];
  const lowers: { file: string }[] = [];
  for (let i = 0; i < layers.length; i++) {
    const ld = path.join(dir, `${String(i).padStart(4, '0')}_${layers[i]!.digest}`);
    const blob = path.join(ld, 'overlaybd.commit');
    if (i < from) {
      lowers.push({ file: blob });
      continue;
    }
    await rm(ld, { recursive: true, force: true });
    await mkdir(ld, { recursive: true });
    const data = path.join(ld, 'writable_data');
    const index = path.join(ld, 'writable_index');
    const create = run(path.join(REF, 'overlaybd-create'), [data, index, '64', '-s', ...(i === 0 ? ['--mkfs'] : [])]);
    const config = path.join(ld, 'config.json');
    await writeFile(config, JSON.stringify({ lowers, upper: { index, data }, resultFile: path.join(ld, 'result') }));
    const apply = run(path.join(REF, 'overlaybd-apply'), [path.join(WORK, 'in', 'blobs', 'sha256', layers[i]!.digest.slice(7)), config, '--service_config_path', svc]);
    const commit = run(path.join(REF, 'overlaybd-commit'), [data, index, blob, '-z', '-t', '--uuid', uuids[i]!, ...(i ? ['--parent-uuid', uuids[i - 1]!] : [])]);
    await rm(data);
    out.push({ create, apply, commit, blob });
    lowers.push({ file: blob });
  }
  return out;
}

// ---------------------------------------------------------------- ours

interface OursRun extends Timing {
  json: Record<string, unknown> | undefined;
}

function oursConvert(tag: string, out: string, j: number, cacheDir?: string): OursRun {
  spawnSync('rm', ['-rf', out]);
  const t = run(process.execPath, [OBD, 'convert', `oci:${w('in')}:${tag}`, `oci:${out}`, '-j', String(j), '--json', ...(cacheDir ? ['--cache-dir', cacheDir] : [])], true);
  // --json prints one document (maybe pretty-printed); progress lines, if any, come before it.
  const text = t.stdout.trim();
  let json: Record<string, unknown> | undefined;
  for (const candidate of [text, text.slice(text.lastIndexOf('\n{') + 1)]) {
    try {
      json = JSON.parse(candidate) as Record<string, unknown>;
      break;
    } catch {
      json = undefined;
    }
  }
  return { ...t, json };
}

/** The layer blobs of the (only) image in an OCI layout, bottom first. */
async function layoutLayers(dir: string): Promise<{ manifest: string; blobs: string[]; sizes: number[] }> {
  const index = JSON.parse(await readFile(path.join(dir, 'index.json'), 'utf8'));
  const md = index.manifests[0].digest as string;
  const m = JSON.parse(await readFile(path.join(dir, 'blobs', 'sha256', md.slice(7)), 'utf8'));
  const layers = m.layers as { digest: string; size: number }[];
  return { manifest: md, blobs: layers.map((l) => path.join(dir, 'blobs', 'sha256', l.digest.slice(7))), sizes: layers.map((l) => l.size) };
}

// ---------------------------------------------------------------- checks

async function dataBytes(blob: string): Promise<number> {
  const l = await openLayerFile(blob);
  try {
    return describeLayer(l, blob).dataBytes;
  } finally {
    await l.source.close();
  }
}

/** e2fsck -fn of a raw export: "clean, N files" or the failure. */
function fsck(raw: string): string {
  const r = spawnSync('e2fsck', ['-fn', raw], { encoding: 'utf8' });
  const files = /: (\d+)\/\d+ files/.exec(r.stdout)?.[1];
  spawnSync('rm', ['-f', raw]);
  return r.status === 0 ? `clean, ${files} inodes used` : `e2fsck exit ${r.status}: ${(r.stdout + r.stderr).split('\n').slice(-6).join(' / ')}`;
}

// ---------------------------------------------------------------- report helpers

const sec = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const mib = (b: number) => `${(b / MiB).toFixed(1)}`;
const x = (v: number) => `${v.toFixed(2)}×`;
const pct = (v: number) => `${(v * 100).toFixed(1)} %`;
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
const loadAvg = () => os.loadavg().map((v) => v.toFixed(2)).join(' ');

async function main(): Promise<void> {
  const load0 = loadAvg();
  const t0 = performance.now();
  const image = await ensureImage({ scale: SCALE, log });
  log(`image ${image.dir} (${sec(performance.now() - t0)} to build or find)`);
  await rm(WORK, { recursive: true, force: true });
  await mkdir(WORK, { recursive: true });
  await cp(image.dir, w('in'), { recursive: true });
  const full = image.images.full;
  const rebuild = image.images.rebuild;
  const svc = await referenceServiceConfig(WORK);
  const tarTotal = sum(full.map((l) => l.tarSize));
  const gzTotal = sum(full.map((l) => l.size));

  // Rounds alternate the contenders: ours -j1, ours -j2, the reference.
  const o1: OursRun[] = [];
  const o2: OursRun[] = [];
  const refs: RefLayer[][] = [];
  const manifests = new Set<string>();
  for (let r = 0; r < RUNS; r++) {
    if (haveOurs) {
      log(`round ${r + 1}: obd convert -j1`);
      o1.push(oursConvert('full', w('out1'), 1));
      manifests.add((await layoutLayers(w('out1'))).manifest);
      log(`round ${r + 1}: obd convert -j2`);
      o2.push(oursConvert('full', w('out2'), 2));
      manifests.add((await layoutLayers(w('out2'))).manifest);
    }
    if (haveRef) {
      log(`round ${r + 1}: reference`);
      refs.push(await refConvert(full, w('ref'), svc));
    }
  }

  const sections: string[] = [
    '## Container conversion (bench/convert.ts)',
    '',
    `Commit ${spawnSync('git', ['-C', HERE, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).stdout.trim()}. Input: bench/convert-image.ts, ${full.length} layers, tar ${mib(tarTotal)} MiB (gzip ${mib(gzTotal)} MiB), ${sum(full.map((l) => l.entries))} tar entries; key ${image.key}. ` +
      `All files on tmpfs; ${RUNS} round(s), contenders alternating (ours -j1, ours -j2, reference); medians. Load average before: ${load0}. ` +
      `Reference: /opt/obdref/bin (../shared/refbuild), per layer \`overlaybd-create -s … 64 [--mkfs]\`, \`overlaybd-apply\`, \`overlaybd-commit -z -t --uuid U [--parent-uuid P]\`; ` +
      'its total is the sum of those processes; ours is the whole `obd convert oci:IN oci:OUT` process, which also writes the OCI layout (blob hashes, config, manifest).',
    '',
  ];

  // Totals.
  const refTotal = (rs: RefLayer[]) => sum(rs.map((l) => l.create.wall + l.apply.wall + l.commit.wall));
  const refStage = (rs: RefLayer[], k: 'create' | 'apply' | 'commit', t: keyof Timing = 'wall') => sum(rs.map((l) => l[k][t]));
  const refMed = refs.length ? median(refs.map((rs) => refTotal(rs))) : NaN;
  const rows: string[][] = [];
  for (const [name, runs] of [
    ['`obd convert -j 1`', o1],
    ['`obd convert -j 2`', o2],
  ] as const) {
    if (!haveOurs) {
      rows.push([name, NO_OURS, '', '', '', '']);
      continue;
    }
    const wall = median(runs.map((t) => t.wall));
    rows.push([name, sec(wall), sec(median(runs.map((t) => t.cpu))), `${(tarTotal / MiB / (wall / 1000)).toFixed(1)} MiB/s`, haveRef ? x(refMed / wall) : NO_REF, stagesOf(runs)]);
  }
  if (haveRef) {
    const st = (k: 'create' | 'apply' | 'commit') => sec(median(refs.map((rs) => refStage(rs, k))));
    rows.push(['reference (create + apply + commit)', sec(refMed), sec(median(refs.map((rs) => refStage(rs, 'create', 'cpu') + refStage(rs, 'apply', 'cpu') + refStage(rs, 'commit', 'cpu')))), `${(tarTotal / MiB / (refMed / 1000)).toFixed(1)} MiB/s`, '1.00×', `create ${st('create')}, apply ${st('apply')}, commit ${st('commit')}`]);
  } else rows.push(['reference', NO_REF, '', '', '', '']);
  sections.push('### Conversion time (goal: ours ≥ 1.5× faster)', '', table(['converter', 'wall', 'CPU', 'tar MiB per s', 'speed-up (ref ÷ ours)', 'stages'], rows), '');
  if (haveOurs) sections.push(`Determinism: ${manifests.size === 1 ? `every run, -j 1 and -j 2, gave the same manifest (${[...manifests][0]!.slice(0, 19)}…)` : `**${manifests.size} different manifests** over the runs`}.`, '');

  // Per-layer sizes and LSMT data vs tar.
  const ours = haveOurs ? await layoutLayers(w('out1')) : undefined;
  const refLast = refs[refs.length - 1];
  const layerRows: string[][] = [];
  let oursNotLarger = 0;
  const overheads: number[] = [];
  for (let i = 0; i < full.length; i++) {
    const l = full[i]!;
    const oSize = ours?.sizes[i];
    const oData = ours ? await dataBytes(ours.blobs[i]!) : undefined;
    const rSize = refLast ? (await stat(refLast[i]!.blob)).size : undefined;
    const rData = refLast ? await dataBytes(refLast[i]!.blob) : undefined;
    if (oSize !== undefined && rSize !== undefined && oSize <= rSize) oursNotLarger++;
    const big = l.tarSize > 10 * MiB;
    if (oData !== undefined && big) overheads.push((oData - l.tarSize) / l.tarSize);
    layerRows.push([
      `${i} ${l.name}`,
      mib(l.tarSize),
      mib(l.contentBytes),
      mib(l.size),
      oSize !== undefined ? mib(oSize) : '—',
      rSize !== undefined ? mib(rSize) : '—',
      oSize !== undefined && rSize !== undefined ? x(oSize / rSize) : '',
      oData !== undefined ? mib(oData) : '—',
      rData !== undefined ? mib(rData) : '—',
      oData !== undefined ? `${pct((oData - l.tarSize) / l.tarSize)}${big ? '' : ' (≤ 10 MiB)'}` : '—',
      oData !== undefined ? pct((oData - l.contentBytes) / l.tarSize) : '—',
      rData !== undefined ? pct((rData - l.tarSize) / l.tarSize) : '—',
    ]);
  }
  sections.push(
    '### Layer blobs (goal: ours ≤ reference for every layer) and ext4 overhead (goal ≤ 5 % for layers over 10 MiB)',
    '',
    'Sizes in MiB. *blob* = the layer blob as pushed (tar-wrapped zfile, lz4, 4 KiB blocks, both sides). *LSMT data* = the bytes of data the committed LSMT layer stores (its data area, uncompressed: what the layer costs before compression). ' +
      '*overhead vs tar* = (LSMT data − uncompressed tar size) ÷ tar size, the issue\'s measure; *metadata share* = (LSMT data − file content bytes) ÷ tar size, what the filesystem adds over the files\' bytes (negative where all-zero blocks became holes).',
    '',
    table(['layer', 'tar', 'file content', 'gzip (input)', 'blob ours', 'blob ref', 'ours ÷ ref', 'LSMT data ours', 'LSMT data ref', 'overhead vs tar, ours', 'metadata share, ours', 'overhead vs tar, ref'], layerRows),
    '',
  );
  if (refLast) {
    const floor = Math.min(...(await Promise.all(refLast.map((l) => dataBytes(l.blob)))));
    sections.push(
      `The reference's smallest layer stores ${mib(floor)} MiB of LSMT data: on this 64 GiB filesystem every overlaybd-apply rewrites 128 KiB at the start of each of the 512 block groups (seen with \`obd map\` of a one-file layer), whatever the layer holds; it compresses well, so the blobs pay less than the LSMT data.`,
      '',
    );
  }
  if (ours && refLast) {
    const oTot = sum(ours.sizes);
    const rTot = sum(await Promise.all(refLast.map(async (l) => (await stat(l.blob)).size)));
    sections.push(`All layers: ours ${mib(oTot)} MiB, reference ${mib(rTot)} MiB (${x(oTot / rTot)}); ours ≤ reference in ${oursNotLarger} of ${full.length} layers; overhead vs tar over 10 MiB layers: max ${overheads.length ? pct(Math.max(...overheads)) : '—'}.`, '');
  }

  // Validity: e2fsck of each side's stack.
  const checks: string[][] = [];
  if (ours) {
    spawnSync(process.execPath, [OBD, 'export', ...ours.blobs, w('ours.raw')], { stdio: 'ignore' });
    checks.push(['ours (`obd export` of the 12 blobs)', fsck(w('ours.raw'))]);
  }
  if (refLast) {
    spawnSync(path.join(REF, 'obdref'), ['cat', w('ref.raw'), ...refLast.map((l) => l.blob)], { stdio: 'ignore' });
    checks.push(['reference (`obdref cat` of its 12 blobs)', fsck(w('ref.raw'))]);
  }

  // Reconversion: the base (all but the top 2 layers) converted before.
  const reRows: string[][] = [];
  if (haveOurs) {
    const cold: number[] = [];
    const warm: number[] = [];
    for (let r = 0; r < RUNS; r++) {
      const cache = w(`cache${r}`);
      log(`round ${r + 1}: reconversion (ours)`);
      oursConvert('full', w('outc'), 1, cache);
      warm.push(oursConvert('rebuild', w('outc'), 1, cache).wall);
      cold.push(oursConvert('rebuild', w('outc'), 1).wall);
      await rm(cache, { recursive: true, force: true });
    }
    reRows.push(['ours (`--cache-dir`)', sec(median(cold)), sec(median(warm)), x(median(warm) / median(cold))]);
  } else reRows.push(['ours', NO_OURS, '', '']);
  if (haveRef && refLast) {
    const cold: number[] = [];
    const warm: number[] = [];
    for (let r = 0; r < RUNS; r++) {
      log(`round ${r + 1}: reconversion (reference)`);
      warm.push(refTotal(await refConvert(rebuild, w('ref'), svc, rebuild.length - 2)));
      cold.push(refTotal(await refConvert(rebuild, w('ref-cold'), svc)));
    }
    reRows.push(['reference (ACI: layer directories kept, converted layers skipped)', sec(median(cold)), sec(median(warm)), x(median(warm) / median(cold))]);
  } else reRows.push(['reference', NO_REF, '', '']);
  sections.push(`### Reconversion: image \`rebuild\` (same ${rebuild.length - 2} lower layers, 2 new top layers) after \`full\` was converted`, '', table(['converter', 'full conversion', 'reconversion', 're ÷ full'], reRows), '');

  // The e2fsprogs route: the whole final tree at once.
  const e2: string[][] = [];
  if (spawnSync('which', ['umoci', 'mke2fs']).status === 0) {
    const unpack = run('umoci', ['unpack', '--image', `${w('in')}:full`, w('bundle')]);
    const img = w('mke2fs.img');
    const mk = run('mke2fs', ['-q', '-F', '-t', 'ext4', '-O', '^has_journal', '-b', '4096', '-I', '256', '-i', '16384', '-m', '0', '-d', w('bundle', 'rootfs'), img, '64G']);
    const used = Number(spawnSync('du', ['-B1', img], { encoding: 'utf8' }).stdout.split('\t')[0]);
    e2.push(['`umoci unpack` of the image (a directory, not a disk)', sec(unpack.wall), '—', ''], ['`mke2fs -t ext4 -d rootfs` (64 GiB, no journal)', sec(mk.wall), `${mib(used)} MiB allocated`, fsck(img)]);
    await rm(w('bundle'), { recursive: true, force: true });
  } else e2.push(['umoci / mke2fs', 'not installed: not measured', '', '']);
  sections.push(
    '### The e2fsprogs route, for the engine choice (one run)',
    '',
    'mke2fs -d builds one filesystem from a finished tree: it has no notion of a lower layer, so it cannot produce a per-layer delta (each layer would be a whole filesystem, or a block diff of two independently allocated images).',
    '',
    table(['step', 'wall', 'output', 'e2fsck -fn'], e2),
    '',
    '### Validity',
    '',
    table(['stack', 'e2fsck -fn'], checks.length ? checks : [['—', 'nothing converted']]),
    '',
    `Load average after: ${loadAvg()}; ${os.cpus().length} CPUs shared with other work (see docs/benchmarking.md §3).`,
  );
  await writeResults('convert', sections.join('\n'));
  await rm(WORK, { recursive: true, force: true });
}

/**
 * Per-stage times from `obd convert --json`: per layer `applyMs` / `commitMs` when it reports
 * them, else the sum of the layers' `ms` (apply + commit of each converted layer).
 */
function stagesOf(runs: OursRun[]): string {
  const layers = runs[runs.length - 1]?.json?.layers as { ms?: number; applyMs?: number; commitMs?: number }[] | undefined;
  if (!Array.isArray(layers)) return 'not reported by --json';
  const total = (k: 'ms' | 'applyMs' | 'commitMs') => sum(layers.map((l) => Number(l[k] ?? NaN)));
  if (!Number.isNaN(total('applyMs')) && !Number.isNaN(total('commitMs'))) return `apply ${sec(total('applyMs'))}, commit ${sec(total('commitMs'))}`;
  return Number.isNaN(total('ms')) ? 'not reported by --json' : `layers ${sec(total('ms'))} (apply + commit; --json does not split them)`;
}

await main();
