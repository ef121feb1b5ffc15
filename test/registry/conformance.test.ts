import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MANIFEST_ACCEPT } from '../../src/oci/media-types.js';
import { type Cluster, type StandaloneAgent, startCluster, startStandaloneAgent } from '../harness/cluster.js';
import { makeImageTar } from '../harness/images.js';
import { run, runOk } from '../harness/run.js';
import { tmpDir } from '../harness/tmp.js';

/**
 * The OCI distribution-spec conformance suite (v1.1.1, compiled, unedited; see
 * ../shared/tools/oci-conformance/README.md) against real agent processes:
 *   - a joined agent, all four workflows, authenticated by the token flow as a domain admin (API key as the
 *     password; the suite's client follows the agent's Bearer challenge to the control plane's /token);
 *   - a standalone agent, pull, against content loaded through its Docker API.
 * Every workflow must report 0 failures. Without the suite binary the tests are skipped, loudly.
 */

const SUITE = process.env['OCI_CONFORMANCE_BIN'] ?? join(import.meta.dirname, '..', '..', '..', 'shared', 'tools', 'oci-conformance', 'conformance.test');
const present = existsSync(SUITE);
if (!present) console.warn(`\n!!! OCI CONFORMANCE SUITE NOT FOUND at ${SUITE}: the conformance tests are SKIPPED (set OCI_CONFORMANCE_BIN) !!!\n`);

interface SuiteResult {
  code: number;
  passed: number;
  failed: number;
  failures: string[];
  output: string;
}

const WORKFLOWS = ['PULL', 'PUSH', 'CONTENT_DISCOVERY', 'CONTENT_MANAGEMENT'] as const;

async function runSuite(rootUrl: string, namespace: string, env: Record<string, string>): Promise<SuiteResult> {
  const reportDir = await tmpDir('stowage-oci-report-');
  await mkdir(reportDir, { recursive: true });
  const r = await run(SUITE, ['-ginkgo.no-color'], { OCI_ROOT_URL: rootUrl, OCI_NAMESPACE: namespace, OCI_REPORT_DIR: reportDir, OCI_DEBUG: '0', ...env }, { timeoutMs: 300_000 });
  const output = r.stdout + r.stderr;
  const counts = /(\d+) Passed \| (\d+) Failed/.exec(output);
  const failures = [...new Set(output.split('\n').filter((l) => l.includes('[FAIL]')).map((l) => l.trim()))];
  return { code: r.code, passed: Number(counts?.[1] ?? 0), failed: Number(counts?.[2] ?? -1), failures, output };
}

function expectClean(r: SuiteResult): void {
  // The failing specs' names in the message, so a red run says what broke.
  // The first failure's own report (its request and answer) comes first: the summary at the end names it only.
  const first = r.output.indexOf('[FAILED]');
  const detail = first >= 0 ? `${r.output.slice(first, first + 3000)}\n…\n` : '';
  expect({ failed: r.failed, failures: r.failures, code: r.code }, detail + r.output.slice(-3000)).toEqual({ failed: 0, failures: [], code: 0 });
  expect(r.passed).toBeGreaterThan(0);
}

describe.skipIf(!present)('OCI conformance suite against a joined agent (token flow)', () => {
  let cluster: Cluster;
  let adminKey: string;

  beforeAll(async () => {
    cluster = await startCluster({
      agents: 1,
      control: {
        seed: {
          domains: [{ name: 'ci', allowed_registries: [] }],
          groups: [{ domain: 'ci', name: 'builders', allowed_scaling_groups: ['default'] }],
          users: [{ name: 'ci-admin', role: 'admin', domain: 'ci', groups: ['builders'] }],
        },
      },
    });
    adminKey = (await readFile(join(cluster.root, 'control', 'tokens', 'ci-admin.token'), 'utf8')).trim();
  }, 60_000);
  afterAll(async () => cluster?.close());

  for (const workflow of WORKFLOWS) {
    it(`${workflow.toLowerCase().replace('_', ' ')}: 0 failures`, async () => {
      const agent = cluster.agents[0]!;
      const r = await runSuite(agent.peerUrl, `conformance/${workflow.toLowerCase().replace('_', '-')}`, {
        OCI_USERNAME: 'ci-admin',
        OCI_PASSWORD: adminKey,
        [`OCI_TEST_${workflow}`]: '1',
      });
      expectClean(r);
    }, 320_000);
  }

  it('all four workflows in one run: 0 failures', async () => {
    const r = await runSuite(cluster.agents[0]!.peerUrl, 'conformance/all', {
      OCI_USERNAME: 'ci-admin',
      OCI_PASSWORD: adminKey,
      ...Object.fromEntries(WORKFLOWS.map((w) => [`OCI_TEST_${w}`, '1'])),
    });
    expectClean(r);
  }, 320_000);
});

describe.skipIf(!present)('OCI conformance suite against a standalone agent (pull)', () => {
  let agent: StandaloneAgent;
  let manifestDigest: string;
  let blobDigest: string;

  beforeAll(async () => {
    agent = await startStandaloneAgent();
    const { tar } = await makeImageTar('conformance/seeded:v1', { layers: 2, layerBytes: 64 * 1024 });
    await runOk('docker', ['load', '-i', tar], { env: { DOCKER_HOST: agent.dockerHost } });
    // What the agent serves for the tag (docker load records the archive's own manifest).
    const res = await request(`${agent.peerUrl}/v2/conformance/seeded/manifests/v1`, { headers: { accept: MANIFEST_ACCEPT } });
    expect(res.statusCode).toBe(200);
    manifestDigest = String(res.headers['docker-content-digest']);
    blobDigest = ((await res.body.json()) as { config: { digest: string } }).config.digest;
  }, 60_000);
  afterAll(async () => agent?.close());

  it('pull: 0 failures', async () => {
    const r = await runSuite(agent.peerUrl, 'conformance/seeded', {
      OCI_TEST_PULL: '1',
      OCI_TAG_NAME: 'v1',
      OCI_MANIFEST_DIGEST: manifestDigest,
      OCI_BLOB_DIGEST: blobDigest,
    });
    expectClean(r);
  }, 320_000);
});
