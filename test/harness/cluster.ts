import { type ChildProcess, spawn } from 'node:child_process';
import { cp, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import type { Availability, Operation } from '../../src/control/wire.js';
import { type Balancer, startBalancer } from './balancer.js';
import { runOk } from './run.js';
import { controlDatabase } from './postgres.js';
import { freePort } from './registry.js';
import { tmpDir } from './tmp.js';

/**
 * A real cluster for end-to-end tests: `stowd control` and `stowd agent` as separate processes (so a
 * test can kill -9 one of them), on loopback ports, with data in a temp directory.
 *
 *   const cluster = await startCluster({ agents: 3 });
 *   cluster.agents[0].dockerHost   // tcp://127.0.0.1:…  for the docker CLI
 *   await cluster.stowctl(['image', 'status', '--json'])
 *   await cluster.killControl(); await cluster.startControl();
 *
 * Replicas (`balancer: true`, a PostgreSQL `database` in `control`): the control plane sits behind a TCP
 * load balancer (balancer.ts), agents and api() go through it, and startReplica() adds control planes on the
 * same database behind it.
 */

const STOWD = join(import.meta.dirname, '..', '..', 'bin', 'stowd.js');
const STOWCTL = join(import.meta.dirname, '..', '..', 'bin', 'stowctl.js');

export interface ClusterAgent {
  name: string;
  peerUrl: string;
  dockerHost: string;
  dataDir: string;
  process: ChildProcess;
}

/** Another control-plane replica on the cluster's database (startReplica). */
export interface ControlReplica {
  url: string;
  process: ChildProcess;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

export interface Cluster {
  /** Where agents, stowctl and api() reach the control plane: the balancer's URL with `balancer`, else the control plane's. */
  controlUrl: string;
  /** The first control plane's own URL (the same as controlUrl without a balancer). */
  replicaUrl: string;
  adminToken: string;
  joinToken: string;
  root: string;
  agents: ClusterAgent[];
  /** Calls the REST API as the superadmin. */
  api<T = unknown>(method: 'GET' | 'POST' | 'PUT', path: string, body?: unknown): Promise<{ status: number; body: T }>;
  /** Calls the REST API of one control plane (a replica's URL) as the superadmin. */
  apiAt<T = unknown>(baseUrl: string, method: 'GET' | 'POST' | 'PUT', path: string, body?: unknown): Promise<{ status: number; body: T }>;
  /**
   * Starts another control plane on the cluster's PostgreSQL database, with a copy of the first one's data
   * directory (the same secrets key, join token, admin token), behind the balancer.
   */
  startReplica(): Promise<ControlReplica>;
  stowctl(args: string[], opts?: { env?: Record<string, string>; input?: string }): Promise<{ code: number; stdout: string; stderr: string }>;
  /** Waits until the machine's reported inventory holds `digest` (or, with absent, does not). */
  waitForImage(machine: string, digest: string, opts?: { absent?: boolean; timeoutMs?: number }): Promise<void>;
  /** `docker load` of a tar on an agent; resolves with the digest once the agent has reported `reference`. */
  loadImage(agent: string, tar: string, reference: string): Promise<string>;
  /** The operation once it has ended (polled through the REST API, across control-plane restarts). */
  settle(operationId: string, timeoutMs?: number): Promise<Operation>;
  /** The running control-plane process (e.g. to read its memory from /proc). */
  controlProcess(): ChildProcess | undefined;
  killControl(signal?: NodeJS.Signals): Promise<void>;
  /**
   * Starts the control plane again; resolves once the agents in `waitFor` (default: every agent process
   * still running) are online to it.
   */
  startControl(opts?: { waitFor?: string[] }): Promise<void>;
  killAgent(name: string, signal?: NodeJS.Signals): Promise<void>;
  startAgent(name: string): Promise<ClusterAgent>;
  close(): Promise<void>;
}

export interface ClusterOptions {
  agents: number;
  /** Bytes per second each agent downloads at most (makes transfers slow on purpose). */
  maxTransferRate?: number;
  heartbeatIntervalMs?: number;
  offlineAfterMs?: number;
  /** Scaling group of agent i (default "default"). */
  scalingGroups?: string[];
  /** Labels of agent i. */
  labels?: Array<Record<string, string>>;
  /** More `stowd agent` flags for agent i (e.g. its runtime). */
  agentArgs?: (index: number) => string[];
  /** Runs once before agent i first starts, e.g. to mount a small tmpfs at its data directory. */
  prepareAgentDataDir?: (index: number, dataDir: string) => Promise<void>;
  /** More control-plane configuration (e.g. seed), merged into the generated file. */
  control?: Record<string, unknown>;
  /** Puts the control plane behind a TCP load balancer (for replicas: see startReplica). */
  balancer?: boolean;
  /** Where the cluster's temp directory (every data directory) is made; default the OS temp dir. */
  tmpParent?: string;
  /** Node flags for every daemon (e.g. --cpu-prof for a benchmark's profile). */
  nodeArgs?: string[];
}

/**
 * Polls `probe` until it returns a value. A probe that throws counts as "not yet": the daemon it asks may
 * be restarting.
 */
export async function until<T>(what: string, probe: () => Promise<T | undefined>, opts: { timeoutMs?: number; everyMs?: number } = {}): Promise<T> {
  const end = Date.now() + (opts.timeoutMs ?? 120_000);
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch {
      // not yet
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((res) => setTimeout(res, opts.everyMs ?? 100));
  }
}

const ENDED = ['succeeded', 'partially_failed', 'failed', 'cancelled'];

/**
 * Deadlines are for hangs, not for speed: on a loaded 2-core machine running two suites side by side a
 * daemon can take a minute to start (TypeScript compiled on the fly) and a report many seconds to land.
 */
const DAEMON_START_MS = 180_000;
const JOIN_MS = 180_000;
const REPORT_MS = 120_000;

/**
 * Spawns a daemon and resolves with the first stdout line matching `ready` (rejects if it exits first). A
 * daemon restarted on its old port may find it still taken for a moment (by another test's connection):
 * that start is tried again until the deadline.
 */
async function spawnDaemon(args: string[], ready: RegExp, env: Record<string, string> = {}, nodeArgs: string[] = []): Promise<{ child: ChildProcess; match: RegExpExecArray }> {
  const end = Date.now() + DAEMON_START_MS;
  for (;;) {
    try {
      return await spawnDaemonOnce(args, ready, env, nodeArgs);
    } catch (err) {
      if (!/EADDRINUSE/.test((err as Error).message) || Date.now() > end) throw err;
      await new Promise((res) => setTimeout(res, 1000));
    }
  }
}

function spawnDaemonOnce(args: string[], ready: RegExp, env: Record<string, string>, nodeArgs: string[]): Promise<{ child: ChildProcess; match: RegExpExecArray }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...nodeArgs, STOWD, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`stowd ${args[0]} did not start in time: ${err}`));
    }, DAEMON_START_MS);
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const m = ready.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ child, match: m });
      }
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      err += chunk.toString();
      if (process.env['STOWAGE_TEST_DEBUG']) process.stderr.write(chunk);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`stowd ${args[0]} exited with ${code}: ${err}`));
    });
  });
}

/** A standalone `stowd agent` process (no control plane): /v2/ read-only and anonymous, the Docker API on a loopback port. */
export interface StandaloneAgent {
  peerUrl: string;
  dockerHost: string;
  dataDir: string;
  close(): Promise<void>;
}

export async function startStandaloneAgent(extraArgs: string[] = []): Promise<StandaloneAgent> {
  const dataDir = await tmpDir('stowage-standalone-');
  const peer = await freePort();
  const docker = await freePort();
  const { child } = await spawnDaemon(['agent', '--data-dir', dataDir, '--peer-port', String(peer), '--docker-port', String(docker), ...extraArgs], /agent ready/);
  return {
    peerUrl: `http://127.0.0.1:${peer}`,
    dockerHost: `tcp://127.0.0.1:${docker}`,
    dataDir,
    async close() {
      child.kill('SIGKILL');
      await exited(child);
    },
  };
}

function exited(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
}

export async function startCluster(opts: ClusterOptions): Promise<Cluster> {
  const root = await tmpDir('stowage-cluster-', opts.tmpParent);
  const controlPort = await freePort();
  const controlDir = join(root, 'control');
  const replicaUrl = `http://127.0.0.1:${controlPort}`;
  const balancer: Balancer | undefined = opts.balancer ? await startBalancer([`127.0.0.1:${controlPort}`]) : undefined;
  const controlUrl = balancer?.url ?? replicaUrl;
  const heartbeat = opts.heartbeatIntervalMs ?? 500;
  const controlConfig = join(root, 'control.json');
  const { writeFile } = await import('node:fs/promises');
  const controlSettings = {
      dataDir: controlDir,
      // In the control-postgres project, the state lives in a fresh PostgreSQL database (kept across restarts).
      ...(await controlDatabase()),
      listen: { host: '127.0.0.1', port: controlPort },
      insecureHttp: true,
      heartbeatIntervalMs: heartbeat,
      offlineAfterMs: opts.offlineAfterMs ?? heartbeat * 4,
      ...opts.control,
  };
  await writeFile(controlConfig, JSON.stringify(controlSettings));
  let control: ChildProcess | undefined;
  const children = new Set<ChildProcess>();

  const startControlProcess = async (): Promise<void> => {
    const { child } = await spawnDaemon(['control', '--config', controlConfig], /control plane ready at (\S+)/, {}, opts.nodeArgs);
    control = child;
    children.add(child);
  };
  await startControlProcess();
  const adminToken = (await readFile(join(controlDir, 'admin.token'), 'utf8')).trim();
  const joinToken = (await readFile(join(controlDir, 'join.token'), 'utf8')).trim();

  const agents: ClusterAgent[] = [];
  const agentPorts = new Map<string, { peer: number; docker: number }>();

  const apiAt = async <T>(baseUrl: string, method: 'GET' | 'POST' | 'PUT', path: string, body?: unknown): Promise<{ status: number; body: T }> => {
    const res = await request(`${baseUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${adminToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.body.text();
    return { status: res.statusCode, body: (text ? JSON.parse(text) : undefined) as T };
  };
  const api = <T>(method: 'GET' | 'POST' | 'PUT', path: string, body?: unknown) => apiAt<T>(controlUrl, method, path, body);
  let replicas = 0;
  const startReplica = async (): Promise<ControlReplica> => {
    if (!String(controlSettings.database ?? '').startsWith('postgres')) throw new Error('replicas share a PostgreSQL database: pass control.database');
    const n = ++replicas + 1;
    const port = await freePort();
    const dataDir = join(root, `control-${n}`);
    // What replicas must share (secrets.key, join.token, admin.token, the TLS files) comes with the copy.
    await cp(controlDir, dataDir, { recursive: true });
    const config = join(root, `control-${n}.json`);
    await writeFile(config, JSON.stringify({ ...controlSettings, dataDir, listen: { host: '127.0.0.1', port } }));
    const { child } = await spawnDaemon(['control', '--config', config], /control plane ready at (\S+)/, {}, opts.nodeArgs);
    children.add(child);
    if (balancer) balancer.backends = [...balancer.backends, `127.0.0.1:${port}`];
    return {
      url: `http://127.0.0.1:${port}`,
      process: child,
      async kill(signal = 'SIGKILL') {
        child.kill(signal);
        await exited(child);
      },
    };
  };
  /**
   * A restarted control plane calls a machine `unknown` until it is heard from again (and chooses it for
   * nothing meanwhile): like an operator, tests go on once every agent that runs has called in.
   */
  const restartControlProcess = async (o: { waitFor?: string[] } = {}): Promise<void> => {
    await startControlProcess();
    const running = o.waitFor ?? agents.filter((a) => a.process.exitCode === null && a.process.signalCode === null).map((a) => a.name);
    await until(
      `${running.join(', ')} to call in after the restart`,
      async () => {
        const r = await api<{ machines: Array<{ id: string; status: string }> }>('GET', '/api/v1/machines');
        const online = new Set(r.body.machines.filter((m) => m.status === 'online').map((m) => m.id));
        return r.status === 200 && running.every((name) => online.has(name)) ? true : undefined;
      },
      { timeoutMs: JOIN_MS },
    );
  };

  const startAgentProcess = async (name: string): Promise<ClusterAgent> => {
    const dataDir = join(root, name);
    const index = Number(name.slice('agent-'.length)) - 1;
    let ports = agentPorts.get(name);
    if (!ports) {
      ports = { peer: await freePort(), docker: await freePort() };
      agentPorts.set(name, ports);
      await opts.prepareAgentDataDir?.(index, dataDir);
    }
    const args = ['agent', '--data-dir', dataDir, '--peer-port', String(ports.peer), '--docker-port', String(ports.docker)];
    args.push('--control-url', controlUrl, '--join-token', joinToken, '--name', name, '--scaling-group', opts.scalingGroups?.[index] ?? 'default');
    for (const [k, v] of Object.entries(opts.labels?.[index] ?? {})) args.push('--label', `${k}=${v}`);
    if (opts.maxTransferRate) args.push('--max-transfer-rate', String(opts.maxTransferRate));
    args.push(...(opts.agentArgs?.(index) ?? []));
    const { child } = await spawnDaemon(args, /agent ready/, {}, opts.nodeArgs);
    children.add(child);
    const agent: ClusterAgent = { name, peerUrl: `http://127.0.0.1:${ports.peer}`, dockerHost: `tcp://127.0.0.1:${ports.docker}`, dataDir, process: child };
    const i = agents.findIndex((a) => a.name === name);
    if (i >= 0) agents[i] = agent;
    else agents.push(agent);
    return agent;
  };

  const cluster: Cluster = {
    controlUrl,
    replicaUrl,
    adminToken,
    joinToken,
    root,
    agents,
    api,
    apiAt,
    startReplica,
    async stowctl(args, o = {}) {
      return new Promise((resolve) => {
        const child = spawn(process.execPath, [STOWCTL, ...args], {
          env: { ...process.env, STOWAGE_HOST: controlUrl, STOWAGE_TOKEN: adminToken, ...o.env },
          stdio: ['pipe', 'pipe', 'pipe'],
        });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
        child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
        child.stdin.end(o.input);
        child.once('exit', (code) => resolve({ code: code ?? 1, stdout, stderr }));
      });
    },
    async waitForImage(machine, digest, o = {}) {
      await until(
        `${machine} ${o.absent ? 'to drop' : 'to hold'} ${digest}`,
        async () => {
          const r = await api<{ records: Availability[] }>('GET', `/api/v1/images/status?digest=${digest}&machine=${machine}`);
          const present = r.status === 200 && r.body.records.some((x) => x.presence.state === 'present');
          return present !== (o.absent === true) ? true : undefined;
        },
        { timeoutMs: o.timeoutMs ?? REPORT_MS },
      );
    },
    async loadImage(agent, tar, reference) {
      const host = agents.find((a) => a.name === agent)?.dockerHost;
      if (!host) throw new Error(`no agent ${agent}`);
      await runOk('docker', ['load', '-i', tar], { env: { DOCKER_HOST: host } });
      return until(
        `${agent} to report ${reference}`,
        async () => {
          const r = await api<{ records: Availability[] }>('GET', `/api/v1/images/status?machine=${agent}`);
          return r.body.records.find((x) => x.references.includes(reference))?.digest;
        },
        { timeoutMs: REPORT_MS },
      );
    },
    settle(operationId, timeoutMs = 240_000) {
      return until(
        `operation ${operationId} to end`,
        async () => {
          const r = await api<{ operation: Operation }>('GET', `/api/v1/operations/${operationId}`);
          return ENDED.includes(r.body.operation.status) ? r.body.operation : undefined;
        },
        { timeoutMs, everyMs: 50 },
      );
    },
    controlProcess: () => control,
    async killControl(signal = 'SIGKILL') {
      if (!control) return;
      const c = control;
      control = undefined;
      c.kill(signal);
      await exited(c);
    },
    startControl: restartControlProcess,
    async killAgent(name, signal = 'SIGKILL') {
      const agent = agents.find((a) => a.name === name);
      if (!agent) throw new Error(`no agent ${name}`);
      agent.process.kill(signal);
      await exited(agent.process);
    },
    startAgent: startAgentProcess,
    async close() {
      for (const child of children) child.kill('SIGKILL');
      await Promise.all([...children].map(exited));
      await balancer?.close();
    },
  };
  try {
    for (let i = 0; i < opts.agents; i++) await startAgentProcess(`agent-${i + 1}`);
    // Every agent has joined and been heard from.
    await until(
      `all ${opts.agents} agents to join`,
      async () => {
        const r = await api<{ machines: Array<{ status: string }> }>('GET', '/api/v1/machines');
        return r.status === 200 && r.body.machines.filter((m) => m.status === 'online').length >= opts.agents ? true : undefined;
      },
      { timeoutMs: JOIN_MS },
    );
  } catch (err) {
    await cluster.close();
    throw err;
  }
  return cluster;
}
