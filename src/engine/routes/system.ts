import { cpus, hostname, release, totalmem } from 'node:os';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { EngineContext } from '../context.js';
import { inventory } from '../resolve.js';

/** GET/HEAD /_ping, GET /version, GET /info. */

export const API_VERSION = '1.41';
export const MIN_API_VERSION = '1.12';

/** Go's GOARCH for this machine. */
export function goArch(): string {
  switch (process.arch) {
    case 'x64':
      return 'amd64';
    case 'ia32':
      return '386';
    case 'ppc64':
      return 'ppc64le';
    default:
      return process.arch;
  }
}

function pingHeaders(reply: FastifyReply): FastifyReply {
  return reply
    .header('API-Version', API_VERSION)
    .header('OSType', 'linux')
    .header('Docker-Experimental', 'false')
    .header('Builder-Version', '1')
    .header('Cache-Control', 'no-cache, no-store, must-revalidate')
    .header('Pragma', 'no-cache');
}

/** CIDR-looking entries of the insecure registry list. */
function isCidr(s: string): boolean {
  return /^[0-9.]+\/\d+$/.test(s) || /^[0-9a-fA-F:]+\/\d+$/.test(s);
}

export function register(app: FastifyInstance, ctx: EngineContext): void {
  app.get('/_ping', { exposeHeadRoute: false }, async (_request, reply) => pingHeaders(reply).type('text/plain; charset=utf-8').send('OK'));
  app.head('/_ping', async (_request, reply) => pingHeaders(reply).type('text/plain; charset=utf-8').header('content-length', '0').send());

  app.get('/version', async (_request, reply) => {
    const arch = goArch();
    const body = {
      Platform: { Name: 'Stowage' },
      Components: [
        {
          Name: 'Engine',
          Version: ctx.version,
          Details: {
            ApiVersion: API_VERSION,
            Arch: arch,
            BuildTime: '',
            Experimental: 'false',
            GitCommit: '',
            GoVersion: `node${process.versions.node}`,
            KernelVersion: release(),
            MinAPIVersion: MIN_API_VERSION,
            Os: 'linux',
          },
        },
      ],
      Version: ctx.version,
      ApiVersion: API_VERSION,
      MinAPIVersion: MIN_API_VERSION,
      GitCommit: '',
      GoVersion: `node${process.versions.node}`,
      Os: 'linux',
      Arch: arch,
      KernelVersion: release(),
      BuildTime: '',
    };
    return reply.header('content-type', 'application/json').send(Buffer.from(JSON.stringify(body)));
  });

  app.get('/info', async (_request, reply) => {
    const inv = inventory(ctx.images);
    const insecure = ctx.registries.insecureRegistries;
    const cidrs = ['127.0.0.0/8', '::1/128', ...insecure.filter(isCidr)];
    const indexConfigs: Record<string, unknown> = {
      'docker.io': { Name: 'docker.io', Mirrors: [], Secure: true, Official: true },
    };
    for (const host of insecure.filter((h) => !isCidr(h))) {
      indexConfigs[host] = { Name: host, Mirrors: [], Secure: false, Official: false };
    }
    const body = {
      ID: `stowage:${hostname()}`,
      Containers: 0,
      ContainersRunning: 0,
      ContainersPaused: 0,
      ContainersStopped: 0,
      Images: inv.byId.size,
      Driver: 'stowage',
      DriverStatus: [['Root Dir', ctx.store.root]],
      Plugins: { Volume: [], Network: [], Authorization: null, Log: [] },
      MemoryLimit: false,
      SwapLimit: false,
      KernelMemory: false,
      KernelMemoryTCP: false,
      CpuCfsPeriod: false,
      CpuCfsQuota: false,
      CPUShares: false,
      CPUSet: false,
      PidsLimit: false,
      IPv4Forwarding: false,
      BridgeNfIptables: false,
      BridgeNfIp6tables: false,
      Debug: false,
      NFd: 0,
      OomKillDisable: false,
      NGoroutines: 0,
      SystemTime: new Date().toISOString(),
      LoggingDriver: 'none',
      CgroupDriver: 'none',
      CgroupVersion: '2',
      NEventsListener: 0,
      KernelVersion: release(),
      OperatingSystem: 'Stowage',
      OSVersion: '',
      OSType: 'linux',
      Architecture: goArch() === 'amd64' ? 'x86_64' : goArch() === 'arm64' ? 'aarch64' : goArch(),
      IndexServerAddress: 'https://index.docker.io/v1/',
      RegistryConfig: {
        AllowNondistributableArtifactsCIDRs: [],
        AllowNondistributableArtifactsHostnames: [],
        InsecureRegistryCIDRs: cidrs,
        IndexConfigs: indexConfigs,
        Mirrors: [],
      },
      NCPU: cpus().length,
      MemTotal: totalmem(),
      GenericResources: null,
      DockerRootDir: ctx.store.root,
      HttpProxy: '',
      HttpsProxy: '',
      NoProxy: '',
      Name: hostname(),
      Labels: [],
      ExperimentalBuild: false,
      ServerVersion: ctx.version,
      Runtimes: {},
      DefaultRuntime: '',
      Swarm: { NodeID: '', NodeAddr: '', LocalNodeState: 'inactive', ControlAvailable: false, Error: '', RemoteManagers: null },
      LiveRestoreEnabled: false,
      Isolation: '',
      InitBinary: '',
      ContainerdCommit: { ID: '', Expected: '' },
      RuncCommit: { ID: '', Expected: '' },
      InitCommit: { ID: '', Expected: '' },
      SecurityOptions: [],
      Warnings: null,
    };
    return reply.header('content-type', 'application/json').send(Buffer.from(JSON.stringify(body)));
  });
}
