/**
 * bin/edgelm-node.js, the interface edgelm's Python test suite calls: verify, generate, embed
 * (with --prompt), rerank, and one error line with exit 2 for what cannot be done.
 */

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import test from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { load } from '../src/index.js';
import { labelCount } from '../src/ranking.js';
import { bundlesOrFail, folderBytes, isDecoder, manifestOf, tolerancesOf } from '../testkit/bundles.js';

const BIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'edgelm-node.js');

/** Run the CLI; {code, stdout, stderr} whatever the exit status. */
async function run(...args) {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [BIN, ...args], { maxBuffer: 64 << 20 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

const bundles = bundlesOrFail();
const smallest = (list) => [...list].sort((a, b) => folderBytes(a) - folderBytes(b))[0];
const decoders = bundles.filter(isDecoder);
const encoders = bundles.filter((b) => !isDecoder(b));

if (bundles.length) {
  test('verify prints {passed, vectors} and exits 0 when every vector passes', async () => {
    const { code, stdout } = await run('verify', smallest(bundles));
    const report = JSON.parse(stdout);
    assert.equal(typeof report.passed, 'boolean');
    report.vectors.forEach((v) => assert.deepEqual(Object.keys(v).sort(), ['detail', 'kind', 'name', 'passed']));
    assert.equal(code, report.passed ? 0 : 1);
    assert.equal(report.passed, true);
  });

  test('a folder that is not a bundle exits 2 with one error line', async () => {
    const { code, stdout, stderr } = await run('verify', '/nonexistent/bundle');
    assert.equal(code, 2);
    assert.equal(stdout, '');
    assert.match(stderr, /^error: [^\n]+\n$/);
  });
}

if (decoders.length) {
  test('generate --ids-json decodes the rows as one greedy batch', async () => {
    const { code, stdout } = await run('generate', smallest(decoders), '--ids-json', '[[1,2,3],[4,5]]', '--max-new-tokens', '4');
    assert.equal(code, 0);
    const { rows } = JSON.parse(stdout);
    assert.equal(rows.length, 2);
    rows.forEach((r) => { assert.ok(['eos', 'length', 'context'].includes(r.finish)); assert.ok(r.ids.length <= 4); });
  });

  test('generate --prompt --stream prints the pieces, then the JSON on the last line', async () => {
    const folder = smallest(decoders);
    const { code, stdout } = await run('generate', folder, '--prompt', 'Hello', '--max-new-tokens', '6', '--stream');
    assert.equal(code, 0);
    const lines = stdout.trimEnd().split('\n');
    const result = JSON.parse(lines.at(-1));
    assert.equal(stdout.slice(0, stdout.lastIndexOf('\n', stdout.length - 2)), result.text);
    const plain = JSON.parse((await run('generate', folder, '--prompt', 'Hello', '--max-new-tokens', '6')).stdout);
    assert.deepEqual(plain, result);
    const sampled = (await run('generate', folder, '--prompt', 'Hello', '--max-new-tokens', '6', '--temperature', '0.8', '--top-k', '20', '--top-p', '0.9', '--seed', '5')).stdout;
    assert.equal((await run('generate', folder, '--prompt', 'Hello', '--max-new-tokens', '6', '--temperature', '0.8', '--top-k', '20', '--top-p', '0.9', '--seed', '5')).stdout, sampled);
  });
}

const embedders = encoders.filter((b) => manifestOf(b).task === 'feature-extraction');
if (embedders.length) {
  test('embed --texts-json prints one vector per text', async () => {
    const { code, stdout } = await run('embed', smallest(embedders), '--texts-json', '["a sentence", "another one"]');
    assert.equal(code, 0);
    const { vectors } = JSON.parse(stdout);
    assert.equal(vectors.length, 2);
    assert.ok(vectors[0].length > 0 && vectors[0].every(Number.isFinite));
  });
}

const withPrompts = embedders.filter((b) => Object.keys(manifestOf(b).prompts ?? {}).length);
if (withPrompts.length) {
  test('embed --prompt NAME embeds with that prompt; an unknown name exits 2 naming the prompts', async () => {
    const folder = smallest(withPrompts);
    const names = Object.keys(manifestOf(folder).prompts);
    const texts = ['a sentence', 'another one'];
    const { code, stdout } = await run('embed', folder, '--texts-json', JSON.stringify(texts), '--prompt', names.at(-1));
    assert.equal(code, 0);
    const enc = await load(folder);
    const want = await enc.embed(texts, { prompt: names.at(-1) });
    const off = Math.max(...JSON.parse(stdout).vectors.flatMap((v, i) => v.map((x, j) => Math.abs(x - want[i][j]))));
    assert.ok(off <= tolerancesOf(folder).value_abs, `the CLI's vectors are the API's (off by ${off})`);
    const bad = await run('embed', folder, '--texts-json', JSON.stringify(texts), '--prompt', 'no-such-prompt');
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^error: prompt 'no-such-prompt' is not one of this bundle's prompts; use one of [^\n]+\n$/);
    names.forEach((n) => assert.ok(bad.stderr.includes(`'${n}'`), n));
  });
}

const rerankers = encoders.filter((b) => manifestOf(b).task === 'text-classification' && labelCount(manifestOf(b)) === 1);
if (rerankers.length) {
  test('rerank prints {results: [{index, score}]} best first, the API\'s ranking', async () => {
    const folder = smallest(rerankers);
    const documents = ['Paris is the capital of France.', 'The quick brown fox.', 'France', 'Rain falls softly on the roof.'];
    const { code, stdout } = await run('rerank', folder, '--query', 'What is the capital of France?', '--documents-json', JSON.stringify(documents), '--top-n', '3');
    assert.equal(code, 0);
    const { results } = JSON.parse(stdout);
    const want = await (await load(folder)).rerank('What is the capital of France?', documents, { topN: 3 });
    assert.deepEqual(results.map((r) => r.index), want.map((r) => r.index));
    results.forEach((r, i) => assert.ok(Math.abs(r.score - want[i].score) <= tolerancesOf(folder).logit_abs / 4));
  });
}

if (bundles.length) {
  test('rerank on a bundle that is not a cross-encoder exits 2 with one line saying what it is', async () => {
    const others = bundles.filter((b) => !rerankers.includes(b));
    if (!others.length) return;
    const { code, stdout, stderr } = await run('rerank', smallest(others), '--query', 'q', '--documents-json', '["a"]');
    assert.equal(code, 2);
    assert.equal(stdout, '');
    assert.match(stderr, /^error: rerank needs a (text-classification bundle with one label|cross-encoder)[^\n]*\n$/);
  });
}
