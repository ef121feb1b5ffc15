import { type Socket, connect, createServer } from 'node:net';
import { freePort } from './registry.js';

/**
 * "Any load balancer" for tests of several control-plane replicas: a TCP proxy on a loopback port that
 * sends each new connection to the next backend in turn, and to the one after when a backend refuses
 * (it is down). A connection stays with its backend until either side closes it, as with any L4 balancer.
 */
export interface Balancer {
  url: string;
  /** Backends as host:port; may change while it runs (a replica added). */
  backends: string[];
  close(): Promise<void>;
}

export async function startBalancer(backends: string[]): Promise<Balancer> {
  const port = await freePort();
  const sockets = new Set<Socket>();
  let next = 0;
  const state: { backends: string[] } = { backends: [...backends] };

  const server = createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => client.destroy());
    client.pause();
    const tried = new Set<string>();
    const attempt = (): void => {
      const list = state.backends;
      const backend = list.length === 0 ? undefined : list[next++ % list.length];
      if (backend === undefined || tried.has(backend)) {
        client.destroy();
        return;
      }
      tried.add(backend);
      const [host, p] = backend.split(':') as [string, string];
      const upstream = connect({ host, port: Number(p) });
      let connected = false;
      upstream.once('connect', () => {
        connected = true;
        sockets.add(upstream);
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
      });
      upstream.on('error', () => {
        if (!connected) attempt();
        else client.destroy();
      });
      upstream.on('close', () => {
        sockets.delete(upstream);
        if (connected) client.destroy();
      });
      client.on('close', () => upstream.destroy());
    };
    attempt();
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${port}`,
    get backends() {
      return state.backends;
    },
    set backends(value: string[]) {
      state.backends = [...value];
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
