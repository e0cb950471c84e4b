// The database handle: one small interface (types.ts) over node-postgres (a pool), PGlite
// (embedded, one connection) and mysql2 (a pool, MySQL 8.0+ / MariaDB 10.11+). Each handle says
// which SQL dialect it speaks; the repositories pick their statements by it (src/coupons/sql/).
import { createMysqlDb } from './mysql.js';
import { createPostgresDb } from './postgres.js';
import { dialectOf, type Db, type ServerDbOptions } from './types.js';

export * from './types.js';
export { createPgliteDb, createPostgresDb } from './postgres.js';
export { createMysqlDb } from './mysql.js';

/** Opens a pool on a PostgreSQL or MySQL/MariaDB server, by the URL's scheme. */
export function openServerDb(url: string, options: ServerDbOptions): Db {
  return dialectOf(url) === 'mysql' ? createMysqlDb(url, options) : createPostgresDb(url, options);
}
