// Live progress of a bench run on stderr: one cli-progress bar per phase on a terminal, one plain
// line per finished phase otherwise (CI logs, pipes), so stdout stays free for the report.
import cliProgress from 'cli-progress';

export interface Phase {
  update(value: number): void;
  /** Ends the phase with a one-line summary. */
  done(summary: string): void;
}

export class Progress {
  constructor(
    private readonly live: boolean,
    private readonly quiet: boolean,
  ) {}

  /** A message outside any phase (skips, warnings). */
  say(line: string): void {
    if (!this.quiet) process.stderr.write(line + '\n');
  }

  phase(label: string, total: number, unit: string): Phase {
    if (!this.live) {
      return {
        update: () => {},
        done: (summary) => this.say(`${label}: ${summary}`),
      };
    }
    const bar = new cliProgress.SingleBar(
      {
        format: `${label.padEnd(34)} {bar} {percentage}% | {value}/{total} ${unit} | {duration_formatted} {summary}`,
        barsize: 24,
        hideCursor: true,
        clearOnComplete: false,
        stream: process.stderr,
        fps: 10,
      },
      cliProgress.Presets.shades_classic,
    );
    bar.start(Math.max(1, total), 0, { summary: '' });
    let last = 0;
    return {
      update: (value) => {
        last = value;
        bar.setTotal(Math.max(total, value, 1));
        bar.update(value);
      },
      done: (summary) => {
        bar.update(last, { summary: `— ${summary}` });
        bar.stop();
      },
    };
  }
}
