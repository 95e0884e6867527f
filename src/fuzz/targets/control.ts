/**
 * The control API (docs/control-api.md): a real ControlServer over a live disk in the
 * worker's temp directory, fed mutated raw HTTP requests (methods, paths, headers, lengths,
 * JSON bodies). After each case the server must still answer a witness request with the
 * stack, and the disk must still read its bytes: no request stops the server or changes
 * what the disk holds (snapshots seal, they never change content).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { LiveDisk } from '../../live/disk.ts';
import { ControlServer } from '../../live/control.ts';
import { controlRequest } from '../../live/client.ts';
import { content, layerBytes, MiB, sampleExtents } from '../seeds.ts';
import type { CaseClass, Outcome, Target, TargetContext } from '../target.ts';
import { session } from '../socket.ts';

function request(method: string, route: string, body?: string, headers: string[] = []): Uint8Array {
  const lines = [`${method} ${route} HTTP/1.1`, 'Host: control', ...headers];
  if (body !== undefined) lines.push('Content-Type: application/json', `Content-Length: ${Buffer.byteLength(body)}`);
  return Buffer.from(lines.join('\r\n') + '\r\n\r\n' + (body ?? ''));
}

const SEEDS: [string, Uint8Array, boolean][] = [
  ['exports', request('GET', '/v1/exports'), false],
  ['stats', request('GET', '/v1/stats', undefined, ['Connection: close']), false],
  ['snapshot', request('POST', '/v1/snapshot', '{"export":""}'), true],
  ['snapshot-commit', request('POST', '/v1/snapshot', '{"commit":"fuzz-commit.lsmt","compress":"lz4","tag":"fuzz"}'), true],
  ['resize', request('POST', '/v1/resize', '{"size":1048576,"shrink":false}'), true],
  ['compact', request('POST', '/v1/compact', '{}'), true],
  ['chunked', Buffer.from('POST /v1/snapshot HTTP/1.1\r\nHost: control\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n2\r\n{}\r\n0\r\n\r\n'), false],
  ['pipelined', Buffer.concat([request('GET', '/v1/exports'), request('GET', '/v1/stats'), request('POST', '/v1/resize', '{"size":-1}')]), false],
];

const WITNESS: [number, number][] = [
  [0, 4096],
  [MiB - 4096, 16384],
  [3 * MiB, 65536],
];

interface Served {
  disk: LiveDisk;
  server: ControlServer;
  socket: string;
  expected: Buffer[];
}

let served: Promise<Served> | undefined;

async function serve(ctx: TargetContext, generation: number): Promise<Served> {
  const dir = path.join(ctx.tmp, `control-${generation}`);
  await mkdir(dir, { recursive: true });
  const base = path.join(dir, 'base.lsmt');
  await writeFile(base, await layerBytes({ uuid: 'c0c0c0c0-0000-4000-8000-000000000001', virtualSize: 4 * MiB }, sampleExtents('control')));
  const disk = await LiveDisk.open({ record: path.join(dir, 'record.json'), initial: { layers: [base], upper: { data: path.join(dir, 'rw.data'), index: path.join(dir, 'rw.index') } } });
  await disk.device.write(content('control-w', 4096), MiB);
  const expected: Buffer[] = [];
  for (const [off, len] of WITNESS) {
    const b = Buffer.alloc(len);
    await disk.device.read(b, off);
    expected.push(b);
  }
  const server = new ControlServer({ disks: new Map([['', disk]]), exports: () => [{ name: '', size: disk.device.size, readOnly: false, layers: disk.device.layerCount }] });
  const socket = path.join(dir, 'control.sock');
  await server.listen({ socket });
  return { disk, server, socket, expected };
}

let generation = 0;

export const controlTarget: Target = {
  name: 'control',
  async seeds() {
    return SEEDS.map(([name, bytes, json]) => ({ name, bytes, fields: [], guarded: false, json: false, meta: { json } }));
  },
  async run(_seed, input, ctx): Promise<Outcome> {
    served ??= serve(ctx, generation++);
    const srv = await served;
    const layersBefore = srv.disk.describe().layers.length;
    const verdict = (v: CaseClass, detail: string) => ({ verdict: v, detail });
    // Slow requests (a snapshot with commit) take well under a second here; 10 s is a hang.
    if (!(await session(srv.socket, input, 10_000))) return verdict('hang', 'the control API kept the connection 10 s after the client half-closed it');
    // A request whose client went away may still be running (a snapshot): let it finish first.
    await srv.disk.idle();
    let listed: Record<string, unknown>;
    try {
      listed = await controlRequest({ address: srv.socket }, 'GET', '/v1/exports', undefined, 5000);
    } catch (e) {
      return verdict('crash', `the control API no longer answers: ${(e as Error).message}`);
    }
    if (!Array.isArray(listed.exports) || listed.exports.length !== 1) return verdict('crash', `GET /v1/exports answered ${JSON.stringify(listed).slice(0, 200)}`);
    for (const [i, [off, len]] of WITNESS.entries()) {
      if (off + len > srv.disk.device.size) continue; // a shrink (refused while anything is mapped there) may end the disk early
      const b = Buffer.alloc(len);
      await srv.disk.device.read(b, off);
      if (!b.equals(srv.expected[i]!)) return verdict('undetected', `a request changed the disk's bytes at ${off}+${len}`);
    }
    // A snapshot holds more files open (the new upper, the committed layer): start the next case
    // on a fresh disk, so the harness's descriptor count measures leaks, not layers.
    if (srv.disk.describe().layers.length !== layersBefore || srv.disk.device.size !== 4 * MiB) {
      await controlTarget.close!();
      served = serve(ctx, generation++);
      await served;
    }
    return verdict('exact', 'the server answers and the disk reads as before');
  },
  async close() {
    const s = served;
    served = undefined;
    if (!s) return;
    const srv = await s;
    await srv.server.close();
    await srv.disk.close();
  },
};
