/** `obd serve` as a process: ready line, several exports, TCP, clean shutdown on signals. */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { FIXTURES } from '../helpers/recipes.ts';
import { RawClient } from './helpers/client.ts';
import { missing, must, run, sha256File } from './helpers/run.ts';
import { suiteTempDir } from '../helpers/temp.ts';

const MAIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'main.ts');
const L = (n: number) => path.join(FIXTURES, 'lsmt', `layer${n}.lsmt`);
const SHA_123 = '2e934e7aadac27b164b562713673cdd0fd295e063f4edc6cf6fde77a54dcc967';
const SHA_1 = '8c0be290a5b735109709f426020ee869fb566f41ca7c22014042161b4136ff41';

interface Served {
  child: ChildProcess;
  ready: { event: string; socket?: string; host?: string; port?: number; exports: { name: string; uri: string; readOnly: boolean; layers: number; size: number }[] };
  lines: string[];
  stderr: () => string;
  exit: Promise<number | null>;
}

/** Starts `obd serve … --json` and waits for its ready line. */
async function serve(args: string[]): Promise<Served> {
  const child = spawn(process.execPath, [MAIN, 'serve', ...args, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const lines: string[] = [];
  const rl = createInterface({ input: child.stdout! });
  const first = await new Promise<string>((resolve, reject) => {
    rl.on('line', (l) => {
      lines.push(l);
      if (lines.length === 1) resolve(l);
    });
    void exit.then((code) => reject(new Error(`obd serve exited ${code}: ${err}`)));
  });
  return { child, ready: JSON.parse(first), lines, stderr: () => err, exit };
}

const absent = missing('nbdinfo', 'nbdcopy', 'qemu-img');

describe('obd serve', { timeout: 120_000, skip: absent.length ? `peer tools missing: ${absent.join(', ')}` : false }, () => {
  const tmp = suiteTempDir('obd-serve-');

  it('serves a stack plus a named export, then stops cleanly on SIGTERM', async () => {
    const socket = path.join(tmp.path, 'a.sock');
    const s = await serve([L(1), L(2), L(3), '--socket', socket, '--export', 'L1=' + L(1)]);
    try {
      assert.equal(s.ready.event, 'ready');
      assert.equal(s.ready.socket, socket);
      assert.deepEqual(
        s.ready.exports.map((e) => [e.name, e.layers, e.readOnly, e.size]),
        [['', 3, true, 64 << 20], ['L1', 1, true, 64 << 20]],
      );
      assert.equal(s.ready.exports[1]!.uri, `nbd+unix:///L1?socket=${socket}`);
      for (let i = 0; i < 100 && !/serving 2 exports/.test(s.stderr()); i++) await new Promise((r) => setTimeout(r, 20));
      assert.match(s.stderr(), /serving 2 exports/);
      for (const [e, sha] of [[s.ready.exports[0]!, SHA_123], [s.ready.exports[1]!, SHA_1]] as const) {
        const out = path.join(tmp.path, `copy-${e.name || 'default'}.raw`);
        await must('nbdcopy', [e.uri, out]);
        assert.equal(await sha256File(out), sha);
      }
      const list = JSON.parse(await must('nbdinfo', ['--list', '--json', `nbd+unix://?socket=${socket}`]));
      assert.equal(list.exports.length, 2);
    } finally {
      s.child.kill('SIGTERM');
    }
    assert.equal(await s.exit, 0);
    assert.equal(s.lines.at(-1), '{"event":"stopped"}');
    assert.equal(existsSync(socket), false, 'socket removed');
  });

  it('listens on TCP and stops on SIGINT with a client connected', async () => {
    const s = await serve([L(1), '--listen', '127.0.0.1:0']);
    try {
      assert.equal(s.ready.host, '127.0.0.1');
      assert.ok(s.ready.port! > 0);
      const info = JSON.parse(await must('qemu-img', ['info', '--output=json', `nbd://127.0.0.1:${s.ready.port}/`]));
      assert.equal(info['virtual-size'], 64 << 20);
      // A client holding a connection open does not keep the server from stopping.
      const idle = await RawClient.connect({ host: '127.0.0.1', port: s.ready.port! });
      await idle.handshake();
      assert.equal((await idle.read(0, 4096)).error, 0);
      s.child.kill('SIGINT');
      assert.equal(await s.exit, 0);
      assert.ok(await idle.closedByServer());
    } finally {
      if (s.child.exitCode === null) s.child.kill('SIGKILL');
    }
  });

  it('serves a writable upper layer; what was written is there when reopened read-only', async () => {
    const data = path.join(tmp.path, 'rw.data');
    const index = path.join(tmp.path, 'rw.index');
    const socket = path.join(tmp.path, 'rw.sock');
    const w = await serve([L(1), L(2), L(3), '--writable', '--upper', data, index, '--socket', socket]);
    try {
      const e = w.ready.exports[0]!;
      assert.deepEqual([e.readOnly, e.layers], [false, 4]);
      const io = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 1M 64k', '-c', 'write -z 2M 64k', '-c', 'flush', e.uri]);
      assert.equal(io.code, 0, io.stderr);
    } finally {
      w.child.kill('SIGTERM');
    }
    assert.equal(await w.exit, 0);
    const r = await serve([L(1), L(2), L(3), '--upper', data, index, '--socket', socket]);
    try {
      const e = r.ready.exports[0]!;
      assert.deepEqual([e.readOnly, e.layers], [true, 4]);
      const io = await run('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0x5a 1M 64k', '-c', 'read -P 0 2M 64k', e.uri]);
      assert.equal(io.code, 0, io.stdout + io.stderr);
      assert.doesNotMatch(io.stdout, /verification failed/);
      const map = JSON.parse(await must('nbdinfo', ['--map=qemu:allocation-depth', '--json', e.uri])) as { offset: number; length: number; type: number }[];
      const at = (off: number) => map.find((m) => m.offset <= off && off < m.offset + m.length)!.type;
      assert.equal(at(1 << 20), 1, 'written data is in the top (upper) layer');
      assert.equal(at(2 << 20), 1, 'zeroed range is allocated in the upper layer too');
    } finally {
      r.child.kill('SIGTERM');
    }
    assert.equal(await r.exit, 0);
  });

  it('rejects bad arguments with one clear line', async () => {
    const cases: [string[], RegExp][] = [
      [[], /nothing to serve/],
      [[L(1), '--socket', 'x', '--listen', '127.0.0.1:1'], /not both/],
      [[L(1), '--listen', 'nowhere'], /HOST:PORT/],
      [[L(1), '--upper', 'only-one'], /DATA INDEX/],
      [[L(1), '--writable', '--socket', path.join(tmp.path, 'w.sock')], /--upper DATA INDEX is missing/],
      [[L(1), '--export', 'a', '--export', 'b'], /one name/],
      [[path.join(tmp.path, 'missing.lsmt'), '--socket', path.join(tmp.path, 'm.sock')], /missing\.lsmt/],
    ];
    for (const [args, re] of cases) {
      const r = await run(process.execPath, [MAIN, 'serve', ...args]);
      assert.notEqual(r.code, 0, args.join(' '));
      assert.match(r.stderr, re, args.join(' '));
    }
  });
});
