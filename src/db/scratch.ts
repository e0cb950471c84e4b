// A database of its own next to the one a URL names (which is left untouched): the bench works in
// one and drops it, and each test gets one. PostgreSQL and MySQL/MariaDB alike.
import { dialectOf, openServerDb } from './index.js';

export interface ScratchDatabase {
  readonly name: string;
  readonly url: string;
  drop(): Promise<void>;
}

/** A server that accepts and never answers must not hang the caller. */
const CONNECT_TIMEOUT_MS = 5_000;

/** Creates an empty database next to the one DATABASE_URL names (which is left untouched). */
export async function createScratchDatabase(serverUrl: string, name: string): Promise<ScratchDatabase> {
  if (!/^[a-z0-9_]+$/.test(name)) throw new Error(`bad scratch database name ${name}`);
  const dialect = dialectOf(serverUrl);
  const onServer = async (sql: string) => {
    const admin = openServerDb(serverUrl, { poolSize: 1, connectionTimeoutMs: CONNECT_TIMEOUT_MS });
    try {
      await admin.query(sql);
    } finally {
      await admin.close();
    }
  };
  await onServer(`CREATE DATABASE ${name}`);
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  return {
    name,
    url: url.toString(),
    drop: () => onServer(dialect === 'postgres' ? `DROP DATABASE IF EXISTS ${name} WITH (FORCE)` : `DROP DATABASE IF EXISTS ${name}`),
  };
}

