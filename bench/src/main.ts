// The bench package's entry: `couponrush bench …` hands it the arguments after `bench`.
import { benchCommand } from './command.js';

export async function main(argv: readonly string[]): Promise<void> {
  await benchCommand().name('couponrush bench').parseAsync([...argv], { from: 'user' });
}
