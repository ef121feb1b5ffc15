import { Command, InvalidArgumentError } from 'commander';
import { STOWAGE_VERSION, startAgent } from '../agent/agent.js';
import { loadAgentConfig, parseAgentConfig } from '../agent/config.js';
import { startDevCluster } from '../agent/dev-cluster.js';
import { isStowageError } from '../errors.js';

function integer(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('expected a non-negative integer');
  return n;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function stopOnSignal(close: () => Promise<void>): void {
  const stop = (): void => {
    void close().finally(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

const program = new Command('stowd').description('Stowage daemons').version(STOWAGE_VERSION);

program
  .command('agent')
  .description("run one machine's agent: image store, /v2/ peer endpoint, Docker Engine API")
  .option('-c, --config <file>', 'agent configuration file (JSON)')
  .option('--data-dir <dir>', 'data directory', '.stowage/agent')
  .option('--peer-port <port>', 'port of the /v2/ endpoint', integer, 5080)
  .option('--docker-port <port>', 'also serve the Docker Engine API on this loopback TCP port', integer)
  .option('--insecure-registry <host>', 'registry reached over plain HTTP (repeatable)', collect, [])
  .action(async (opts: { config?: string; dataDir: string; peerPort: number; dockerPort?: number; insecureRegistry: string[] }, command: Command) => {
    if (opts.config) {
      // One source of truth: flags given beside a configuration file would be silently ignored.
      const clashing = ['dataDir', 'peerPort', 'dockerPort', 'insecureRegistry'].filter((name) => command.getOptionValueSource(name) === 'cli');
      if (clashing.length > 0) {
        const flags = clashing.map((name) => `--${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`).join(', ');
        command.error(`stowd agent: ${flags} cannot be combined with --config; set them in the configuration file`, { exitCode: 2 });
      }
    }
    const base = {
      dataDir: opts.dataDir,
      peer: { host: '127.0.0.1', port: opts.peerPort },
      engine: opts.dockerPort === undefined ? {} : { tcp: { host: '127.0.0.1', port: opts.dockerPort } },
      registries: { insecureRegistries: opts.insecureRegistry, searchRegistries: opts.insecureRegistry },
    };
    const config = opts.config ? await loadAgentConfig(opts.config) : parseAgentConfig(base);
    const agent = await startAgent(config);
    console.log(`agent ready: /v2/ at ${agent.peerUrl}, Docker API at unix://${agent.engineSocket}${agent.engineTcp ? ` and ${agent.engineTcp}` : ''}`);
    stopOnSignal(() => agent.close());
  });

program
  .command('dev')
  .description('run a local cluster on loopback for trying Stowage out')
  .option('--data-dir <dir>', 'where every agent keeps its data', '.stowage/dev')
  .option('--agents <n>', 'number of agents', integer, 2)
  .option('--base-port <port>', 'first port (each agent takes two)', integer, 5080)
  .option('--insecure-registry <host>', 'registry reached over plain HTTP (repeatable)', collect, [])
  .action(async (opts: { dataDir: string; agents: number; basePort: number; insecureRegistry: string[] }) => {
    const cluster = await startDevCluster({
      dataDir: opts.dataDir,
      agents: opts.agents,
      basePort: opts.basePort,
      insecureRegistries: opts.insecureRegistry,
    });
    for (const a of cluster.agents) {
      console.log(`${a.name}: DOCKER_HOST=${a.engineTcp}  /v2/ at ${a.peerUrl}  socket unix://${a.engineSocket}`);
    }
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
