/**
 * Every bundle's conformance vectors (docs/conformance.md) pass on this machine.
 */

import assert from 'node:assert/strict';
import test from 'node:test';

import { verify } from '../src/index.js';
import { bundlesOrFail } from '../testkit/bundles.js';

for (const folder of bundlesOrFail()) {
  test(`${folder}: every conformance vector passes`, async () => {
    const report = await verify(folder);
    assert.ok(report.vectors.length > 0, 'the bundle carries vectors');
    const failed = report.vectors.filter((v) => !v.passed).map((v) => `${v.kind} "${v.name}": ${v.detail}`);
    assert.deepEqual(failed, [], `failed vectors:\n${failed.join('\n')}`);
    assert.equal(report.passed, true);
    const kinds = new Set(report.vectors.map((v) => v.kind));
    assert.ok(kinds.has('tokens'), 'tokens vectors were run');
    if (report.vectors.some((v) => v.kind === 'greedy')) assert.ok([...kinds].length >= 2);
  });
}
