import type { Logger } from 'pino';
import type { AgentsClient } from '../agents-client.js';
import type { MachineRecord } from '../machines.js';
import type { RevokedTokens } from '../peer-token.js';

/** How long a revoke waits for each agent to confirm before answering (the heartbeat answer repeats it). */
const PUSH_TIMEOUT_MS = 5_000;

/**
 * Tokens the agents must refuse though their signature holds: those issued for a revoked API key and the
 * peer grants of an ended operation. Agents check tokens on their own, so each revocation is pushed to
 * every online agent at once (POST /agent/v1/revocations) and repeated in every heartbeat answer, for
 * agents that were away or restarted. Kept in memory: the key itself is deleted from the database, so no
 * new token can be issued for it, and the agents keep what they were told.
 */
export class Revocations {
  private readonly keys = new Map<string, number>();
  private readonly operations = new Map<string, number>();

  constructor(
    private readonly agents: AgentsClient,
    private readonly onlineMachines: () => MachineRecord[],
    private readonly log: Logger,
    /** How long a revocation is kept: longer than any token it refuses can live. */
    private readonly keepMs: number,
  ) {}

  /** Revokes the tokens of an API key on every online agent; resolves once they confirmed (or timed out). */
  revokeKey(keyId: string): Promise<void> {
    this.keys.set(keyId, Date.now() + this.keepMs);
    return this.push({ keys: [keyId], operations: [] });
  }

  /** Revokes the peer grants of an operation that ended. */
  revokeOperation(operationId: string): Promise<void> {
    this.operations.set(operationId, Date.now() + this.keepMs);
    return this.push({ keys: [], operations: [operationId] });
  }

  /** Everything still revoked, for heartbeat answers. */
  active(now = Date.now()): RevokedTokens {
    for (const m of [this.keys, this.operations]) for (const [id, until] of m) if (until <= now) m.delete(id);
    return { keys: [...this.keys.keys()], operations: [...this.operations.keys()] };
  }

  private async push(tokens: RevokedTokens): Promise<void> {
    await Promise.all(
      this.onlineMachines().map(async (machine) => {
        try {
          await this.agents.revoke(machine, tokens, AbortSignal.timeout(PUSH_TIMEOUT_MS));
        } catch (err) {
          // Its next heartbeat answer carries the revocation.
          this.log.warn({ err, machine_id: machine.id }, 'an agent was not told of a revocation at once');
        }
      }),
    );
  }
}
