// One deployment for many clusters: `cdk synth` with 200 clusters keeps every template (nested
// ones included) under CloudFormation's 500 resources, and says how long synthesis took.
import { NestedStack, type Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { expect, it } from 'vitest';
import { exampleConfig, synthPipeline } from '../support/state-machines.ts';

it('synthesizes 200 clusters with every stack under 500 resources', () => {
  const config = exampleConfig();
  const first = config.clusters[0];
  if (!first) throw new Error('the example config has no cluster');
  const clusters = Array.from({ length: 200 }, (_, i) => ({
    ...first,
    name: `db-${String(i).padStart(3, '0')}`,
  }));
  const started = Date.now();
  const synth = synthPipeline({ ...config, clusters });
  try {
    const stacks: Stack[] = [synth.stacks.stateful, synth.stacks.pipeline];
    for (const stack of [...stacks])
      for (const child of stack.node.findAll()) if (child instanceof NestedStack) stacks.push(child);
    const counts = stacks.map((stack: Stack) => ({
      stack: stack.node.path,
      resources: Object.keys(Template.fromStack(stack).toJSON().Resources ?? {}).length,
    }));
    const elapsed = Date.now() - started;
    console.info(
      `synth of 200 clusters: ${(elapsed / 1000).toFixed(1)} s; resources per stack: ${counts.map((c) => `${c.stack} ${c.resources}`).join(', ')}`,
    );
    for (const { stack, resources } of counts) expect(resources, stack).toBeLessThan(500);
    // Every cluster's alarms exist (2 freshness alarms + one lag alarm per target each).
    const alarms = stacks.reduce(
      (n, stack) => n + Object.keys(Template.fromStack(stack).findResources('AWS::CloudWatch::Alarm')).length,
      0,
    );
    expect(alarms).toBeGreaterThanOrEqual(200 * (2 + config.targets.length));
  } finally {
    synth.dispose();
  }
}, 300_000);
