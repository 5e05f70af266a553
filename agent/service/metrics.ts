/**
 * The service's Prometheus metrics, served as text exposition format on a loopback address.
 * Hand-written because the format is a few lines and a client library would be the largest
 * dependency of the agent.
 */
import type { Server } from 'node:http';

type Labels = Readonly<Record<string, string>>;

interface Series {
  readonly help: string;
  readonly type: 'counter' | 'gauge';
  readonly values: Map<string, { labels: Labels; value: number }>;
}

function labelKey(labels: Labels): string {
  return Object.entries(labels)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}="${v.replaceAll('\\', '\\\\').replaceAll('"', '\\"').replaceAll('\n', '\\n')}"`)
    .join(',');
}

export class Metrics {
  readonly #series = new Map<string, Series>();
  readonly #collectors: (() => void | Promise<void>)[] = [];

  #get(name: string, help: string, type: Series['type']): Series {
    let series = this.#series.get(name);
    if (!series) {
      series = { help, type, values: new Map() };
      this.#series.set(name, series);
    }
    return series;
  }

  /** Adds `by` to a counter. */
  inc(name: string, help: string, labels: Labels = {}, by = 1): void {
    const series = this.#get(name, help, 'counter');
    const key = labelKey(labels);
    const current = series.values.get(key)?.value ?? 0;
    series.values.set(key, { labels, value: current + by });
  }

  set(name: string, help: string, value: number, labels: Labels = {}): void {
    this.#get(name, help, 'gauge').values.set(labelKey(labels), { labels, value });
  }

  /** The current value, for tests and for the service's own decisions. */
  value(name: string, labels: Labels = {}): number | undefined {
    return this.#series.get(name)?.values.get(labelKey(labels))?.value;
  }

  /** Runs before every scrape, to refresh gauges computed on demand (queue depth, archive lag). */
  onCollect(collector: () => void | Promise<void>): void {
    this.#collectors.push(collector);
  }

  async render(): Promise<string> {
    for (const collect of this.#collectors) await collect();
    const lines: string[] = [];
    for (const [name, series] of [...this.#series].sort(([a], [b]) => a.localeCompare(b))) {
      lines.push(`# HELP ${name} ${series.help}`, `# TYPE ${name} ${series.type}`);
      for (const [key, { value }] of series.values) lines.push(`${name}${key ? `{${key}}` : ''} ${value}`);
    }
    return `${lines.join('\n')}\n`;
  }
}

/** Parses `host:port`; the host must be given (no default to all interfaces). */
export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(listen);
  if (!m?.[1] || !m[2])
    throw new Error(`metrics.listen "${listen}": expected host:port such as 127.0.0.1:9187`);
  return { host: m[1].replace(/^\[|\]$/g, ''), port: Number(m[2]) };
}

/** Serves `GET /metrics`; resolves once listening. */
export async function serveMetrics(metrics: Metrics, listen: string): Promise<Server> {
  const { host, port } = parseListen(listen);
  // Loaded only here: node:http is ~40 ms of a start, and wal-pusher keeps metrics it never serves.
  const { createServer } = await import('node:http');
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url !== '/metrics' && req.url !== '/')) {
      res.writeHead(404).end('not found: try /metrics\n');
      return;
    }
    metrics.render().then(
      (body) => res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(body),
      (error: Error) => res.writeHead(500).end(`${error.message}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}
