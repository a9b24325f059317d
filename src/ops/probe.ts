// Container health probe (`node dist/ops/probe.js [listen]`): GETs /healthz on the local ops endpoint and exits
// 0 when it answers 200, 1 otherwise. Needs no curl/wget in the image.
import { pathToFileURL } from 'node:url';
import { parseListenAddress } from './listen.js';

/** The /healthz URL a probe inside the container should use for a listen address; null when disabled. */
export function probeUrl(listen: string): string | null {
  const addr = parseListenAddress(listen);
  if (addr === null) return null;
  const wildcard = addr.host === undefined || addr.host === '0.0.0.0' || addr.host === '::';
  const host = wildcard ? '127.0.0.1' : addr.host!.includes(':') ? `[${addr.host}]` : addr.host!;
  return `http://${host}:${addr.port}/healthz`;
}

/** Probes once; resolves to the exit code. */
export async function probe(listen: string, timeoutMs = 4_000): Promise<number> {
  let url: string | null;
  try {
    url = probeUrl(listen);
  } catch (err) {
    process.stderr.write(`probe: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
  if (url === null) {
    process.stderr.write('probe: the ops endpoint is off (healthListen: off); nothing to probe\n');
    return 1;
  }
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    await res.body?.cancel();
    if (res.status === 200) return 0;
    process.stderr.write(`probe: ${url} answered ${res.status}\n`);
    return 1;
  } catch (err) {
    process.stderr.write(`probe: ${url} failed: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}

const invokedDirectly = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (invokedDirectly) {
  const listen = process.argv[2] ?? process.env.PROVIDER_HEALTH_LISTEN ?? ':8080';
  process.exitCode = await probe(listen);
}
