/**
 * A fault-injecting HTTP proxy for the tests: it sits between pgkeep (the agent, or a Lambda
 * handler) and a real S3-compatible server on 127.0.0.1, and on command
 *
 * - blackholes requests (accepts them, then never answers),
 * - resets the connection after N bytes of a request body,
 * - adds latency: before a request is forwarded, or to the first bytes of its answer, per method,
 * - paces body bytes, both directions, to a provider's throughput per connection,
 * - answers 500, 503 or S3's `SlowDown` for a share of requests (or `RequestTimeTooSkewed`, a clock
 *   S3 would refuse),
 * - truncates a response body after N bytes,
 * - flips a bit of a request body on its way (same length: only a body checksum can tell),
 * - adds headers to an answer (a provider's checksum, which s3rver does not compute).
 *
 * Which requests a fault hits is drawn from a seeded generator, so a failing run can be replayed
 * with the seed it printed. Counts of what was injected are kept for the test to report.
 */
import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { type Readable, Transform } from 'node:stream';

export interface Faults {
  /** Only requests whose method matches (e.g. `PUT`). @default - every method */
  readonly method?: string;
  /** Only requests whose path (with query) matches. @default - every path */
  readonly path?: RegExp;
  /** Share of matching requests hit by the fault, 0..1. @default 1 */
  readonly rate?: number;
  /** Accept the request and never answer. */
  readonly blackhole?: boolean;
  /** Destroy the client connection once this many request-body bytes have passed. */
  readonly resetAfterBodyBytes?: number;
  /** Delay before the request is forwarded, in ms. */
  readonly latencyMs?: number;
  /**
   * Delay the server's answer (its status line, so its first bytes) by this many ms, by request
   * method (`{ GET: 20, PUT: 30 }`): a provider's time to first byte. A method not named is not delayed.
   */
  readonly firstByteMs?: Readonly<Record<string, number>>;
  /**
   * Pace body bytes to this many a second, each direction (the request's body to the server, the
   * answer's to the client): a provider's throughput per connection. An HTTP/1.1 connection carries
   * one request at a time, so pacing each body paces the connection. @default - not paced
   */
  readonly bytesPerSecond?: number;
  /** Answer with this error instead of forwarding. */
  readonly error?: 500 | 503 | 'SlowDown' | 'RequestTimeTooSkewed';
  /** Forward the response's headers, then only this many body bytes, then close the connection. */
  readonly truncateResponseAfterBytes?: number;
  /** Flip the lowest bit of the request body's first byte on the way to the server. */
  readonly corruptRequestBody?: boolean;
  /** Add these headers to the server's answer (e.g. `x-amz-checksum-sha256`). */
  readonly responseHeaders?: Readonly<Record<string, string>>;
}

export interface FaultCounts {
  requests: number;
  /** ListObjects(V2) requests: a GET of a bucket (path style), not of an object. */
  lists: number;
  /** Milliseconds from forwarding a request to the end of its answer, summed: the server's share of a client's time. */
  upstreamMs: number;
  blackholed: number;
  resets: number;
  delayed: number;
  errors: number;
  truncated: number;
  corrupted: number;
}

export interface FaultProxy {
  /** `http://127.0.0.1:<port>`: give this to pgkeep instead of the server's endpoint. */
  readonly endpoint: string;
  readonly port: number;
  readonly seed: number;
  readonly counts: Readonly<FaultCounts>;
  /**
   * Requests by S3 operation, as a provider bills them: `HEAD`, `GET` (of an object), `LIST`,
   * `PUT` (PutObject, UploadPart), `POST` (Create/CompleteMultipartUpload), `DELETE`.
   */
  readonly operations: Readonly<Record<string, number>>;
  /** Replaces the faults in force; `{}` forwards everything untouched. */
  set(faults: Faults): void;
  /** Stops listening and destroys every connection, blackholed ones included. */
  stop(): Promise<void>;
}

/** mulberry32: small, fast, and the same sequence for the same seed on every machine. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * `body` passed on no faster than `bytesPerSecond`: each chunk waits until the bytes so far would
 * have taken that long from the first one, so the whole body takes at least size / rate. Timed
 * from the first chunk, not chunk by chunk, so timer lateness does not add up.
 */
function paced(body: Readable, bytesPerSecond: number | undefined): Readable {
  if (bytesPerSecond === undefined) return body;
  let started: number | undefined;
  let bytes = 0;
  const pacer = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      started ??= performance.now();
      bytes += chunk.length;
      const wait = started + (bytes / bytesPerSecond) * 1000 - performance.now();
      if (wait <= 0) done(null, chunk);
      else setTimeout(() => done(null, chunk), wait);
    },
  });
  // pipe() passes neither errors nor a cut-off source on: end the pacer too, or it waits forever.
  body.on('error', (error) => pacer.destroy(error));
  body.on('close', () => {
    if (!body.readableEnded) pacer.destroy();
  });
  return body.pipe(pacer);
}

function s3Error(res: ServerResponse, error: NonNullable<Faults['error']>): void {
  const [status, code, message] =
    error === 500
      ? [500, 'InternalError', 'We encountered an internal error. Please try again.']
      : error === 503
        ? [503, 'ServiceUnavailable', 'Service is unable to handle request.']
        : error === 'SlowDown'
          ? [503, 'SlowDown', 'Please reduce your request rate.']
          : [
              403,
              'RequestTimeTooSkewed',
              'The difference between the request time and the current time is too large.',
            ];
  const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message></Error>`;
  res.writeHead(status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** Starts the proxy on a free port of 127.0.0.1 in front of `target` (`http://127.0.0.1:PORT`). */
export async function startFaultProxy(target: string, seed = Date.now() % 2 ** 31): Promise<FaultProxy> {
  const upstream = new URL(target);
  if (upstream.hostname !== '127.0.0.1' && upstream.hostname !== 'localhost')
    throw new Error(`the fault proxy forwards only to loopback, not ${upstream.hostname}`);
  const random = seededRandom(seed);
  const counts: FaultCounts = {
    requests: 0,
    lists: 0,
    upstreamMs: 0,
    blackholed: 0,
    resets: 0,
    delayed: 0,
    errors: 0,
    truncated: 0,
    corrupted: 0,
  };
  const operations: Record<string, number> = {};
  const sockets = new Set<Socket>();
  let faults: Faults = {};

  const hits = (req: IncomingMessage): boolean => {
    if (faults.method !== undefined && req.method !== faults.method) return false;
    if (faults.path !== undefined && !faults.path.test(req.url ?? '')) return false;
    // Drawn for every matching request, hit or not, so the sequence depends only on the seed and
    // the order of requests.
    return random() < (faults.rate ?? 1);
  };

  const forward = (req: IncomingMessage, res: ServerResponse, active: Faults) => {
    const started = performance.now();
    res.on('close', () => {
      counts.upstreamMs += performance.now() - started;
    });
    const respond = (answer: IncomingMessage) => {
      res.writeHead(answer.statusCode ?? 502, { ...answer.headers, ...active.responseHeaders });
      const body = paced(answer, active.bytesPerSecond);
      const limit = active.truncateResponseAfterBytes;
      if (limit === undefined) {
        body.pipe(res);
        return;
      }
      counts.truncated++;
      let sent = 0;
      body.on('data', (chunk: Buffer) => {
        if (sent >= limit) return;
        const part = chunk.subarray(0, limit - sent);
        sent += part.length;
        res.write(part);
        if (sent >= limit) {
          answer.destroy();
          res.socket?.destroy();
        }
      });
      body.on('end', () => res.end());
    };
    const proxied = httpRequest(
      {
        host: upstream.hostname,
        port: upstream.port,
        method: req.method,
        path: req.url,
        headers: { ...req.headers, host: upstream.host },
      },
      (answer) => {
        const wait = active.firstByteMs?.[req.method ?? ''] ?? 0;
        if (wait > 0) {
          counts.delayed++;
          // Unread, the answer waits in its socket's buffers: nothing reaches the client early.
          setTimeout(() => respond(answer), wait);
        } else respond(answer);
      },
    );
    proxied.on('error', () => res.socket?.destroy());
    const body = paced(req, active.bytesPerSecond);
    if (active.corruptRequestBody) {
      let flipped = false;
      body.on('data', (chunk: Buffer) => {
        if (!flipped && chunk.length > 0) {
          flipped = true;
          counts.corrupted++;
          chunk[0] = (chunk[0] as number) ^ 1;
        }
        proxied.write(chunk);
      });
      body.on('end', () => proxied.end());
      return;
    }
    const resetAfter = active.resetAfterBodyBytes;
    if (resetAfter === undefined) {
      body.pipe(proxied);
      return;
    }
    let seen = 0;
    body.on('data', (chunk: Buffer) => {
      seen += chunk.length;
      if (seen > resetAfter) {
        counts.resets++;
        proxied.destroy();
        req.socket.resetAndDestroy();
        return;
      }
      proxied.write(chunk);
    });
    body.on('end', () => proxied.end());
  };

  const server = createServer((req, res) => {
    counts.requests++;
    const url = new URL(req.url ?? '/', 'http://proxy');
    const list =
      req.method === 'GET' && /^\/[^/]+\/?$/.test(url.pathname) && !url.searchParams.has('uploads');
    if (list) counts.lists++;
    const operation = list ? 'LIST' : (req.method ?? '?');
    operations[operation] = (operations[operation] ?? 0) + 1;
    const active = hits(req) ? faults : {};
    if (active.blackhole) {
      counts.blackholed++;
      req.resume();
      return;
    }
    if (active.error !== undefined) {
      counts.errors++;
      req.resume();
      req.on('end', () => s3Error(res, active.error as NonNullable<Faults['error']>));
      return;
    }
    if (active.latencyMs !== undefined && active.latencyMs > 0) {
      counts.delayed++;
      req.pause();
      setTimeout(() => forward(req, res, active), active.latencyMs);
      return;
    }
    forward(req, res, active);
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    seed,
    counts,
    operations,
    set(next) {
      faults = next;
    },
    async stop() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}
