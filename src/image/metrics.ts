/**
 * A server's metrics in Prometheus' text format: per export (requests, bytes, failures and
 * latency per operation, through a MeteredDevice on each export), the shared layers of its
 * pool (open layers, the decompressed-block budget, fetched-unit cache hits and misses, disk
 * caches, verification failures), the registry (blob reads, bytes, failures, retries,
 * latency) and the process (RSS). Served at /metrics by `obd serve --metrics HOST:PORT`.
 */
import type net from 'node:net';
import { http } from '../io/builtins.ts';
import { InvalidArgumentError } from '../io/errors.ts';
import { formatMetrics, RegistryMeter, type MetricFamily, type Sample } from '../io/metrics.ts';
import type { BlockDevice, ByteSource } from '../io/types.ts';
import type { SharedBlob } from '../io/shared.ts';
import { MeteredDevice, type MeteredOp } from '../ops/metered.ts';
import type { LayerPool } from './layer-pool.ts';

export interface ServerMetricsOptions {
  pool?: LayerPool;
  /** Open client connections now. */
  connections?: () => number;
}

/** The counters a lazily fetched layer keeps (LazySource.stats). */
interface LazyStats {
  requests: number;
  bytes: number;
  hits: number;
  misses: number;
}

/** A disk cache's figures (BlobCache). */
interface DiskCache {
  readonly dir: string;
  readonly usage: number;
  readonly capacity: number;
}

const OPS: readonly MeteredOp[] = ['read', 'write', 'trim', 'flush', 'extents'];

export class ServerMetrics {
  /** Give to the image options as `meter` and its `onRetry` to the registry options. */
  readonly registry = new RegistryMeter();
  readonly #exports = new Map<string, MeteredDevice>();
  readonly #opts: ServerMetricsOptions;

  constructor(opts: ServerMetricsOptions = {}) {
    this.#opts = opts;
  }

  /** `dev` as export `name`, metered: serve the result instead of `dev`. */
  export(name: string, dev: BlockDevice): BlockDevice {
    const m = new MeteredDevice(dev);
    this.#exports.set(name, m);
    return m;
  }

  /** Forgets a removed export's figures. */
  removeExport(name: string): void {
    this.#exports.delete(name);
  }

  families(): MetricFamily[] {
    const per = (pick: (m: MeteredDevice, op: MeteredOp) => Sample['value']): Sample[] =>
      [...this.#exports].flatMap(([name, m]) => OPS.filter((op) => opPossible(m, op)).map((op) => ({ labels: { export: name, op }, value: pick(m, op) })));
    const fam = (name: string, type: MetricFamily['type'], help: string, samples: Sample[]): MetricFamily => ({ name, type, help, samples });
    const one = (value: number): Sample[] => [{ value }];
    const r = this.registry;
    const out: MetricFamily[] = [
      fam('obd_export_requests_total', 'counter', 'Requests that reached each export device, by operation.', per((m, op) => m.meters[op].requests)),
      fam('obd_export_bytes_total', 'counter', 'Bytes read or written (or trimmed) by each export, by operation.', per((m, op) => m.meters[op].bytes)),
      fam('obd_export_errors_total', 'counter', 'Requests that failed, by export and operation.', per((m, op) => m.meters[op].errors)),
      fam('obd_export_request_duration_seconds', 'histogram', 'Time each request spent in the export device.', per((m, op) => m.meters[op].latency)),
      fam('obd_exports', 'gauge', 'Exports served.', one(this.#exports.size)),
    ];
    if (this.#opts.connections) out.push(fam('obd_nbd_connections', 'gauge', 'Open NBD client connections.', one(this.#opts.connections())));
    const pool = this.#opts.pool;
    if (pool) {
      const s = pool.stats();
      const lazy = (pool.values('blob:') as SharedBlob[]).map((b) => lazyStats(b.source)).filter((x): x is { stats: LazyStats; verifyFailures: number } => x !== undefined);
      const sum = (f: (x: LazyStats) => number) => lazy.reduce((n, x) => n + f(x.stats), 0);
      const caches = pool.values('cache:') as DiskCache[];
      out.push(
        fam('obd_layers_open', 'gauge', 'Layers open (each once, whatever the number of exports stacking it).', one(s.layers)),
        fam('obd_layer_users', 'gauge', 'Exports holding each open layer, summed.', one(s.users)),
        fam('obd_block_cache_bytes', 'gauge', 'Decompressed zfile blocks held, all layers together.', one(s.memory.bytes)),
        fam('obd_block_cache_capacity_bytes', 'gauge', 'The decompressed-block budget (--memory).', one(s.memory.capacity)),
        fam('obd_block_cache_admitted_total', 'counter', 'Blocks decoded into the block cache (cache misses that were kept).', one(s.memory.admitted)),
        fam('obd_block_cache_evictions_total', 'counter', 'Blocks evicted from the block cache to stay within the budget.', one(s.memory.evictions)),
        fam('obd_remote_cache_hits_total', 'counter', 'Reads of remote layers served from held units (memory or disk cache).', one(sum((x) => x.hits))),
        fam('obd_remote_cache_misses_total', 'counter', 'Reads of remote layers that had to fetch.', one(sum((x) => x.misses))),
        fam('obd_verity_failures_total', 'counter', 'Fetched chunks that failed verification against their verity tree.', one(lazy.reduce((n, x) => n + x.verifyFailures, 0))),
        fam('obd_disk_cache_bytes', 'gauge', 'Bytes held by each on-disk cache.', caches.map((c) => ({ labels: { dir: c.dir }, value: c.usage }))),
        fam('obd_disk_cache_capacity_bytes', 'gauge', 'Capacity of each on-disk cache.', caches.map((c) => ({ labels: { dir: c.dir }, value: c.capacity }))),
      );
    }
    out.push(
      fam('obd_registry_requests_total', 'counter', 'Blob reads from registries (one Range GET each, retries included).', one(r.requests)),
      fam('obd_registry_bytes_total', 'counter', 'Blob bytes received from registries.', one(r.bytes)),
      fam('obd_registry_errors_total', 'counter', 'Blob reads that failed after their retries.', one(r.errors)),
      fam('obd_registry_retries_total', 'counter', 'Registry requests retried.', one(r.retries)),
      fam('obd_registry_request_duration_seconds', 'histogram', 'Time of each blob read from a registry.', [{ value: r.latency }]),
      fam('process_resident_memory_bytes', 'gauge', 'Resident memory of the server process.', one(process.memoryUsage.rss())),
    );
    return out;
  }

  text(): string {
    return formatMetrics(this.families());
  }
}

/** The operations an export's device can be asked for: reads always, the rest when it is writable. */
function opPossible(m: MeteredDevice, op: MeteredOp): boolean {
  return op === 'read' || op === 'extents' || (m.writable && m[op] !== undefined);
}

/** A lazily fetched layer's counters, and the verification failures of the sources below it. */
function lazyStats(src: ByteSource): { stats: LazyStats; verifyFailures: number } | undefined {
  const s = (src as { stats?: Partial<LazyStats> }).stats;
  if (!s || typeof s.hits !== 'number' || typeof s.misses !== 'number') return undefined;
  let verifyFailures = 0;
  for (let cur: unknown = (src as { remote?: unknown }).remote; cur; cur = (cur as { inner?: unknown }).inner) {
    const f = (cur as { stats?: { failures?: unknown } }).stats?.failures;
    if (typeof f === 'number') verifyFailures += f;
  }
  return { stats: s as LazyStats, verifyFailures };
}

export interface MetricsEndpoint {
  readonly address: { host: string; port: number };
  close(): Promise<void>;
}

/** Serves `text()` at GET /metrics on HOST:PORT (everything else is 404); bounded and never fatal. */
export async function listenMetrics(addr: { host: string; port: number }, text: () => string): Promise<MetricsEndpoint> {
  const sockets = new Set<net.Socket>();
  const server = http().createServer({ headersTimeout: 10_000, requestTimeout: 10_000, maxHeaderSize: 16 * 1024 }, (req, res) => {
    req.resume();
    const url = (req.url ?? '').split('?')[0];
    if (url !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(url === '/metrics' ? 405 : 404, { 'content-type': 'text/plain' }).end(url === '/metrics' ? 'GET only\n' : 'try /metrics\n');
      return;
    }
    let body: string;
    try {
      body = text();
    } catch (e) {
      res.writeHead(500, { 'content-type': 'text/plain' }).end(`${e instanceof Error ? e.message : String(e)}\n`);
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }).end(req.method === 'HEAD' ? undefined : body);
  });
  server.keepAliveTimeout = 5_000;
  server.maxConnections = 64;
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => reject(new InvalidArgumentError(`--metrics: cannot listen on ${addr.host}:${addr.port}: ${e.code === 'EADDRINUSE' ? 'address in use' : e.message}`, { cause: e })));
    server.listen(addr.port, addr.host, () => resolve());
  });
  server.on('error', () => {});
  const port = (server.address() as net.AddressInfo).port;
  return {
    address: { host: addr.host, port },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
