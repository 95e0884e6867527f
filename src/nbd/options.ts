/**
 * The data of the options a client sends (NBD proto.md): OPT_INFO / OPT_GO (export name, then
 * the info types wanted) and OPT_LIST/SET_META_CONTEXT (export name, then the queries). One
 * encoder for the client, the fuzzer and the tests' raw client.
 */

/** OPT_INFO / OPT_GO data: u32 name length, name, u16 count, u16 info types. */
export function exportInfoRequest(name: string, infos: readonly number[] = []): Buffer {
  const n = Buffer.from(name, 'utf8');
  const b = Buffer.alloc(4 + n.length + 2 + 2 * infos.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  b.writeUInt16BE(infos.length, 4 + n.length);
  infos.forEach((t, i) => b.writeUInt16BE(t, 6 + n.length + 2 * i));
  return b;
}

/** OPT_LIST_META_CONTEXT / OPT_SET_META_CONTEXT data: u32 name length, name, u32 count, then u32 length + query each. */
export function metaContextRequest(name: string, queries: readonly string[]): Buffer {
  const n = Buffer.from(name, 'utf8');
  const qs = queries.map((q) => Buffer.from(q, 'utf8'));
  const b = Buffer.alloc(4 + n.length + 4 + qs.reduce((s, q) => s + 4 + q.length, 0));
  let at = b.writeUInt32BE(n.length, 0);
  at += n.copy(b, at);
  at = b.writeUInt32BE(qs.length, at);
  for (const q of qs) {
    at = b.writeUInt32BE(q.length, at);
    at += q.copy(b, at);
  }
  return b;
}
