// The logger the domain, the stores' adapters and the workers write to: the part of pino they
// use, so that none of them imports the HTTP framework for a type. pino's loggers (and Fastify's,
// which are pino's) satisfy it.
import type { Bindings, LogFn } from 'pino';

export interface Logger {
  level: string;
  error: LogFn;
  warn: LogFn;
  info: LogFn;
  debug: LogFn;
  child(bindings: Bindings): Logger;
}
