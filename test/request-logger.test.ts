// The lazy per-request logger: nothing is built until a request logs, and what it logs carries
// the request id like Fastify's own child would.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { it } from 'node:test';
import Fastify from 'fastify';
import pino from 'pino';
import { lazyChildLogger } from '../src/http/request-logger.js';

it('request.log writes through a pino child bound to the request id, made on first use', async () => {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const app = Fastify({ loggerInstance: pino({ level: 'info' }, sink), childLoggerFactory: lazyChildLogger, disableRequestLogging: true });
  const built: string[] = [];
  app.get('/quiet', async (request) => {
    assert.equal(request.log.level, 'info');
    return 'ok';
  });
  app.get('/loud', async (request) => {
    request.log.warn({ user: 'alice' }, 'something to say');
    request.log.debug('below the level');
    request.log.child({ step: 'inner' }).error('from a grandchild');
    built.push(request.id);
    return 'ok';
  });
  try {
    assert.equal((await app.inject({ method: 'GET', url: '/quiet' })).statusCode, 200);
    assert.equal(lines.length, 0, 'a request that does not log writes nothing');
    assert.equal((await app.inject({ method: 'GET', url: '/loud' })).statusCode, 200);
    assert.equal(lines.length, 2, JSON.stringify(lines));
    const [warn, error] = lines;
    assert.equal(warn!.msg, 'something to say');
    assert.equal(warn!.user, 'alice');
    assert.equal(warn!.level, 40);
    assert.equal(warn!.reqId, built[0]);
    assert.equal(error!.msg, 'from a grandchild');
    assert.equal(error!.step, 'inner');
    assert.equal(error!.reqId, built[0]);
  } finally {
    await app.close();
  }
});
