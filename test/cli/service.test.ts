/**
 * `obd serve` as a service: systemd socket activation (through systemd-socket-activate, the
 * way systemd passes a socket), --pid-file, --max-connections, --log-format json, and
 * SIGTERM with writes in flight (they finish and are durable; the exit is 0).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { MAIN, obd, serveJson } from '../helpers/cli.ts';
import { FIXTURES, R } from '../helpers/recipes.ts';
import { suiteTempDir } from '../helpers/temp.ts';
import { CMD, RawClient } from '../nbd/helpers/client.ts';
import { missing, run } from '../nbd/helpers/run.ts';
import { freePort } from '../remote/helpers/registry.ts';

const L = (n: number) => path.join(FIXTURES, 'lsmt', `layer${n}.lsmt`);
const ESHUTDOWN = 108;

/** Resolves with the file's size once it reaches `min` bytes (polling; 10 s at most). */
async function waitForSize(file: string, min: number): Promise<number> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const size = existsSync(file) ? statSync(file).size : 0;
    if (size >= min || Date.now() > deadline) return size;
    await new Promise((r) => setTimeout(r, 2));
  }
}

interface Activated {
  child: ChildProcess;
  /** The first JSON line on stdout (`ready`), once it is there. */
  ready: () => Promise<Record<string, unknown>>;
  stdout: () => string;
  stderr: () => string;
  exit: Promise<number | null>;
}

/** `systemd-socket-activate -l WHERE obd serve ARGS`: obd starts on the first connection. */
async function activate(where: string[], args: string[]): Promise<Activated> {
  const child = spawn('systemd-socket-activate', [...where.flatMap((w) => ['-l', w]), process.execPath, MAIN, 'serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  started.add(child);
  const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const deadline = Date.now() + 10_000;
  while ((err.match(/Listening on/g) ?? []).length < where.length) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`systemd-socket-activate did not listen: ${err}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  const ready = async () => {
    while (!out.includes('\n')) {
      if (child.exitCode !== null) throw new Error(`obd serve exited: ${err}`);
      await new Promise((r) => setTimeout(r, 10));
    }
    return JSON.parse(out.slice(0, out.indexOf('\n'))) as Record<string, unknown>;
  };
  return { child, ready, stdout: () => out, stderr: () => err, exit };
}

const noActivate = missing('systemd-socket-activate', 'nbdinfo');

/** Every server this file starts, killed at the end should a failed assertion leave one running. */
const started = new Set<ChildProcess>();
after(() => {
  for (const c of started) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});
const track = <T extends { child: ChildProcess }>(h: T): T => (started.add(h.child), h);

describe('obd serve as a service', () => {
  const tmp = suiteTempDir('obd-svc-');

  it('takes its socket from systemd socket activation (unix and TCP) and leaves the socket file to its owner', { skip: noActivate.length ? `missing ${noActivate.join(', ')}` : false }, async () => {
    const sock = path.join(tmp.path, 'act.sock');
    const a = await activate([sock], [L(1), '--json']);
    try {
      const size = await run('nbdinfo', ['--size', `nbd+unix:///?socket=${sock}`]);
      assert.equal(size.code, 0, size.stderr + a.stderr());
      assert.equal(size.stdout.trim(), String(64 << 20));
      const ready = await a.ready();
      assert.equal(ready.event, 'ready');
      assert.equal(ready.socket, sock, 'the inherited socket is named by its path');
    } finally {
      a.child.kill('SIGTERM');
    }
    assert.equal(await a.exit, 0, a.stderr());
    assert.ok(existsSync(sock), 'the manager\'s socket file is not removed');

    const port = await freePort();
    const t = await activate([`127.0.0.1:${port}`], [L(1), L(2), '--json']);
    try {
      const info = await run('nbdinfo', ['--json', `nbd://127.0.0.1:${port}`]);
      assert.equal(info.code, 0, info.stderr + t.stderr());
      assert.equal((await t.ready()).port, port);
    } finally {
      t.child.kill('SIGTERM');
    }
    assert.equal(await t.exit, 0);
  });

  it('refuses two activated sockets, and --socket beside one; ignores LISTEN_FDS meant for another process', { skip: noActivate.length ? `missing ${noActivate.join(', ')}` : false }, async () => {
    const p1 = path.join(tmp.path, 'two1.sock');
    const two = await activate([p1, path.join(tmp.path, 'two2.sock')], [L(1)]);
    await run('nbdinfo', ['--size', `nbd+unix:///?socket=${p1}`]);
    assert.equal(await two.exit, 1);
    assert.match(two.stderr(), /^obd: LISTEN_FDS=2: obd serve listens on one socket/m);
    const p3 = path.join(tmp.path, 'both.sock');
    const both = await activate([p3], [L(1), '--socket', path.join(tmp.path, 'other.sock')]);
    await run('nbdinfo', ['--size', `nbd+unix:///?socket=${p3}`]);
    assert.equal(await both.exit, 1);
    assert.match(both.stderr(), /leave out --socket and --listen/);
    // LISTEN_PID names another process: not ours, so the usual --socket applies.
    const child = spawn(process.execPath, [MAIN, 'serve', L(1), '--json', '--socket', path.join(tmp.path, 'own.sock')], { env: { ...process.env, LISTEN_FDS: '1', LISTEN_PID: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
    started.add(child);
    const line = await new Promise<string>((resolve) => child.stdout!.once('data', (d) => resolve(String(d))));
    assert.equal(JSON.parse(line).socket, path.join(tmp.path, 'own.sock'));
    child.kill('SIGTERM');
    assert.equal(await new Promise((r) => child.once('exit', r)), 0);
  });

  it('--pid-file: written once listening, removed at exit; a file naming a running process is refused', async () => {
    const pidFile = path.join(tmp.path, 'obd.pid');
    const s = track(await serveJson([L(1), '--socket', path.join(tmp.path, 'pid.sock'), '--pid-file', pidFile]));
    assert.equal((await readFile(pidFile, 'utf8')).trim(), String(s.pid));
    const again = await obd(['serve', L(1), '--socket', path.join(tmp.path, 'pid2.sock'), '--pid-file', pidFile]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, new RegExp(`^obd: --pid-file ${pidFile}: names process ${s.pid}, which is running`, 'm'));
    assert.ok(!existsSync(path.join(tmp.path, 'pid2.sock')), 'the refused server removed its socket');
    assert.equal(await s.stop(), 0);
    assert.ok(!existsSync(pidFile), 'removed at exit');
    // A stale file (its process is gone) is replaced.
    await writeFile(pidFile, '999999999\n');
    const t = track(await serveJson([L(1), '--socket', path.join(tmp.path, 'pid3.sock'), '--pid-file', pidFile]));
    assert.equal((await readFile(pidFile, 'utf8')).trim(), String(t.pid));
    assert.equal(await t.stop(), 0);
  });

  it('--max-connections: one client too many is refused in the handshake with the reason; a freed slot serves again', async () => {
    const sock = path.join(tmp.path, 'max.sock');
    const s = track(await serveJson([L(1), '--socket', sock, '--max-connections', '1']));
    try {
      const first = await RawClient.connect({ socket: sock });
      await first.handshake();
      const second = await RawClient.connect({ socket: sock });
      await second.greeting();
      second.sendClientFlags(1);
      const replies = await second.option(7, Buffer.from([0, 0, 0, 0, 0, 0]));
      assert.equal(replies.at(-1)!.type, 2 ** 31 + 2, 'NBD_REP_ERR_POLICY');
      assert.match(replies.at(-1)!.data.toString(), /at its limit of 1 connection/);
      second.close();
      if (!missing('nbdinfo').length) {
        const busy = await run('nbdinfo', ['--size', s.ready.exports[0]!.uri]);
        assert.notEqual(busy.code, 0);
        assert.match(busy.stderr, /server policy prevents/);
      }
      // The first client is served all along.
      assert.equal((await first.read(0, 4096)).error, 0);
      first.disconnect();
      await first.closedByServer();
      // The server sees the close a moment after the client: try again, as the refusal says.
      let third: RawClient | undefined;
      for (let i = 0; !third; i++) {
        const c = await RawClient.connect({ socket: sock });
        try {
          await c.handshake();
          third = c;
        } catch (e) {
          c.close();
          if (i >= 50) throw e;
          await new Promise((r) => setTimeout(r, 20));
        }
      }
      assert.equal((await third.read(4096, 4096)).error, 0);
      third.close();
    } finally {
      assert.equal(await s.stop(), 0);
    }
  });

  it('--log-format json: every stderr line is one JSON object, from start to stop and for failures', async () => {
    const sock = path.join(tmp.path, 'log.sock');
    const s = track(await serveJson([L(1), L(2), '--socket', sock, '--log-format', 'json', '-v']));
    const c = await RawClient.connect({ socket: sock });
    await c.handshake();
    c.disconnect();
    await c.closedByServer();
    assert.equal(await s.stop(), 0);
    const lines = s.stderr().split('\n').filter(Boolean);
    const objs = lines.map((l) => JSON.parse(l) as { time: string; level: string; msg: string; [k: string]: unknown });
    for (const o of objs) {
      assert.ok(!Number.isNaN(Date.parse(o.time)) && ['info', 'warn', 'error'].includes(o.level) && typeof o.msg === 'string', JSON.stringify(o));
    }
    const msgs = objs.map((o) => o.msg);
    const serving = objs.find((o) => o.msg === 'serving')!;
    assert.equal(serving.socket, sock);
    assert.equal((serving.exports as unknown[]).length, 1);
    assert.ok(msgs.includes('connect') && msgs.includes('ready') && msgs.includes('disconnect'), msgs.join(','));
    assert.ok(msgs.some((m) => /^SIGTERM: finishing running requests/.test(m)), 'the signal notice is JSON too');
    assert.equal(msgs.at(-1), 'stopped');

    const bad = await obd(['serve', L(1), '--socket', path.join(tmp.path, 'no', 'such', 'dir.sock'), '--log-format', 'json']);
    assert.equal(bad.code, 1);
    const err = bad.stderr.split('\n').filter(Boolean).map((l) => JSON.parse(l));
    assert.equal(err.length, 1, bad.stderr);
    assert.equal(err[0].level, 'error');
    assert.match(err[0].msg, /no such directory/);
  });

  it('SIGTERM with writes in flight: they finish (or get ESHUTDOWN), every acknowledged one is durable, exit 0', async () => {
    const data = path.join(tmp.path, 'term.data');
    const index = path.join(tmp.path, 'term.index');
    const sock = path.join(tmp.path, 'term.sock');
    const s = track(await serveJson([L(1), L(2), '--writable', '--upper', data, index, '--socket', sock]));
    const c = await RawClient.connect({ socket: sock });
    await c.handshake();
    const N = 64;
    const chunk = 256 * 1024;
    const payload = (i: number) => R(`term-${i}`, chunk);
    const cookies = new Map<bigint, number>();
    for (let i = 0; i < N; i++) cookies.set(c.request(CMD.WRITE, i * chunk * 3, chunk, { payload: payload(i) }), i);
    // The signal lands while the server is still reading and writing that burst.
    const wrote = await waitForSize(data, chunk);
    const acked: number[] = [];
    const shut: number[] = [];
    const t0 = Date.now();
    s.child.kill('SIGTERM');
    for (;;) {
      let r;
      try {
        r = await c.reply();
      } catch {
        break;
      }
      const i = cookies.get(r.cookie)!;
      assert.ok(r.kind === 'simple' || r.flags & 1);
      const error = r.kind === 'simple' ? r.error : r.type >= 2 ** 15 ? r.data.readUInt32BE(0) : 0;
      assert.ok(error === 0 || error === ESHUTDOWN, `write ${i}: error ${error}`);
      (error === 0 ? acked : shut).push(i);
    }
    const tReplies = Date.now() - t0;
    assert.equal(await s.exited, 0, s.stderr());
    const tExit = Date.now() - t0;
    assert.ok(acked.length >= 1);
    assert.ok(acked.length + shut.length <= N);
    // Reopened read-only, every acknowledged write reads back.
    const r = track(await serveJson([L(1), L(2), '--upper', data, index, '--socket', sock]));
    try {
      const rc = await RawClient.connect({ socket: sock });
      await rc.handshake();
      for (const i of acked) assert.ok((await rc.read(i * chunk * 3, chunk)).data!.equals(payload(i)), `acknowledged write ${i} is in the upper layer`);
      rc.close();
    } finally {
      assert.equal(await r.stop(), 0);
    }
    // Diagnostic: how much the shutdown let finish.
    process.stderr.write(`# SIGTERM: ${acked.length} acknowledged, ${shut.length} ESHUTDOWN, ${N - acked.length - shut.length} unanswered (upper at ${wrote} bytes at the signal); replies done ${tReplies} ms, exit ${tExit} ms after it\n`);
  });
});
