import { resolve } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { STOWAGE_VERSION, startAgent } from '../agent/agent.js';
import { loadAgentConfig, parseAgentConfig } from '../agent/config.js';
import { identityPath, readIdentity } from '../agent/identity.js';
import { startDevCluster } from '../agent/dev-cluster.js';
import { loadControlConfig, parseControlConfig } from '../control/config.js';
import { startControl } from '../control/control.js';
import { isStowageError } from '../errors.js';
import { defaultControlNames, hasClusterCa, initCluster, readCa } from '../cluster/tls-files.js';
import { writeClientCert } from '../cluster/client-cert.js';

function integer(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('expected a non-negative integer');
  return n;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function label(value: string, previous: Record<string, string>): Record<string, string> {
  const eq = value.indexOf('=');
  if (eq <= 0) throw new InvalidArgumentError('expected key=value');
  return { ...previous, [value.slice(0, eq)]: value.slice(eq + 1) };
}

function stopOnSignal(close: () => Promise<void>): void {
  const stop = (): void => {
    void close().finally(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

interface AgentFlags {
  config?: string;
  dataDir: string;
  peerPort: number;
  peerHost: string;
  dockerPort?: number;
  dockerHost: string;
  dockerTlsverify?: boolean;
  insecureRegistry: string[];
  controlUrl?: string;
  joinToken?: string;
  name?: string;
  label: Record<string, string>;
  scalingGroup?: string;
  advertiseUrl?: string;
  maxTransferRate?: number;
  standalone?: boolean;
  runtime: string;
  containerdSocket: string;
  containerdNamespace: string;
  containerdSnapshotter: string;
  dockerSocket: string;
  mirrorPort?: number;
  mirrorUpstream?: string;
  metricsTokenFile?: string;
}

const program = new Command('stowd').description('Stowage daemons').version(STOWAGE_VERSION);

program
  .command('agent')
  .description("run one machine's agent: image store, /v2/ peer endpoint, Docker Engine API")
  .option('-c, --config <file>', 'agent configuration file (JSON)')
  .option('--data-dir <dir>', 'data directory', '.stowage/agent')
  .option('--peer-port <port>', 'port of the /v2/ endpoint', integer, 5080)
  .option('--docker-port <port>', 'also serve the Docker Engine API on this TCP port', integer)
  .option('--docker-host <address>', 'address the Docker Engine API TCP port binds (beyond loopback only with --docker-tlsverify)', '127.0.0.1')
  .option('--docker-tlsverify', 'the Docker Engine API over TCP speaks TLS and takes only clients with a certificate from the cluster CA (stowd client-cert), as dockerd --tlsverify')
  .option('--insecure-registry <host>', 'registry reached over plain HTTP (repeatable)', collect, [])
  .option('--control-url <url>', 'control plane to join and report to')
  .option('--join-token <token>', 'join token for the first join (or STOWAGE_JOIN_TOKEN)')
  .option('--name <name>', 'requested machine ID')
  .option('--label <key=value>', 'machine label (repeatable)', label, {})
  .option('--scaling-group <name>', 'scaling group of this machine')
  .option('--advertise-url <url>', 'URL peers and the control plane reach this agent at (default: the /v2/ address)')
  .option('--peer-host <host>', 'address the /v2/ endpoint binds', '127.0.0.1')
  .option('--max-transfer-rate <bytes/s>', 'cap on the bytes per second transfers download', integer)
  .option('--standalone', 'run without a control plane even though this data directory joined one')
  .option('--runtime <kind>', 'where images land: none (Stowage\'s own store), containerd, or docker (Docker Engine / Podman API)', 'none')
  .option('--containerd-socket <path>', "containerd's gRPC socket", '/run/containerd/containerd.sock')
  .option('--containerd-namespace <ns>', 'containerd namespace images land in (k8s.io: where the kubelet looks)', 'k8s.io')
  .option('--containerd-snapshotter <name>', 'snapshotter images are unpacked into', 'overlayfs')
  .option('--docker-socket <path>', 'socket of the Docker Engine or Podman service (--runtime docker)', '/var/run/docker.sock')
  .option('--mirror-port <port>', "serve a pull-through registry mirror for this machine's runtime on this loopback port", integer)
  .option('--mirror-upstream <host>', 'registry the mirror asks when a request names none (containerd names it with ?ns=)', 'docker.io')
  .option('--metrics-token-file <file>', 'file holding a token that may read GET /metrics (besides the machine secret)')
  .action(async (opts: AgentFlags, command: Command) => {
    if (opts.config) {
      // One source of truth: flags given beside a configuration file would be silently ignored.
      const clashing = [
        'dataDir',
        'peerPort',
        'dockerPort',
        'dockerHost',
        'dockerTlsverify',
        'insecureRegistry',
        'controlUrl',
        'name',
        'label',
        'scalingGroup',
        'advertiseUrl',
        'peerHost',
        'maxTransferRate',
        'runtime',
        'containerdSocket',
        'containerdNamespace',
        'containerdSnapshotter',
        'dockerSocket',
        'mirrorPort',
        'mirrorUpstream',
        'metricsTokenFile',
      ].filter((name) => command.getOptionValueSource(name) === 'cli');
      if (clashing.length > 0) {
        const flags = clashing.map((name) => `--${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`).join(', ');
        command.error(`stowd agent: ${flags} cannot be combined with --config; set them in the configuration file`, { exitCode: 2 });
      }
    }
    // The join token is a secret: the environment keeps it out of `ps`; it also fills in a config file's.
    const joinToken = opts.joinToken ?? process.env['STOWAGE_JOIN_TOKEN'];
    if (!opts.config && opts.controlUrl === undefined && opts.joinToken !== undefined) {
      command.error('stowd agent: --join-token needs --control-url', { exitCode: 2 });
    }
    const base = {
      dataDir: opts.dataDir,
      peer: { host: opts.peerHost, port: opts.peerPort },
      engine: opts.dockerPort === undefined ? {} : { tcp: { host: opts.dockerHost, port: opts.dockerPort, ...(opts.dockerTlsverify ? { tlsVerify: true } : {}) } },
      registries: { insecureRegistries: opts.insecureRegistry, searchRegistries: opts.insecureRegistry },
      ...(opts.controlUrl === undefined
        ? {}
        : {
            control: {
              url: opts.controlUrl,
              ...(joinToken ? { joinToken } : {}),
              ...(opts.name ? { name: opts.name } : {}),
              labels: opts.label,
              ...(opts.scalingGroup ? { scalingGroup: opts.scalingGroup } : {}),
            },
          }),
      ...(opts.advertiseUrl ? { advertiseUrl: opts.advertiseUrl } : {}),
      ...(opts.maxTransferRate ? { transfer: { maxBytesPerSecond: opts.maxTransferRate } } : {}),
      ...(opts.mirrorPort === undefined ? {} : { mirror: { host: '127.0.0.1', port: opts.mirrorPort, defaultUpstream: opts.mirrorUpstream } }),
      ...(opts.metricsTokenFile ? { metrics: { tokenFile: opts.metricsTokenFile } } : {}),
      runtime: {
        kind: opts.runtime,
        containerd: { socket: opts.containerdSocket, namespace: opts.containerdNamespace, snapshotter: opts.containerdSnapshotter },
        docker: { socket: opts.dockerSocket },
      },
    };
    let config = opts.config ? await loadAgentConfig(opts.config) : parseAgentConfig(base);
    if (config.control && !config.control.joinToken && joinToken) config = { ...config, control: { ...config.control, joinToken } };
    if (!config.control && !opts.standalone) {
      // A machine that joined, restarted without its control plane, would drop out of the cluster unnoticed.
      const joined = await readIdentity(config.dataDir).catch(() => undefined);
      if (joined) {
        command.error(
          `stowd agent: ${identityPath(config.dataDir)} says this machine joined control plane ${joined.control_url} as ${joined.machine_id}; ` +
            `start it with --control-url ${joined.control_url} (or "control" in the configuration file), or pass --standalone to run without a control plane`,
          { exitCode: 2 },
        );
      }
    }
    const agent = await startAgent(config);
    console.log(`agent ready: /v2/ at ${agent.peerUrl}, Docker API at unix://${agent.engineSocket}${agent.engineTcp ? ` and ${agent.engineTcp}` : ''}${agent.mirrorUrl ? `, registry mirror at ${agent.mirrorUrl}` : ''}`);
    if (config.control) {
      const id = agent.machineId;
      console.log(id ? `machine ${id}, control plane ${config.control.url}` : `joining control plane ${config.control.url} (advertising ${agent.advertiseUrl})`);
    }
    stopOnSignal(() => agent.close());
  });

program
  .command('init')
  .description('create a cluster: its CA, the control plane\'s certificate and a join token that pins the CA')
  .option('--dir <dir>', "the control plane's data directory", '.stowage/control')
  .option('--san <name>', "a DNS name or IP address agents and clients reach the control plane at (repeatable; default localhost, 127.0.0.1, ::1 and this host's name)", collect, [])
  .action(async (opts: { dir: string; san: string[] }) => {
    const names = opts.san.length > 0 ? opts.san : defaultControlNames();
    const made = await initCluster(opts.dir, names);
    console.log(`cluster CA: ${made.caFile} (sha256 ${made.caFingerprint})`);
    console.log(`control-plane certificate for ${names.join(', ')}`);
    console.log(`join token in ${opts.dir}/join.token (it pins the CA): ${made.joinToken}`);
    console.log(`start the control plane with: stowd control --data-dir ${opts.dir}`);
  });

program
  .command('client-cert')
  .description('issue a TLS client certificate from the cluster CA (for the Docker API over tcp:// with --tlsverify)')
  .requiredOption('--user <name>', 'whom the certificate names')
  .requiredOption('--out <dir>', 'where to write ca.pem, cert.pem and key.pem (DOCKER_CERT_PATH)')
  .option('--dir <dir>', "the control plane's data directory (holds the CA)", '.stowage/control')
  .option('--days <n>', 'validity in days', integer, 365)
  .action(async (opts: { user: string; out: string; dir: string; days: number }) => {
    const ca = await readCa(opts.dir);
    await writeClientCert(ca, { user: opts.user, outDir: opts.out, lifetimeMs: Math.max(1, opts.days) * 24 * 3600 * 1000 });
    console.log(`client certificate for ${opts.user} in ${opts.out} (ca.pem, cert.pem, key.pem)`);
  });

program
  .command('control')
  .description('run the control plane: state, REST + GraphQL API, operations')
  .option('-c, --config <file>', 'control-plane configuration file (JSON)')
  .option('--data-dir <dir>', 'data directory', '.stowage/control')
  .option('--database <location>', 'state store: a SQLite file (default <data-dir>/control.db) or a postgres:// URL (or STOWAGE_DATABASE)')
  .option('--host <address>', 'address to listen on', '127.0.0.1')
  .option('--port <port>', 'port of the API', integer, 5070)
  .option('--insecure-http', 'serve plain HTTP (without it: HTTPS with the certificates `stowd init` made)')
  .option('--machine-cert-lifetime <seconds>', 'lifetime of the machine certificates signed for agents (renewed at two thirds)', integer)
  .action(async (opts: { config?: string; dataDir: string; database?: string; host: string; port: number; insecureHttp?: boolean; machineCertLifetime?: number }, command: Command) => {
    if (opts.config) {
      const clashing = ['dataDir', 'database', 'host', 'port', 'machineCertLifetime'].filter((name) => command.getOptionValueSource(name) === 'cli');
      if (clashing.length > 0) {
        command.error('stowd control: --data-dir, --database, --host, --port and --machine-cert-lifetime cannot be combined with --config', { exitCode: 2 });
      }
    }
    // A URL with a password is better kept out of the process list: the environment may carry it instead.
    const database = opts.database ?? process.env['STOWAGE_DATABASE'];
    const joinToken = process.env['STOWAGE_JOIN_TOKEN'];
    let config = opts.config
      ? await loadControlConfig(opts.config)
      : parseControlConfig({
          dataDir: opts.dataDir,
          ...(database ? { database } : {}),
          listen: { host: opts.host, port: opts.port },
          ...(joinToken ? { joinToken } : {}),
          ...(opts.machineCertLifetime !== undefined ? { machineCertLifetimeSeconds: opts.machineCertLifetime } : {}),
        });
    if (opts.insecureHttp) config = { ...config, insecureHttp: true };
    // Plain HTTP only when asked for: secrets and tokens must not cross the network in clear by accident.
    if (!config.insecureHttp && !(await hasClusterCa(config.dataDir))) {
      command.error(
        `stowd control: ${config.dataDir} has no cluster CA: run \`stowd init --dir ${config.dataDir}\` first, or pass --insecure-http ("insecureHttp": true in a configuration file) to serve plain HTTP`,
        { exitCode: 2 },
      );
    }
    const control = await startControl(config);
    console.log(`control plane ready at ${control.url} (resumed ${control.resumed} unfinished operations)`);
    console.log(`admin token in ${config.dataDir}/admin.token, join token in ${config.dataDir}/join.token`);
    stopOnSignal(() => control.close());
  });

program
  .command('dev')
  .description('run a local cluster on loopback: a control plane and agents, data under one directory')
  .option('--data-dir <dir>', 'where the control plane and every agent keep their data', '.stowage/dev')
  .option('--agents <n>', 'number of agents', integer, 3)
  .option('--control-port <port>', 'port of the control plane', integer, 5070)
  .option('--base-port <port>', 'first agent port (each agent takes two)', integer, 5080)
  .option('--insecure-registry <host>', 'registry reached over plain HTTP (repeatable)', collect, [])
  .option('--runtime <kind>', 'none, or containerd / podman: each agent beside a runtime of its own (needs root)', 'none')
  .option('--tls', 'every link over TLS: a cluster CA under <data-dir>/control/tls, HTTPS control plane, mutual TLS between machines')
  .action(async (opts: { dataDir: string; agents: number; controlPort: number; basePort: number; insecureRegistry: string[]; runtime: string; tls?: boolean }, command: Command) => {
    if (!['none', 'containerd', 'podman'].includes(opts.runtime)) command.error(`stowd dev: --runtime must be none, containerd or podman, not "${opts.runtime}"`, { exitCode: 2 });
    const cluster = await startDevCluster({
      runtime: opts.runtime as 'none' | 'containerd' | 'podman',
      dataDir: opts.dataDir,
      agents: opts.agents,
      controlPort: opts.controlPort,
      basePort: opts.basePort,
      insecureRegistries: opts.insecureRegistry,
      tls: opts.tls === true,
    });
    console.log(`control plane: ${cluster.control.url}`);
    console.log(`dashboard: ${cluster.control.url}/ui/ (log in with the admin token below)`);
    for (const a of cluster.agents) {
      console.log(`${a.name}: DOCKER_HOST=${a.engineTcp}  /v2/ at ${a.peerUrl}  socket unix://${a.engineSocket}`);
      if (a.runtimeSocket && opts.runtime === 'containerd') console.log(`  containerd: ctr -a ${a.runtimeSocket} -n k8s.io images ls`);
      if (a.runtimeSocket && opts.runtime === 'podman') console.log(`  podman: podman --url unix://${a.runtimeSocket} images`);
    }
    console.log('\nTo use it from another shell:');
    console.log(`  export STOWAGE_HOST=${cluster.control.url}`);
    console.log(`  export STOWAGE_TOKEN=${cluster.control.adminToken}`);
    if (opts.tls) console.log(`  export STOWAGE_CACERT=${resolve(opts.dataDir, 'control', 'tls', 'ca.pem')}`);
    console.log(`  export DOCKER_HOST=${cluster.agents[0]?.engineTcp ?? ''}   # ${cluster.agents[0]?.name ?? ''}'s Docker API`);
    console.log('local cluster running; Ctrl-C stops it');
    stopOnSignal(() => cluster.close());
  });

program.parseAsync(process.argv).catch((err: unknown) => {
  if (isStowageError(err)) {
    console.error(`stowd: ${err.code}: ${err.message}`);
    process.exit(2);
  }
  console.error(`stowd: ${(err as Error).message}`);
  process.exit(1);
});
