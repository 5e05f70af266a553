// A handler given input the state machine should never send fails at once, naming the field.
import { expect, it } from 'vitest';
import { handler as copyBatchHandler } from '../../../lambdas/replication/copy-batch.ts';

it('rejects a malformed batch before touching any bucket, naming the field', async () => {
  const env = { ...process.env };
  process.env.PGKEEP_INGEST_BUCKET = 'ingest';
  process.env.PGKEEP_CLUSTERS = '["main"]';
  process.env.PGKEEP_TARGETS = '[]';
  try {
    await expect(
      copyBatchHandler({ target: 'b2', batch: { cluster: 'main', firstKey: 'v1/main/a' } } as never),
    ).rejects.toThrow('invalid input to replication/copy-batch at batch.lastKey: ');
  } finally {
    process.env = env;
  }
});
