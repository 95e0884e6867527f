/**
 * What the push and pull SIGKILL trials (kill-push.test.ts, kill-pull.test.ts) share: the
 * layers pushed (two plain LSMT layers, compressed by push, and a bare zfile, tar-wrapped
 * by it) and the checks of a blobs/sha256 directory and of a push's temp directory.
 */
import { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { commitLayer } from '../../../src/lsmt/commit.ts';
import { obd } from '../../helpers/cli.ts';
import { scatteredWritable, sha256File } from '../../helpers/kill.ts';
import { startRegistry, type RunningRegistry } from './registry.ts';
import { suiteTempDir } from '../../helpers/temp.ts';

export const KILLS = Number(process.env.OBD_KILL_TRIALS) || 6;
/** Per-test timeout, growing with OBD_KILL_TRIALS. */
export const KILL_TIMEOUT = 120_000 * Math.max(1, KILLS / 6);
const UUID = ['0b6f54f1-3a51-4d7e-8f1c-6d2b9e0c7a01', '0b6f54f1-3a51-4d7e-8f1c-6d2b9e0c7a02', '0b6f54f1-3a51-4d7e-8f1c-6d2b9e0c7a03'];

export const exists = (p: string) => stat(p).then(() => true, () => false);

export interface KillFixture {
  root: string;
  /** The input directory and files, which must not change. */
  inputs: string[];
  /** The layer files to push, bottom first. */
  layers: string[];
  reg: RunningRegistry;
}

/** Builds the layers and starts a registry before the suite's tests; removes all after. */
export function killFixture(): KillFixture {
  const f = {} as KillFixture;
  const tmp = suiteTempDir('obd-kill-remote-');
  before(async () => {
    f.root = tmp.path;
    const I = (name: string) => path.join(f.root, 'in', name);
    await mkdir(path.join(f.root, 'in'));
    // Three chained layers, the top one shipped as a zfile.
    for (let k = 0; k < 3; k++) {
      await scatteredWritable(I(`l${k}.data`), I(`l${k}.index`), `push-l${k}`, UUID[k]!, k ? UUID[k - 1] : undefined, 150);
      await commitLayer(I(`l${k}.data`), I(`l${k}.index`), I(`l${k}.lsmt`), { uuid: UUID[k] });
      await rm(I(`l${k}.data`));
      await rm(I(`l${k}.index`));
    }
    const z = await obd(['zfile', 'compress', I('l2.lsmt'), I('l2.zfile')]);
    assert.equal(z.code, 0, z.stderr);
    await rm(I('l2.lsmt'));
    f.layers = [I('l0.lsmt'), I('l1.lsmt'), I('l2.zfile')];
    f.inputs = [path.join(f.root, 'in'), ...f.layers];
    f.reg = await startRegistry();
  });
  after(async () => {
    await f.reg?.stop();
  });
  return f;
}

/**
 * Files of a blobs/sha256 directory: every digest-named blob must hash to its name; others
 * must be the temps `allowed` matches. Resolves the complete blobs and the temps.
 */
export async function checkBlobDir(dir: string, allowed: RegExp): Promise<{ blobs: Set<string>; temps: string[] }> {
  const blobs = new Set<string>();
  const temps: string[] = [];
  for (const name of await readdir(dir).catch(() => [])) {
    if (/^[0-9a-f]{64}$/.test(name)) {
      assert.equal(await sha256File(path.join(dir, name)), `sha256:${name}`, `${dir}/${name} does not hash to its name`);
      blobs.add(`sha256:${name}`);
    } else {
      assert.match(name, allowed, `unexpected file ${dir}/${name}`);
      temps.push(name);
    }
  }
  return { blobs, temps };
}

/** Temps a push left in its TMPDIR (compressed layers waiting for upload). */
export async function pushTemps(tmp: string, finished: boolean): Promise<boolean> {
  const names = await readdir(tmp);
  for (const n of names) assert.match(n, /^obd-push\.tmp-\d+-[0-9a-f]+$/, `unexpected ${tmp}/${n}`);
  if (finished) assert.deepEqual(names, [], 'a finished push left its temporary directory');
  return names.length > 0;
}


/**
 * A TCP relay to a local server that paces replies to `bytesPerSec`, so a download lasts long
 * enough for kills to land inside it (on loopback it would be over in a few milliseconds).
 * `ranges` collects the start of every `Range: bytes=N-` request passing through.
 */
export async function startThrottle(upstreamPort: number, bytesPerSec: number): Promise<{ host: string; ranges: number[]; stop(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const ranges: number[] = [];
  const server = net.createServer((client) => {
    const up = net.connect(upstreamPort, '127.0.0.1');
    for (const s of [client, up]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        sockets.delete(s);
        client.destroy();
        up.destroy();
      });
    }
    client.pipe(up);
    client.on('data', (c: Buffer) => {
      for (const m of c.toString('latin1').matchAll(/^range: *bytes=(\d+)-/gim)) ranges.push(Number(m[1]));
    });
    let next = performance.now();
    up.on('data', (chunk: Buffer) => {
      next = Math.max(next, performance.now()) + (chunk.length / bytesPerSec) * 1000;
      client.write(chunk);
      const wait = next - performance.now();
      if (wait > 1) {
        up.pause();
        setTimeout(() => up.resume(), wait);
      }
    });
    up.on('end', () => client.end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    host: `127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    ranges,
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
