/**
 * What `obd serve`'s exports share: one layer pool for all of them (a layer several exports
 * stack is opened and fetched once; its decompressed blocks count once against --memory),
 * and the metrics of what they do (--metrics). An option group of its own, so serve's other
 * groups merge beside it.
 */
import { Option, type Command } from 'commander';
import type { LayerPool } from '../image/layer-pool.ts';
import type { ImageOptions } from '../image/open.ts';
import type { BlockDevice } from '../io/types.ts';
import { sizeArg } from './common.ts';

export interface ShareFlags {
  memory?: number;
  metrics?: { host: string; port: number };
}

/** Adds --memory and --metrics (`hostPort` parses the latter as serve's --listen does). */
export function addShareOptions(cmd: Command, hostPort: (text: string) => { host: string; port: number }): Command {
  return cmd
    .addOption(new Option('--memory <size>', 'memory for decompressed blocks, shared by every export (LRU); default 1/8 of RAM, at most 1G').argParser(sizeArg))
    .option('--metrics <[host:]port>', 'serve Prometheus metrics at http://HOST:PORT/metrics (a bare port binds 127.0.0.1)', hostPort);
}

/** Lines for serve's help. */
export const SHARE_EXAMPLES = `  obd serve localhost:5000/disks/vm1:v1 --export vm1 --export vm2=localhost:5000/disks/vm2:v1 --memory 256M
  obd serve base.lsmt --metrics 9100 --socket /tmp/obd.sock     # curl http://127.0.0.1:9100/metrics
Exports that stack the same layer (same blob digest, or same file) share it: it is opened and
fetched once, and its decompressed blocks count once against --memory.
`;

export interface Sharing {
  /** Spread into every export's image options. */
  readonly imageOptions: { pool: LayerPool } & Pick<ImageOptions, 'meter' | 'onRetry'>;
  /** The device to serve as export `name` (metered under --metrics). */
  serve(name: string, dev: BlockDevice): BlockDevice;
  /** Forgets a removed export (its metrics). */
  forget(name: string): void;
  /** The metrics text, when metrics are kept. */
  metricsText: (() => string) | undefined;
  /** Starts the metrics endpoint when asked for; resolves its address. */
  listen(connections: () => number): Promise<{ host: string; port: number } | undefined>;
  /** Stops the endpoint and closes whatever the exports left open (after they closed). */
  close(): Promise<void>;
}

/** `metered`: keep metrics even without --metrics (another endpoint serves them). */
export async function openSharing(flags: ShareFlags, metered = false): Promise<Sharing> {
  const [{ LayerPool }, metricsModule] = await Promise.all([import('../image/layer-pool.ts'), flags.metrics || metered ? import('../image/metrics.ts') : undefined]);
  const pool = new LayerPool({ memory: flags.memory });
  let connections = (): number => 0;
  const metrics = metricsModule ? new metricsModule.ServerMetrics({ pool, connections: () => connections() }) : undefined;
  const meter = metrics?.registry;
  let endpoint: { close(): Promise<void> } | undefined;
  return {
    imageOptions: { pool, ...(meter ? { meter, onRetry: () => meter.retries++ } : {}) },
    serve: (name, dev) => (metrics ? metrics.export(name, dev) : dev),
    forget: (name) => metrics?.removeExport(name),
    metricsText: metrics ? () => metrics.text() : undefined,
    async listen(count) {
      connections = count;
      if (!metricsModule || !metrics || !flags.metrics) return undefined;
      const at = await metricsModule.listenMetrics(flags.metrics, () => metrics.text());
      endpoint = at;
      return at.address;
    },
    async close() {
      await endpoint?.close();
      await pool.close();
    },
  };
}
