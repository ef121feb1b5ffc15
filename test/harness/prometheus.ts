import { request } from 'undici';

/** One sample of a Prometheus text exposition: name, labels, value. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the text format (comments skipped; label values unescaped for \\ \" \n). */
export function parsePrometheus(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) throw new Error(`not a Prometheus sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1] as string] = (l[2] as string).replace(/\\n/g, '\n').replace(/\\(["\\])/g, '$1');
    }
    out.push({ name: m[1] as string, labels, value: Number(m[3]) });
  }
  return out;
}

/** The value of the sample `name` whose labels include `labels`, or 0 when no such series exists yet. */
export function valueOf(samples: readonly Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  return found.reduce((sum, s) => sum + s.value, 0);
}

/** GET <base>/metrics with an optional bearer token: the status and, on 200, the samples. */
export async function scrape(base: string, token?: string): Promise<{ status: number; contentType: string; samples: Sample[] }> {
  const res = await request(`${base}/metrics`, { headers: token === undefined ? {} : { authorization: `Bearer ${token}` } });
  const text = await res.body.text();
  const contentType = String(res.headers['content-type'] ?? '');
  return { status: res.statusCode, contentType, samples: res.statusCode === 200 ? parsePrometheus(text) : [] };
}
