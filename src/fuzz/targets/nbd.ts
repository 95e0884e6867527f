/**
 * The NBD server's handshake and transmission phases: a real NbdServer on a unix socket
 * in the worker's temp directory, fed mutated client byte streams. After each session the
 * client half-closes; the server must close the connection, report no untyped device error,
 * and still serve a well-behaved witness client the right bytes.
 */
import net from 'node:net';
import path from 'node:path';
import { MemoryDevice, MemorySource } from '../../io/memory.ts';
import type { BlockDevice } from '../../io/types.ts';
import { ObdError } from '../../io/errors.ts';
import { openSealedLayer } from '../../lsmt/sealed.ts';
import { Stack } from '../../lsmt/stack.ts';
import type { NbdEvent } from '../../nbd/connection.ts';
import * as P from '../../nbd/protocol.ts';
import { NbdServer } from '../../nbd/server.ts';
import type { Field } from '../mutate.ts';
import { content, layerBytes, MiB, sampleExtents } from '../seeds.ts';
import type { CaseClass, Outcome, Target, TargetContext } from '../target.ts';
import { exportInfoRequest, metaContextRequest } from '../../nbd/options.ts';
import { session } from '../socket.ts';

/** Builds a client byte stream and notes its integer fields. */
class Stream {
  readonly parts: Buffer[] = [];
  readonly fields: Field[] = [];
  #len = 0;
  #put(b: Buffer, fields: [number, 1 | 2 | 4 | 8, string][] = []): this {
    for (const [at, width, name] of fields) this.fields.push({ at: this.#len + at, width, be: true, name });
    this.parts.push(b);
    this.#len += b.length;
    return this;
  }
  flags(f: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(f);
    return this.#put(b, [[0, 4, 'client-flags']]);
  }
  option(opt: number, data: Buffer = Buffer.alloc(0)): this {
    const h = Buffer.alloc(16);
    h.writeBigUInt64BE(P.IHAVEOPT, 0);
    h.writeUInt32BE(opt, 8);
    h.writeUInt32BE(data.length, 12);
    return this.#put(Buffer.concat([h, data]), [[8, 4, 'option'], [12, 4, 'option-length'], ...(data.length >= 4 ? ([[16, 4, 'option-data']] as [number, 4, string][]) : [])]);
  }
  request(type: number, offset: number, length: number, opts: { flags?: number; cookie?: number; payload?: Buffer } = {}): this {
    const h = Buffer.alloc(28);
    h.writeUInt32BE(P.REQUEST_MAGIC, 0);
    h.writeUInt16BE(opts.flags ?? 0, 4);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(BigInt(opts.cookie ?? this.parts.length), 8);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length, 24);
    return this.#put(Buffer.concat([h, opts.payload ?? Buffer.alloc(0)]), [[0, 4, 'request-magic'], [4, 2, 'command-flags'], [6, 2, 'command'], [16, 8, 'offset'], [24, 4, 'length']]);
  }
  bytes(): Buffer {
    return Buffer.concat(this.parts);
  }
}

const FLAGS = P.FLAG_C_FIXED_NEWSTYLE | P.FLAG_C_NO_ZEROES;

function sessions(): [string, Stream][] {
  const structured = new Stream()
    .flags(FLAGS)
    .option(P.OPT_STRUCTURED_REPLY)
    .option(P.OPT_SET_META_CONTEXT, metaContextRequest('', [P.CTX_BASE_ALLOCATION, P.CTX_ALLOCATION_DEPTH]))
    .option(P.OPT_GO, exportInfoRequest('', [P.INFO_BLOCK_SIZE, P.INFO_NAME]))
    .request(P.CMD_READ, 0, 4096)
    .request(P.CMD_READ, MiB - 512, 8192)
    .request(P.CMD_READ, 512 * 1024, 128 * 1024, { flags: P.CMD_FLAG_DF })
    .request(P.CMD_BLOCK_STATUS, 0, 4 * MiB)
    .request(P.CMD_BLOCK_STATUS, MiB, 65536, { flags: P.CMD_FLAG_REQ_ONE })
    .request(P.CMD_WRITE, 0, 512, { payload: Buffer.alloc(512, 1) })
    .request(P.CMD_CACHE, 0, 65536)
    .request(P.CMD_FLUSH, 0, 0)
    .request(P.CMD_DISC, 0, 0);
  const simple = new Stream()
    .flags(FLAGS)
    .option(P.OPT_LIST)
    .option(P.OPT_INFO, exportInfoRequest('rw', [P.INFO_DESCRIPTION]))
    .option(P.OPT_LIST_META_CONTEXT, metaContextRequest('rw', []))
    .option(P.OPT_GO, exportInfoRequest('rw'))
    .request(P.CMD_WRITE, 4096, 4096, { payload: Buffer.from(content('nbd-w', 4096)), flags: P.CMD_FLAG_FUA })
    .request(P.CMD_READ, 0, 16384)
    .request(P.CMD_WRITE_ZEROES, 65536, 65536, { flags: P.CMD_FLAG_FAST_ZERO })
    .request(P.CMD_TRIM, 131072, 4096)
    .request(P.CMD_BLOCK_STATUS, 0, 4096)
    .request(P.CMD_FLUSH, 0, 0)
    .request(P.CMD_DISC, 0, 0);
  const old = new Stream().flags(FLAGS).option(P.OPT_EXPORT_NAME, Buffer.from('rw')).request(P.CMD_READ, 0, 1024).request(P.CMD_WRITE, 0, 1024, { payload: Buffer.alloc(1024, 7) }).request(P.CMD_DISC, 0, 0);
  const abort = new Stream().flags(FLAGS).option(P.OPT_STARTTLS).option(P.OPT_INFO, exportInfoRequest('nope')).option(P.OPT_ABORT);
  return [
    ['structured-ro', structured],
    ['simple-rw', simple],
    ['export-name', old],
    ['abort', abort],
  ];
}

/** A well-behaved client: fixed newstyle, GO on the default export, simple replies, reads. */
async function witnessRead(socket: string, ranges: readonly [number, number][]): Promise<Buffer[]> {
  const s = net.connect(socket);
  let buf = Buffer.alloc(0);
  let wake: (() => void) | undefined;
  let failed: Error | undefined;
  s.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    wake?.();
  });
  s.on('error', (e) => {
    failed = e;
    wake?.();
  });
  s.on('close', () => {
    failed ??= new Error('witness: server closed the connection');
    wake?.();
  });
  const take = async (n: number): Promise<Buffer> => {
    while (buf.length < n) {
      if (failed) throw failed;
      await new Promise<void>((r) => (wake = r));
    }
    const out = buf.subarray(0, n);
    buf = buf.subarray(n);
    return out;
  };
  try {
    await take(18);
    const go = new Stream().flags(FLAGS).option(P.OPT_GO, exportInfoRequest('')).bytes();
    s.write(go);
    for (;;) {
      const h = await take(20);
      const type = h.readUInt32BE(12);
      await take(h.readUInt32BE(16));
      if (type === P.REP_ACK) break;
      if (type >= 2 ** 31) throw new Error(`witness: GO refused (${type})`);
    }
    const out: Buffer[] = [];
    for (const [off, len] of ranges) {
      s.write(new Stream().request(P.CMD_READ, off, len, { cookie: off }).bytes());
      const r = await take(16);
      if (r.readUInt32BE(4) !== 0) throw new Error(`witness: READ ${off}+${len} failed with NBD error ${r.readUInt32BE(4)}`);
      out.push(Buffer.from(await take(len)));
    }
    return out;
  } finally {
    s.destroy();
  }
}

/** Messages of errors V8 and Node raise for programming faults, which the handshake reports as protocol errors. */
const FAULT = /Cannot read prop|is not a function|is not iterable|Invalid array length|out of range|Maximum call stack|ERR_[A-Z_]+/;

const WITNESS: [number, number][] = [
  [0, 4096],
  [MiB - 4096, 16384],
  [3 * MiB, 65536],
];

interface Served {
  server: NbdServer;
  socket: string;
  events: NbdEvent[];
  expected: Buffer[];
}

let served: Promise<Served> | undefined;

async function serve(ctx: TargetContext): Promise<Served> {
  const layer = await openSealedLayer(new MemorySource(await layerBytes({ uuid: 'd0d0d0d0-0000-4000-8000-000000000001', virtualSize: 4 * MiB }, sampleExtents('nbd')), 'nbd-ro'));
  const ro: BlockDevice = new Stack([layer]);
  const rw = new MemoryDevice(4 * MiB, 'nbd-rw');
  const expected: Buffer[] = [];
  for (const [off, len] of WITNESS) {
    const b = Buffer.alloc(len);
    await ro.read(b, off);
    expected.push(b);
  }
  const events: NbdEvent[] = [];
  const server = new NbdServer({ exports: { '': ro, rw: { device: rw, description: 'scratch' } }, maxInFlight: 16, handshakeTimeoutMs: 5000, onEvent: (e) => events.push(e) });
  const socket = path.join(ctx.tmp, 'nbd.sock');
  await server.listen({ socket });
  return { server, socket, events, expected };
}

export const nbdTarget: Target = {
  name: 'nbd',
  async seeds() {
    return sessions().map(([name, s]) => ({ name, bytes: s.bytes(), fields: s.fields, guarded: false }));
  },
  async run(_seed, input, ctx): Promise<Outcome> {
    served ??= serve(ctx);
    const srv = await served;
    srv.events.length = 0;
    const closed = await session(srv.socket, input, 5000);
    const verdict = (verdict: CaseClass, detail: string) => ({ verdict, detail });
    if (!closed) return verdict('hang', 'the server kept the connection open 5 s after the client half-closed it');
    let got: Buffer[];
    try {
      got = await witnessRead(srv.socket, WITNESS);
    } catch (e) {
      return verdict('crash', `the server no longer serves a well-behaved client: ${(e as Error).message}`);
    }
    // Every connection of the case (session and witness) must be over on the server's side too.
    const open = () => srv.events.filter((e) => e.type === 'connect').length - srv.events.filter((e) => e.type === 'disconnect').length;
    for (let waited = 0; open() > 0 && waited < 5000; waited += 10) await new Promise((r) => setTimeout(r, 10));
    if (open() > 0) return verdict('hang', `the server still holds ${open()} connection(s) 5 s after its clients left`);
    const wrong = got.findIndex((b, i) => !b.equals(srv.expected[i]!));
    if (wrong >= 0) return verdict('undetected', `the witness read ${WITNESS[wrong]!.join('+')} returned other bytes`);
    for (const e of srv.events) {
      if (e.type === 'io-error' && !(e.error instanceof ObdError)) return verdict('crash', `untyped device error on ${e.command}: ${String(e.error)}`);
      if (e.type === 'protocol-error' && FAULT.test(e.message)) return verdict('crash', `fault reported as a protocol error: ${e.message}`);
    }
    const refused = srv.events.some((e) => e.type === 'protocol-error' || e.type === 'io-error');
    const seen = [...new Set(srv.events.map((e) => e.type))].join(',');
    return verdict(refused ? 'typed' : 'exact', `events: ${seen}`);
  },
  async close() {
    const s = served;
    served = undefined;
    if (s) await (await s).server.close({ timeoutMs: 2000 });
  },
};
