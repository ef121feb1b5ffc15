import { sql } from 'kysely';
import type { Logger } from 'pino';
import type { AgentsClient } from '../agents-client.js';
import { type Db, registerMigrations } from '../db/database.js';
import type { MachineRecord } from '../machines.js';
import type { RevokedTokens } from '../peer-token.js';

registerMigrations([
  {
    id: '0910-revoked-tokens',
    sql: `CREATE TABLE revoked_tokens (kind TEXT NOT NULL, id TEXT NOT NULL, until_ms INTEGER NOT NULL, PRIMARY KEY (kind, id));`,
  },
]);

/** How long a revoke waits for each agent to confirm before answering (the heartbeat answer repeats it). */
const PUSH_TIMEOUT_MS = 5_000;

type Kind = 'key' | 'operation';

/**
 * Tokens the agents must refuse though their signature holds: those issued for a revoked API key and the
 * peer grants of an ended operation. Agents check tokens on their own, so each revocation is pushed to
 * every online agent at once (POST /agent/v1/revocations) and repeated in the answers to their reports
 * (full inventory, heartbeat), for agents that were away or restarted. Kept in the database until the
 * tokens they refuse have expired, so a restarted control plane still hands them out.
 */
export class Revocations {
  private readonly entries: Record<Kind, Map<string, number>> = { key: new Map(), operation: new Map() };

  constructor(
    private readonly db: Db,
    private readonly agents: AgentsClient,
    private readonly onlineMachines: () => Promise<MachineRecord[]>,
    private readonly log: Logger,
    /** How long a revocation is kept: longer than any token it refuses can live. */
    private readonly keepMs: number,
  ) {}

  /** Told of each revocation written to the database (other replicas read it then: replicas/relay.ts). */
  onRecorded: (() => void) | undefined;

  /** Reads the revocations still in force (at start, and when another replica recorded one). */
  async load(): Promise<void> {
    const rows = await this.db.all<{ kind: Kind; id: string; until_ms: number }>(sql`SELECT kind, id, until_ms FROM revoked_tokens WHERE until_ms > ${Date.now()}`);
    for (const r of rows) this.entries[r.kind]?.set(r.id, Number(r.until_ms));
  }

  /** Revokes the tokens of an API key on every online agent; resolves once they confirmed (or timed out). */
  async revokeKey(keyId: string): Promise<void> {
    await this.record('key', keyId);
    await this.push({ keys: [keyId], operations: [] });
  }

  /** Revokes the peer grants of an operation that ended. */
  async revokeOperation(operationId: string): Promise<void> {
    await this.record('operation', operationId);
    await this.push({ keys: [], operations: [operationId] });
  }

  /** Everything still revoked, for the answers to agents' reports. */
  active(now = Date.now()): RevokedTokens {
    for (const m of Object.values(this.entries)) for (const [id, until] of m) if (until <= now) m.delete(id);
    return { keys: [...this.entries.key.keys()], operations: [...this.entries.operation.keys()] };
  }

  private async record(kind: Kind, id: string): Promise<void> {
    const now = Date.now();
    const until = now + this.keepMs;
    // In force at once (in memory), before the database has it.
    this.entries[kind].set(id, until);
    try {
      await this.db.run(
        sql`INSERT INTO revoked_tokens (kind, id, until_ms) VALUES (${kind}, ${id}, ${until}) ON CONFLICT (kind, id) DO UPDATE SET until_ms = excluded.until_ms`,
      );
      await this.db.run(sql`DELETE FROM revoked_tokens WHERE until_ms <= ${now}`);
      this.onRecorded?.();
    } catch (err) {
      // In force all the same (memory, and the agents told now); only a restart before expiry forgets it.
      this.log.warn({ err, kind, id }, 'a revocation could not be written to the database');
    }
  }

  private async push(tokens: RevokedTokens): Promise<void> {
    await Promise.all(
      (await this.onlineMachines()).map(async (machine) => {
        try {
          await this.agents.revoke(machine, tokens, AbortSignal.timeout(PUSH_TIMEOUT_MS));
        } catch (err) {
          // Its next report's answer carries the revocation.
          this.log.warn({ err, machine_id: machine.id }, 'an agent was not told of a revocation at once');
        }
      }),
    );
  }
}
