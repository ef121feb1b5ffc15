import { type Kysely, type RawBuilder, type Transaction, sql } from 'kysely';
import type { SecretBox } from '../auth/secret-box.js';
import { type Db, type Dialect, mustTryAgain } from './database.js';

/** Runs of one statement or transaction at most, the first included. */
const ATTEMPTS = 4;

/** The Db interface over a kysely instance (or one of its transactions): the same for both dialects. */
export class KyselyDb implements Db {
  readonly forUpdate: RawBuilder<unknown>;

  constructor(
    readonly dialect: Dialect,
    private readonly executor: Kysely<unknown> | Transaction<unknown>,
    readonly secrets: SecretBox,
    /** Set for a transaction: transaction() inside it runs in it. */
    private readonly inTransaction: boolean,
    private readonly onClose: () => Promise<void> = async () => {},
  ) {
    this.forUpdate = dialect === 'postgres' ? sql` FOR NO KEY UPDATE` : sql``;
  }

  async all<R>(query: RawBuilder<R>): Promise<R[]> {
    return (await this.again(() => query.execute(this.executor))).rows;
  }

  async get<R>(query: RawBuilder<R>): Promise<R | undefined> {
    return (await this.again(() => query.execute(this.executor))).rows[0];
  }

  async run(query: RawBuilder<unknown>): Promise<number> {
    return Number((await this.again(() => query.execute(this.executor))).numAffectedRows ?? 0n);
  }

  transaction<T>(work: (tx: Db) => Promise<T>): Promise<T> {
    if (this.inTransaction) return work(this);
    return this.again(() =>
      (this.executor as Kysely<unknown>).transaction().execute((trx) => work(new KyselyDb(this.dialect, trx, this.secrets, true))),
    );
  }

  /**
   * Runs `op` again when PostgreSQL rolled it back as a deadlock's victim or for serialization, as it asks
   * clients to (after a short random pause, so the two do not meet again). Inside a transaction a statement
   * is not retried alone: the whole transaction is, by the transaction() that began it.
   */
  private async again<T>(op: () => Promise<T>): Promise<T> {
    if (this.inTransaction) return op();
    for (let attempt = 1; ; attempt++) {
      try {
        return await op();
      } catch (err) {
        if (!mustTryAgain(err) || attempt >= ATTEMPTS) throw err;
        await new Promise((resolve) => setTimeout(resolve, 5 + Math.random() * 20 * attempt));
      }
    }
  }

  close(): Promise<void> {
    if (this.inTransaction) throw new Error('a transaction cannot close the database');
    return this.onClose();
  }
}
