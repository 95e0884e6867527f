/**
 * Counting what a server does, and writing it in Prometheus' text exposition format
 * (version 0.0.4): request meters with latency histograms, and families of samples to print.
 * The meters cost a clock read and a few additions per request, so they sit on hot paths.
 */
import { ForwardingSource } from './forwarding.ts';
import type { ByteSource } from './types.ts';

/** Upper bounds of the latency buckets, in seconds (100 µs … 2.5 s). */
export const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5] as const;

/** Counts of observations at or below each bucket bound (the last counts everything). */
export class Histogram {
  readonly counts = new Float64Array(LATENCY_BUCKETS.length + 1);
  sum = 0;

  observe(seconds: number): void {
    let i = 0;
    while (i < LATENCY_BUCKETS.length && seconds > LATENCY_BUCKETS[i]!) i++;
    this.counts[i]!++;
    this.sum += seconds;
  }

  get count(): number {
    let n = 0;
    for (const c of this.counts) n += c;
    return n;
  }
}

/** Requests of one kind: how many, their bytes, how many failed, how long they took. */
export class RequestMeter {
  requests = 0;
  bytes = 0;
  errors = 0;
  readonly latency = new Histogram();

  /** Starts timing a request; call the result with the bytes moved (or an error) when it ends. */
  start(): (bytes: number, failed?: boolean) => void {
    const t0 = performance.now();
    return (bytes, failed) => {
      this.requests++;
      if (failed) this.errors++;
      else this.bytes += bytes;
      this.latency.observe((performance.now() - t0) / 1000);
    };
  }
}

/** What a registry client did: each blob read (one Range GET with its retries) and each retry. */
export class RegistryMeter extends RequestMeter {
  retries = 0;
}

/** A registry blob whose reads are counted and timed by a meter. */
export class MeteredSource extends ForwardingSource {
  readonly #meter: RequestMeter;
  constructor(inner: ByteSource, meter: RequestMeter) {
    super(inner);
    this.#meter = meter;
  }
  override async read(buf: Uint8Array, offset: number): Promise<number> {
    const done = this.#meter.start();
    try {
      const n = await this.inner.read(buf, offset);
      done(n);
      return n;
    } catch (e) {
      done(0, true);
      throw e;
    }
  }
}

export type MetricType = 'counter' | 'gauge' | 'histogram';

export interface Sample {
  labels?: Record<string, string>;
  value: number | Histogram;
}

export interface MetricFamily {
  name: string;
  help: string;
  type: MetricType;
  samples: Sample[];
}

function labelText(labels: Record<string, string> | undefined, extra?: [string, string]): string {
  const all = Object.entries(labels ?? {});
  if (extra) all.push(extra);
  if (all.length === 0) return '';
  return `{${all.map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`).join(',')}}`;
}

function num(v: number): string {
  return Number.isFinite(v) ? String(v) : v > 0 ? '+Inf' : v < 0 ? '-Inf' : 'NaN';
}

/** The families in Prometheus' text format, a HELP and TYPE line before each. */
export function formatMetrics(families: readonly MetricFamily[]): string {
  const out: string[] = [];
  for (const f of families) {
    out.push(`# HELP ${f.name} ${f.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`, `# TYPE ${f.name} ${f.type}`);
    for (const s of f.samples) {
      if (typeof s.value === 'number') {
        out.push(`${f.name}${labelText(s.labels)} ${num(s.value)}`);
        continue;
      }
      const h = s.value;
      let cum = 0;
      LATENCY_BUCKETS.forEach((le, i) => {
        cum += h.counts[i]!;
        out.push(`${f.name}_bucket${labelText(s.labels, ['le', String(le)])} ${cum}`);
      });
      cum += h.counts[LATENCY_BUCKETS.length]!;
      out.push(`${f.name}_bucket${labelText(s.labels, ['le', '+Inf'])} ${cum}`, `${f.name}_sum${labelText(s.labels)} ${num(h.sum)}`, `${f.name}_count${labelText(s.labels)} ${cum}`);
    }
  }
  return out.join('\n') + '\n';
}
