// Per-request loggers that cost nothing until used. Fastify gives every request a child logger
// bound to its request id; pino builds it eagerly (bindings serialised to JSON, a prototype
// chain), which measured about 1 µs per request on the issue route, where nothing logs unless
// something goes wrong. This child is a thin stand-in: the pino child is made on first use.
import type { FastifyBaseLogger, FastifyLogFn as LogFn } from 'fastify';
import type { Bindings, ChildLoggerOptions } from 'pino';

class LazyChildLogger {
  private made: FastifyBaseLogger | undefined;

  constructor(
    private readonly parent: FastifyBaseLogger,
    private readonly bindings: Bindings,
    private readonly options: ChildLoggerOptions,
  ) {}

  materialise(): FastifyBaseLogger {
    return (this.made ??= this.parent.child(this.bindings, this.options));
  }

  get level(): string {
    return this.made?.level ?? this.options.level ?? this.parent.level;
  }

  set level(level: string) {
    this.materialise().level = level;
  }

  child(bindings: Bindings, options?: ChildLoggerOptions): FastifyBaseLogger {
    return this.materialise().child(bindings, options);
  }

  // The level methods, on the prototype (below): nothing is allocated per request but this object.
  declare fatal: LogFn;
  declare error: LogFn;
  declare warn: LogFn;
  declare info: LogFn;
  declare debug: LogFn;
  declare trace: LogFn;
  declare silent: LogFn;
}

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
for (const level of LEVELS) {
  Object.defineProperty(LazyChildLogger.prototype, level, {
    value: function (this: LazyChildLogger, ...args: unknown[]): void {
      const real = this.materialise();
      (real[level] as (...a: unknown[]) => void).apply(real, args);
    },
  });
}

/** Fastify's `childLoggerFactory`: the request's logger, made real on its first log line. */
export function lazyChildLogger(logger: FastifyBaseLogger, bindings: Bindings, options: ChildLoggerOptions): FastifyBaseLogger {
  return new LazyChildLogger(logger, bindings, options) as unknown as FastifyBaseLogger;
}
