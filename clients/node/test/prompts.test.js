/**
 * Named prompts on every feature-extraction bundle: no name means the default prompt (or none),
 * a name puts its text before each text, a graph that takes prompt_length pools only the text's
 * tokens (the mean of its token states after the prompt's), and an unknown name is refused
 * naming the bundle's prompts.
 */

import assert from 'node:assert/strict';
import test, { describe, before } from 'node:test';

import { GenerationError, load } from '../src/index.js';
import { PROMPT_LENGTH, promptLength, specialIds } from '../src/prompts.js';
import { bundlesOrFail, manifestOf, tolerancesOf } from '../testkit/bundles.js';

const TEXTS = ['short', 'The quick brown fox jumps over the lazy dog.', 'Paris',
  'Once upon a time there was a tiny model that ran on an edge box, and the rain fell softly on the roof.'];

/** Largest elementwise distance between two lists of vectors. */
const worst = (a, b) => Math.max(...a.map((v, i) => Math.max(...Array.from(v, (x, j) => Math.abs(x - b[i][j])))));

for (const folder of bundlesOrFail().filter((b) => manifestOf(b).task === 'feature-extraction')) {
  describe(folder, () => {
    /** @type {import('../src/encoder.js').Encoder} */
    let enc;
    let prompts;
    let output;
    let takesLength;
    before(async () => {
      enc = await load(folder);
      prompts = enc.manifest.prompts ?? {};
      output = enc.manifest.pooling.output;
      takesLength = enc.inputNames.includes(PROMPT_LENGTH);
    });

    test('without a prompt name, embed uses the default prompt, or none', async () => {
      const plain = await enc.embed(TEXTS, { batchSize: 3 });
      const def = enc.manifest.default_prompt ?? null;
      const want = def === null ? (await enc.output(TEXTS, output, { batchSize: 3 })).map((r) => r.values)
        : await enc.embed(TEXTS, { prompt: def, batchSize: 3 });
      assert.deepEqual(plain, want);
    });

    test('prompt_length is the prompt\'s tokens alone, less a closing special token, and begins every row', () => {
      const special = specialIds(enc.tokenizer, enc.manifest);
      for (const [name, text] of Object.entries(prompts)) {
        const length = promptLength(enc.tokenizer, enc.manifest, text);
        if (!text) { assert.equal(length, 0, name); continue; }
        const alone = enc.tokenizer.encode(text, { addSpecialTokens: true });
        assert.equal(length, alone.length - (special.has(alone.at(-1)) ? 1 : 0), name);
        for (const ids of enc.encode(TEXTS.map((t) => text + t))) assert.deepEqual(ids.slice(0, length), alone.slice(0, length), name);
      }
    });

    test('a named prompt is its text put before each text, its tokens left out of pooling where the graph takes prompt_length', async (t) => {
      const names = Object.keys(prompts);
      if (!names.length) return t.skip('the bundle has no prompts');
      for (const name of names) {
        const got = await enc.embed(TEXTS, { prompt: name, batchSize: 3 });
        const prefixed = TEXTS.map((text) => prompts[name] + text);
        if (!takesLength) {
          assert.deepEqual(got, (await enc.output(prefixed, output, { batchSize: 3 })).map((r) => r.values), name);
          continue;
        }
        const skip = promptLength(enc.tokenizer, enc.manifest, prompts[name]);
        const want = await meanAfter(enc, prefixed, skip);
        if (want === null) return t.skip(`pooling ${enc.manifest.pooling.mode} without token_embeddings: not recomputed here`);
        const off = worst(got, want);
        assert.ok(off <= tolerancesOf(folder).value_abs, `prompt ${name}: the pooled vectors are off the mean of the text's tokens by ${off}`);
      }
    });

    test('an unknown prompt name is refused, naming the bundle\'s prompts', async () => {
      const names = Object.keys(prompts);
      await assert.rejects(enc.embed(TEXTS, { prompt: 'no-such-prompt' }), (e) => e instanceof GenerationError
        && e.message.startsWith("prompt 'no-such-prompt' is not one of this bundle's prompts")
        && (names.length ? names.every((n) => e.message.includes(`'${n}'`)) : e.message.includes('it has none')));
    });
  });
}

/**
 * The mean of each text's token_embeddings after its first SKIP tokens (L2-normalised when
 * pooling.normalize): what mean pooling without the prompt gives. null where the graph has no
 * token_embeddings output or does not mean-pool.
 */
async function meanAfter(enc, texts, skip) {
  const { pooling, graph } = enc.manifest;
  if (pooling.mode !== 'mean' || !graph.outputs.some((o) => o.name === 'token_embeddings')) return null;
  const rows = await enc.output(texts, 'token_embeddings'); // per text (tokens, hidden)
  return rows.map(({ values, rows: tokens, width }) => {
    const mean = new Float64Array(width);
    for (let t = skip; t < tokens; t++) for (let j = 0; j < width; j++) mean[j] += values[t * width + j] / (tokens - skip);
    const norm = pooling.normalize ? Math.max(Math.hypot(...mean), 1e-12) : 1;
    return mean.map((x) => x / norm);
  });
}
