import { type Kysely, type RawBuilder, type Transaction, sql } from 'kysely';
import type { SecretBox } from '../auth/secret-box.js';
import type { Db, Dialect } from './database.js';

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
    return (await query.execute(this.executor)).rows;
  }

  async get<R>(query: RawBuilder<R>): Promise<R | undefined> {
    return (await query.execute(this.executor)).rows[0];
  }

  async run(query: RawBuilder<unknown>): Promise<number> {
    return Number((await query.execute(this.executor)).numAffectedRows ?? 0n);
  }

  transaction<T>(work: (tx: Db) => Promise<T>): Promise<T> {
    if (this.inTransaction) return work(this);
    return (this.executor as Kysely<unknown>)
      .transaction()
      .execute((trx) => work(new KyselyDb(this.dialect, trx, this.secrets, true)));
  }

  close(): Promise<void> {
    if (this.inTransaction) throw new Error('a transaction cannot close the database');
    return this.onClose();
  }
}
