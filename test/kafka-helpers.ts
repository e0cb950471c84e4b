// What the Kafka suites share: whether this machine can run a real broker (java, and mvn to
// fetch the jars unless KAFKA_LIBS names them), said loudly when it cannot (and a failure under
// CI=true, through `missing`).
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { TestContext } from 'node:test';
import { missing } from './helpers.js';

const has = (command: string) => promisify(execFile)(command, ['-version']).then(() => true, () => false);

/** The reason a broker cannot run here, or undefined when it can. */
export async function kafkaToolsMissing(): Promise<string | undefined> {
  if (!(await has('java'))) return 'java (JDK 17+) is not on PATH — install it to run the Kafka tests';
  if (process.env.KAFKA_LIBS === undefined && !(await has('mvn'))) return 'mvn is not on PATH (it fetches the Kafka jars) — install Maven or set KAFKA_LIBS';
  return undefined;
}

/** True when a broker can run; else skips loudly (fails under CI=true). */
export async function needKafkaTools(t: TestContext): Promise<boolean> {
  const reason = await kafkaToolsMissing();
  if (reason === undefined) return true;
  missing(t, reason);
  return false;
}
