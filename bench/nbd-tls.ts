/**
 * NBD over TLS (issue 16), side by side in one run: our server, qemu-nbd (--aio=io_uring) and
 * nbdkit `file`, each in the clear and with TLS 1.3 pre-shared keys (one psktool file for all),
 * serving the same random data on tmpfs over a unix socket. The GnuTLS peers let the client's
 * order pick the cipher, and libnbd's GnuTLS picks CHACHA20-POLY1305, which GnuTLS runs ~16×
 * slower than AES-GCM on this CPU; so each peer also runs with CHACHA20 disabled in its process
 * (GNUTLS_SYSTEM_PRIORITY_FILE), giving AES-128-GCM like ours: the fair comparison. One client for all: bench/nbd-load.c
 * (libnbd, built here with cc), since fio's nbd engine cannot do TLS. Jobs: 4 KiB random reads
 * at depth 1 and 16, 1 MiB sequential reads at depth 8. Our server serves the data as a
 * 1-layer LSMT stack (the `obd serve` path). Rounds rotate the server order; figures are
 * medians; ratios compare within the run. Server and client are pinned to the same CPU, as in
 * bench/nbd.ts.
 *
 * Run: node bench/nbd-tls.ts [--quick] [--rounds N] [--runtime S] [--cpu-server N] [--cpu-client N]
 *      (needs gcc and libnbd-dev for the client, gnutls-bin for psktool)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, open, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { openImage } from '../src/image/open.ts';
import { importRaw } from '../src/lsmt/import.ts';
import { NbdServer, loadPskFile } from '../src/nbd/index.ts';
import { median, sh, table, writeResults } from './util.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);

// Server mode: node bench/nbd-tls.ts --serve SOCKET PSKFILE|- LAYER
if (argv[0] === '--serve') {
  const [, socket, psk, layer] = argv;
  const dev = await openImage([layer!]);
  const tls = psk && psk !== '-' ? { mode: 'require' as const, credentials: await loadPskFile(psk) } : undefined;
  const server = new NbdServer({ exports: { '': { device: dev, readOnly: true } }, tls });
  await server.listen({ socket: socket! });
  process.stdout.write('ready\n');
  process.on('SIGTERM', () => void server.close().then(() => dev.close()).then(() => process.exit(0)));
} else {
  await main();
}

async function main(): Promise<void> {
  const flag = (name: string) => argv.includes(name);
  const num = (name: string, dflt: number) => {
    const i = argv.indexOf(name);
    return i >= 0 ? Number(argv[i + 1]) : dflt;
  };
  const quick = flag('--quick');
  const ROUNDS = num('--rounds', quick ? 2 : 5);
  const RUNTIME = num('--runtime', quick ? 2 : 4);
  const CPU_SERVER = num('--cpu-server', 0);
  const CPU_CLIENT = num('--cpu-client', 0);
  const SIZE = (quick ? 128 : 512) << 20;
  const WORK = `/dev/shm/obd-nbd-tls-bench-${process.pid}`;
  const procs = new Set<ChildProcess>();

  interface Job {
    key: string;
    label: string;
    args: string[];
    unit: 'iops' | 'MB/s';
  }
  const JOBS: Job[] = [
    { key: 'r1', label: '4K rand read qd1 (IOPS)', args: ['rand', '4096', '1'], unit: 'iops' },
    { key: 'r16', label: '4K rand read qd16 (IOPS)', args: ['rand', '4096', '16'], unit: 'iops' },
    { key: 'seq', label: 'seq 1M read qd8 (MB/s)', args: ['seq', String(1 << 20), '8'], unit: 'MB/s' },
  ];

  interface Server {
    name: string;
    tls: boolean;
    socket: string;
    uri: string;
    child?: ChildProcess;
  }

  const connectable = (socket: string) =>
    new Promise<boolean>((resolve) => {
      const c = net.connect(socket);
      c.once('connect', () => {
        c.destroy();
        resolve(true);
      });
      c.once('error', () => resolve(false));
    });

  const start = async (name: string, tls: boolean, cmd: string, args: string[], socket: string, psk: string, env: NodeJS.ProcessEnv = {}): Promise<Server> => {
    const child = spawn('taskset', ['-c', String(CPU_SERVER), cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    procs.add(child);
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    child.stdout!.resume();
    for (let i = 0; ; i++) {
      if (child.exitCode !== null) throw new Error(`${name} exited ${child.exitCode}: ${err}`);
      if (existsSync(socket) && (await connectable(socket))) break;
      if (i > 600) throw new Error(`${name} did not start: ${err}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const uri = tls ? `nbds+unix://alice@/?socket=${socket}&tls-psk-file=${psk}` : `nbd+unix:///?socket=${socket}`;
    return { name, tls, socket, uri, child };
  };

  const stop = async (s: Server) => {
    const c = s.child;
    if (!c || c.exitCode !== null) return;
    const done = new Promise((r) => c.once('exit', r));
    c.kill('SIGTERM');
    await Promise.race([done, new Promise((r) => setTimeout(r, 5000))]);
    if (c.exitCode === null) c.kill('SIGKILL');
    procs.delete(c);
  };

  const cleanup = async () => {
    for (const c of procs) if (c.exitCode === null) c.kill('SIGKILL');
    await rm(WORK, { recursive: true, force: true });
  };
  process.on('SIGINT', () => void cleanup().then(() => process.exit(130)));

  await mkdir(WORK, { recursive: true });
  const servers: Server[] = [];
  try {
    const load = path.join(WORK, 'nbd-load');
    await sh('cc', ['-O2', '-o', load, path.join(HERE, 'nbd-load.c'), '-lnbd']).catch((e: Error) => {
      throw new Error(`building the libnbd client failed (apt-get install gcc libnbd-dev): ${e.message}`);
    });
    const raw = path.join(WORK, 'disk.raw');
    const fh = await open(raw, 'w');
    const chunk = Buffer.allocUnsafe(8 << 20);
    for (let at = 0; at < SIZE; at += chunk.length) {
      randomFillSync(chunk);
      await fh.write(chunk, 0, chunk.length, at);
    }
    await fh.close();
    const layer = path.join(WORK, 'disk.lsmt');
    await importRaw(raw, layer);
    const pskDir = path.join(WORK, 'psk');
    await mkdir(pskDir);
    const psk = path.join(pskDir, 'keys.psk');
    await sh('psktool', ['-u', 'alice', '-p', psk]);

    const sock = (n: string) => path.join(WORK, `${n}.sock`);
    const ours = (tls: boolean) => {
      const n = tls ? 'obd-tls' : 'obd';
      return start(n, tls, process.execPath, [fileURLToPath(import.meta.url), '--serve', sock(n), tls ? psk : '-', layer], sock(n), psk);
    };
    const noChacha = path.join(WORK, 'gnutls-no-chacha.conf');
    await writeFile(noChacha, '[overrides]\ntls-disabled-cipher = CHACHA20-POLY1305\n');
    const aes = { GNUTLS_SYSTEM_PRIORITY_FILE: noChacha };
    const qemu = (tls: boolean, suffix = '', env?: NodeJS.ProcessEnv) => {
      const n = (tls ? 'qemu-nbd-tls' : 'qemu-nbd') + suffix;
      const t = tls ? ['--object', `tls-creds-psk,id=tls0,endpoint=server,dir=${pskDir}`, '--tls-creds', 'tls0'] : [];
      return start(n, tls, 'qemu-nbd', [...t, '-r', '-f', 'raw', '--aio=io_uring', '--cache=none', '-t', '-k', sock(n), raw], sock(n), psk, env);
    };
    const kit = (tls: boolean, suffix = '', env?: NodeJS.ProcessEnv) => {
      const n = (tls ? 'nbdkit-tls' : 'nbdkit') + suffix;
      const t = tls ? ['--tls=require', `--tls-psk=${psk}`] : [];
      return start(n, tls, 'nbdkit', ['-f', ...t, '-U', sock(n), 'file', raw], sock(n), psk, env);
    };
    for (const tls of [false, true]) servers.push(await ours(tls), await qemu(tls), await kit(tls));
    servers.push(await qemu(true, '-aes', aes), await kit(true, '-aes', aes));

    // Server CPU time (user + system, all threads) from /proc: robust to other load on the
    // machine where wall-clock rates are not.
    const tick = 100;
    const cpuSeconds = async (s: Server) => {
      const f = (await readFile(`/proc/${s.child!.pid}/stat`, 'utf8')).split(') ')[1]!.split(' ');
      return (Number(f[11]) + Number(f[12])) / tick;
    };
    const cpu = new Map<string, number[]>();
    const run = async (s: Server, job: Job): Promise<number> => {
      const c0 = await cpuSeconds(s);
      const out = await sh('taskset', ['-c', String(CPU_CLIENT), load, s.uri, ...job.args, String(RUNTIME)]);
      const c1 = await cpuSeconds(s);
      const [iops, mbs, count] = out.trim().split(' ').map(Number);
      const key = `${s.name}|${job.key}`;
      cpu.set(key, [...(cpu.get(key) ?? []), ((c1 - c0) / count!) * 1e6]);
      return job.unit === 'iops' ? iops! : mbs!;
    };
    // A connection through every server first, so TLS and page-cache warm-up stay out of the figures.
    for (const s of servers) await run(s, { ...JOBS[2]!, args: ['seq', String(1 << 20), '8'] });

    const samples = new Map<string, number[]>();
    for (let round = 0; round < ROUNDS; round++) {
      for (const job of JOBS) {
        for (let k = 0; k < servers.length; k++) {
          const s = servers[(k + round) % servers.length]!;
          const v = await run(s, job);
          const key = `${s.name}|${job.key}`;
          samples.set(key, [...(samples.get(key) ?? []), v]);
          process.stderr.write(`round ${round + 1}/${ROUNDS} ${s.name.padEnd(13)} ${job.key.padEnd(4)} ${v.toFixed(0)}\n`);
        }
      }
    }
    const med = (name: string, job: string) => median(samples.get(`${name}|${job}`) ?? [NaN]);
    const cpuMed = (name: string, job: string) => median(cpu.get(`${name}|${job}`) ?? [NaN]);
    const fmt = (v: number) => (v >= 1000 ? v.toFixed(0) : v.toFixed(1));
    // Ratios pair the samples of one round (taken minutes apart at most), then take the median.
    const paired = (num: string, job: string, over: (round: number) => number) =>
      median((samples.get(`${num}|${job}`) ?? []).map((v, r) => v / over(r)));
    const at = (name: string, job: string, r: number) => samples.get(`${name}|${job}`)![r]!;
    const NAMES: [string, string][] = [
      ['obd', 'obd'],
      ['obd-tls', 'obd TLS (AES-128-GCM)'],
      ['qemu-nbd', 'qemu-nbd'],
      ['qemu-nbd-tls', 'qemu-nbd TLS (CHACHA20, its default here)'],
      ['qemu-nbd-tls-aes', 'qemu-nbd TLS (AES-128-GCM)'],
      ['nbdkit', 'nbdkit'],
      ['nbdkit-tls', 'nbdkit TLS (CHACHA20, its default here)'],
      ['nbdkit-tls-aes', 'nbdkit TLS (AES-128-GCM)'],
    ];
    const rates = NAMES.map(([n, label]) => [label, ...JOBS.map((j) => fmt(med(n, j.key))), ...JOBS.map((j) => cpuMed(n, j.key).toFixed(1))]);
    const best = (names: string[]) => (job: string) => (r: number) => Math.max(...names.map((n) => at(n, job, r)));
    const ratioRows: [string, string, (job: string) => (r: number) => number][] = [
      ['obd TLS ÷ obd in the clear', 'obd-tls', best(['obd'])],
      ['obd TLS ÷ best peer TLS, AES-128-GCM (goal ≥ 1.0×)', 'obd-tls', best(['qemu-nbd-tls-aes', 'nbdkit-tls-aes'])],
      ['obd TLS ÷ best peer TLS, any cipher', 'obd-tls', best(['qemu-nbd-tls', 'nbdkit-tls', 'qemu-nbd-tls-aes', 'nbdkit-tls-aes'])],
      ['qemu-nbd TLS (AES) ÷ qemu-nbd in the clear', 'qemu-nbd-tls-aes', best(['qemu-nbd'])],
      ['nbdkit TLS (AES) ÷ nbdkit in the clear', 'nbdkit-tls-aes', best(['nbdkit'])],
    ];
    const ratios = ratioRows.map(([label, num, over]) => [label, ...JOBS.map((j) => `${paired(num, j.key, over(j.key)).toFixed(2)}×`)]);
    const md = `## NBD over TLS (bench/nbd-tls.ts)

${ROUNDS} rounds × ${RUNTIME} s per job and server, ${SIZE >> 20} MiB of random data on tmpfs, unix sockets, server and
client on CPU ${CPU_SERVER}/${CPU_CLIENT}. TLS 1.3 with one psktool pre-shared key for every server. One client for all:
bench/nbd-load.c (libnbd 1.14 + GnuTLS 3.7.9; fio's nbd engine cannot do TLS). Our server prefers
AES-128-GCM; qemu-nbd and nbdkit follow the client's order, which picks CHACHA20-POLY1305 — GnuTLS
runs it at ~0.3 GB/s here against ~4.9 GB/s for AES-128-GCM (\`gnutls-cli --benchmark-ciphers\`) —
so each also runs with CHACHA20 disabled in its process (GNUTLS_SYSTEM_PRIORITY_FILE), which gives
AES-128-GCM like ours. Rates are medians; server CPU is user + system time per request from /proc
(all threads), which other load on the machine shifts less than the rates.

${table(['server', ...JOBS.map((j) => j.label), ...JOBS.map((j) => `CPU µs/req ${j.key}`)], rates)}

Ratios (each the median of per-round ratios):

${table(['ratio', ...JOBS.map((j) => j.label.replace(/ \(.*\)/, ''))], ratios)}
`;
    await writeResults('nbd-tls', md);
  } finally {
    for (const s of servers) await stop(s);
    await cleanup();
  }
}
