/**
 * The fixed-newstyle handshake: greeting, client flags, then options one at a time until
 * the client picks an export (GO / EXPORT_NAME) or leaves (ABORT). Reads through an
 * InputQueue, writes through a callback; never touches the socket directly.
 */
import { NbdDisconnect } from './errors.ts';
import { transmissionFlags, type ExportTable, type ResolvedExport } from './exports.ts';
import {
  CTX_ALLOCATION_DEPTH,
  CTX_BASE_ALLOCATION,
  CTX_ID_BASE,
  CTX_ID_DEPTH,
  FLAG_C_FIXED_NEWSTYLE,
  FLAG_C_NO_ZEROES,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  IHAVEOPT,
  IHAVEOPT_HI,
  IHAVEOPT_LO,
  INFO_BLOCK_SIZE,
  INFO_DESCRIPTION,
  INFO_EXPORT,
  INFO_NAME,
  NBDMAGIC,
  OPT_ABORT,
  OPT_EXPORT_NAME,
  OPT_GO,
  OPT_INFO,
  OPT_LIST,
  OPT_LIST_META_CONTEXT,
  OPT_SET_META_CONTEXT,
  OPT_STARTTLS,
  OPT_STRUCTURED_REPLY,
  PREFERRED_BLOCK,
  REP_ACK,
  REP_ERR_INVALID,
  REP_ERR_POLICY,
  REP_ERR_SHUTDOWN,
  REP_ERR_TLS_REQD,
  REP_ERR_UNKNOWN,
  REP_ERR_UNSUP,
  REP_INFO,
  REP_META_CONTEXT,
  REP_SERVER,
} from './protocol.ts';
import { optionReply, putU64 } from './replies.ts';
import type { TlsMode } from './tls.ts';

/** What the handshake settled for the transmission phase. */
export interface Negotiated {
  export: ResolvedExport;
  structured: boolean;
  /** Selected metadata contexts for this export. */
  baseAllocation: boolean;
  allocationDepth: boolean;
  /** Transmission flags sent to the client. */
  flags: number;
}

export interface HandshakeIo {
  /** Resolves with exactly `n` bytes from the client. */
  read(n: number): Promise<Buffer>;
  write(buf: Uint8Array): void;
  /** Sends STARTTLS's ACK and runs the TLS handshake; later reads and writes are secure. Absent: no TLS offered. */
  startTls?(ack: Uint8Array): Promise<void>;
}

export interface HandshakeOptions {
  /** off: NOTLS; on: SELECTIVETLS (exports marked tlsOnly need it); require: FORCEDTLS. */
  tls: TlsMode;
  exports: ExportTable;
  maxPayload: number;
  /** Largest option payload accepted; a longer one ends the connection (a DoS guard). */
  maxOptionLength: number;
  shuttingDown(): boolean;
  /** Why every option is refused, if it is (a connection over the server's limit). */
  refusal?(): string | undefined;
}

const CONTEXTS: readonly [string, number][] = [
  [CTX_BASE_ALLOCATION, CTX_ID_BASE],
  [CTX_ALLOCATION_DEPTH, CTX_ID_DEPTH],
];

/** Runs the handshake. Resolves undefined when the client aborts; throws NbdDisconnect on violations. */
export async function negotiate(io: HandshakeIo, opts: HandshakeOptions): Promise<Negotiated | undefined> {
  const greeting = Buffer.allocUnsafe(18);
  greeting.writeBigUInt64BE(NBDMAGIC, 0);
  greeting.writeBigUInt64BE(IHAVEOPT, 8);
  greeting.writeUInt16BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 16);
  io.write(greeting);

  const clientFlags = (await io.read(4)).readUInt32BE(0);
  if ((clientFlags & ~(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)) !== 0) {
    throw new NbdDisconnect(`unknown client flags 0x${clientFlags.toString(16)}`);
  }
  const noZeroes = (clientFlags & FLAG_C_NO_ZEROES) !== 0;

  let structured = false;
  let metaExport: ResolvedExport | undefined;
  let metaIds: number[] = [];
  let secure = false;
  /** An export this client may not use yet: TLS is required for it and not running. */
  const locked = (exp: ResolvedExport) => !secure && (opts.tls === 'require' || exp.tlsOnly);

  for (;;) {
    const head = await io.read(16);
    if (head.readUInt32BE(0) !== IHAVEOPT_HI || head.readUInt32BE(4) !== IHAVEOPT_LO) {
      throw new NbdDisconnect('bad option magic (expected IHAVEOPT)');
    }
    const option = head.readUInt32BE(8);
    const length = head.readUInt32BE(12);
    if (length > opts.maxOptionLength) {
      throw new NbdDisconnect(`option ${option} carries ${length} bytes, more than the ${opts.maxOptionLength} accepted`);
    }
    const data = length > 0 ? Buffer.from(await io.read(length)) : Buffer.alloc(0);
    const reply = (type: number, payload?: Uint8Array) => io.write(optionReply(option, type, payload));
    const fail = (type: number, message: string) => reply(type, Buffer.from(message, 'utf8'));

    if (opts.tls === 'require' && !secure && option !== OPT_STARTTLS && option !== OPT_ABORT) {
      // FORCEDTLS: before TLS a client learns nothing, not even which exports exist.
      if (option === OPT_EXPORT_NAME) throw new NbdDisconnect('EXPORT_NAME before STARTTLS, and TLS is required');
      fail(REP_ERR_TLS_REQD, 'TLS is required: send NBD_OPT_STARTTLS first');
      continue;
    }
    if (option === OPT_EXPORT_NAME) {
      // No error reply exists for EXPORT_NAME: an unknown export can only end the session.
      const exp = opts.shuttingDown() || opts.refusal?.() ? undefined : opts.exports.lookup(data.toString('utf8'));
      if (!exp) throw new NbdDisconnect(`EXPORT_NAME: no export "${data.toString('utf8')}"`);
      if (locked(exp)) throw new NbdDisconnect(`EXPORT_NAME: export "${exp.name}" needs TLS, and the client did not start it`);
      const flags = transmissionFlags(exp, structured);
      const out = Buffer.alloc(noZeroes ? 10 : 134);
      putU64(out, 0, exp.size);
      out.writeUInt16BE(flags, 8);
      io.write(out);
      return finish(exp, structured, metaExport, metaIds, flags);
    }
    if (option === OPT_ABORT) {
      reply(REP_ACK);
      return undefined;
    }
    if (opts.shuttingDown()) {
      fail(REP_ERR_SHUTDOWN, 'server is shutting down');
      continue;
    }
    const refused = opts.refusal?.();
    if (refused !== undefined) {
      fail(REP_ERR_POLICY, refused);
      continue;
    }
    switch (option) {
      case OPT_LIST: {
        if (length !== 0) {
          fail(REP_ERR_INVALID, 'NBD_OPT_LIST takes no data');
          break;
        }
        for (const exp of opts.exports.list()) {
          if (locked(exp)) continue;
          const name = Buffer.from(exp.name, 'utf8');
          const desc = Buffer.from(exp.description, 'utf8');
          const body = Buffer.allocUnsafe(4 + name.length + desc.length);
          body.writeUInt32BE(name.length, 0);
          name.copy(body, 4);
          desc.copy(body, 4 + name.length);
          reply(REP_SERVER, body);
        }
        reply(REP_ACK);
        break;
      }
      case OPT_STARTTLS:
        if (!io.startTls || opts.tls === 'off') fail(REP_ERR_POLICY, 'this server does not offer TLS');
        else if (secure) fail(REP_ERR_INVALID, 'TLS is already running');
        else if (length !== 0) fail(REP_ERR_INVALID, 'NBD_OPT_STARTTLS takes no data');
        else {
          await io.startTls(optionReply(option, REP_ACK));
          secure = true;
          // Nothing negotiated in the clear carries over (proto.md, NBD_OPT_STARTTLS).
          structured = false;
          metaExport = undefined;
          metaIds = [];
        }
        break;
      case OPT_INFO:
      case OPT_GO: {
        const req = parseInfoRequest(data);
        if (!req) {
          fail(REP_ERR_INVALID, 'malformed NBD_OPT_INFO/GO request');
          break;
        }
        const exp = opts.exports.lookup(req.name);
        if (!exp) {
          fail(REP_ERR_UNKNOWN, `no export named "${req.name}"`);
          break;
        }
        if (locked(exp)) {
          fail(REP_ERR_TLS_REQD, `export "${exp.name}" needs TLS: send NBD_OPT_STARTTLS first`);
          break;
        }
        const flags = transmissionFlags(exp, structured);
        const info = Buffer.allocUnsafe(12);
        info.writeUInt16BE(INFO_EXPORT, 0);
        putU64(info, 2, exp.size);
        info.writeUInt16BE(flags, 10);
        reply(REP_INFO, info);
        // Block sizes go out unasked: clients may ignore them, and those that asked obey them.
        const bs = Buffer.allocUnsafe(14);
        bs.writeUInt16BE(INFO_BLOCK_SIZE, 0);
        bs.writeUInt32BE(exp.minBlock, 2);
        bs.writeUInt32BE(PREFERRED_BLOCK, 6);
        bs.writeUInt32BE(opts.maxPayload, 10);
        reply(REP_INFO, bs);
        if (req.infos.includes(INFO_NAME)) reply(REP_INFO, infoString(INFO_NAME, exp.name));
        if (req.infos.includes(INFO_DESCRIPTION) && exp.description) reply(REP_INFO, infoString(INFO_DESCRIPTION, exp.description));
        reply(REP_ACK);
        if (option === OPT_GO) return finish(exp, structured, metaExport, metaIds, flags);
        break;
      }
      case OPT_STRUCTURED_REPLY:
        if (length !== 0) {
          fail(REP_ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data');
          break;
        }
        structured = true;
        reply(REP_ACK);
        break;
      case OPT_LIST_META_CONTEXT:
      case OPT_SET_META_CONTEXT: {
        const set = option === OPT_SET_META_CONTEXT;
        // SET replaces the selection even when it fails.
        if (set) {
          metaExport = undefined;
          metaIds = [];
        }
        if (!structured) {
          fail(REP_ERR_INVALID, 'negotiate NBD_OPT_STRUCTURED_REPLY before metadata contexts');
          break;
        }
        const req = parseMetaRequest(data);
        if (!req) {
          fail(REP_ERR_INVALID, 'malformed metadata context request');
          break;
        }
        const exp = opts.exports.lookup(req.name);
        if (!exp || locked(exp)) {
          fail(REP_ERR_UNKNOWN, `no export named "${req.name}"`);
          break;
        }
        const matches = set ? selectContexts(req.queries) : listContexts(req.queries);
        for (const [name, id] of matches) {
          const nb = Buffer.from(name, 'utf8');
          const body = Buffer.allocUnsafe(4 + nb.length);
          body.writeUInt32BE(set ? id : 0, 0);
          nb.copy(body, 4);
          reply(REP_META_CONTEXT, body);
        }
        if (set) {
          metaExport = exp;
          metaIds = matches.map(([, id]) => id);
        }
        reply(REP_ACK);
        break;
      }
      default:
        fail(REP_ERR_UNSUP, `option ${option} is not supported`);
    }
  }
}

function finish(exp: ResolvedExport, structured: boolean, metaExport: ResolvedExport | undefined, metaIds: number[], flags: number): Negotiated {
  // Contexts count only when they were selected for the export finally chosen.
  const ids = metaExport === exp ? metaIds : [];
  return {
    export: exp,
    structured,
    baseAllocation: ids.includes(CTX_ID_BASE),
    allocationDepth: ids.includes(CTX_ID_DEPTH),
    flags,
  };
}

function parseInfoRequest(data: Buffer): { name: string; infos: number[] } | undefined {
  if (data.length < 6) return undefined;
  const nameLen = data.readUInt32BE(0);
  if (nameLen > data.length - 6) return undefined;
  const n = data.readUInt16BE(4 + nameLen);
  if (data.length !== 6 + nameLen + 2 * n) return undefined;
  const infos: number[] = [];
  for (let i = 0; i < n; i++) infos.push(data.readUInt16BE(6 + nameLen + 2 * i));
  return { name: data.toString('utf8', 4, 4 + nameLen), infos };
}

function parseMetaRequest(data: Buffer): { name: string; queries: string[] } | undefined {
  if (data.length < 8) return undefined;
  const nameLen = data.readUInt32BE(0);
  if (nameLen > data.length - 8) return undefined;
  const name = data.toString('utf8', 4, 4 + nameLen);
  let at = 4 + nameLen;
  const count = data.readUInt32BE(at);
  at += 4;
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (at + 4 > data.length) return undefined;
    const qLen = data.readUInt32BE(at);
    at += 4;
    if (qLen > data.length - at) return undefined;
    queries.push(data.toString('utf8', at, at + qLen));
    at += qLen;
  }
  return at === data.length ? { name, queries } : undefined;
}

/** SET: exact names only; wildcards and unknown names select nothing. */
function selectContexts(queries: string[]): [string, number][] {
  return CONTEXTS.filter(([name]) => queries.includes(name));
}

/** LIST: no query lists everything; `ns:` lists a namespace; exact names list themselves. */
function listContexts(queries: string[]): [string, number][] {
  if (queries.length === 0) return [...CONTEXTS];
  return CONTEXTS.filter(([name]) => queries.some((q) => q === name || (q.endsWith(':') && name.startsWith(q))));
}

function infoString(type: number, text: string): Buffer {
  const s = Buffer.from(text, 'utf8');
  const out = Buffer.allocUnsafe(2 + s.length);
  out.writeUInt16BE(type, 0);
  s.copy(out, 2);
  return out;
}
