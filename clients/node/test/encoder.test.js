/**
 * Encoder behaviour on every encoder bundle: a batch of texts gives what each text gets alone
 * (within the bundle's tolerance), outputs are unpadded, inputs are truncated to max_context.
 */

import assert from 'node:assert/strict';
import test, { describe, before } from 'node:test';

import { load } from '../src/index.js';
import { bundlesOrFail, isDecoder, tolerancesOf } from '../testkit/bundles.js';

const TEXTS = ['The quick brown fox jumps over the lazy dog.', '今天天气很好，我们去公园散步吧。', 'Shipping models 🚀 to edge boxes 🤖👍🏽',
  'a', 'Paris is the capital of France and its largest city.'];

for (const folder of bundlesOrFail().filter((b) => !isDecoder(b))) {
  describe(folder, () => {
    /** @type {import('../src/encoder.js').Encoder} */
    let enc;
    let tol;
    let texts;
    before(async () => {
      enc = await load(folder);
      tol = tolerancesOf(folder);
      const mask = enc.manifest.special_tokens.mask;
      texts = enc.task === 'fill-mask' ? TEXTS.map((t) => `${enc.tokenizer.idToToken(mask)} ${t}`) : TEXTS;
    });

    test('a batch of texts gives what each text gets alone, within tolerance', async () => {
      const name = enc.task === 'feature-extraction' ? enc.manifest.pooling.output : 'logits';
      const bound = enc.task === 'feature-extraction' ? tol.value_abs : tol.logit_abs;
      const batch = await enc.output(texts, name, { batchSize: texts.length });
      for (const [i, text] of texts.entries()) {
        const [alone] = await enc.output([text], name);
        assert.equal(batch[i].values.length, alone.values.length, `text ${i} is unpadded`);
        const worst = Math.max(...alone.values.map((v, j) => Math.abs(v - batch[i].values[j])));
        assert.ok(worst <= bound, `text ${i}: batch and alone differ by ${worst} (> ${bound})`);
      }
    });

    test('the task call gives one result per text, of the documented shape', async () => {
      if (enc.task === 'feature-extraction') {
        const vectors = await enc.embed(texts);
        assert.equal(vectors.length, texts.length);
        vectors.forEach((v) => assert.equal(v.length, enc.manifest.pooling.dimension));
        if (enc.manifest.pooling.normalize) vectors.forEach((v) => assert.ok(Math.abs(Math.hypot(...v) - 1) < 1e-3, 'L2-normalised in the graph'));
      } else if (enc.task === 'text-classification') {
        const results = await enc.classify(texts, { topK: 2 });
        results.forEach((r) => { assert.ok(r.length >= 1 && r[0].score >= (r[1]?.score ?? 0)); });
      } else if (enc.task === 'fill-mask') {
        const results = await enc.fillMask(texts, { topK: 3 });
        results.forEach((masks) => { assert.equal(masks.length, 1); assert.equal(masks[0].length, 3); });
      } else {
        const rows = await enc.logits(texts);
        rows.forEach((r, i) => { assert.equal(r.rows, r.ids.length, `text ${i}: one row per token`); });
      }
    });

    test('a text longer than max_context is cut to it, keeping the closing special token', async () => {
      const limit = enc.manifest.max_context;
      const long = Array.from({ length: limit + 40 }, (_, i) => `word${i % 7}`).join(' ');
      const [ids] = enc.encode([long]);
      assert.equal(ids.length, limit);
      const full = enc.tokenizer.encode(long, { addSpecialTokens: true });
      assert.equal(ids.at(-1), full.at(-1), 'the last (special) token is kept');
      assert.equal(ids[0], full[0]);
      const [row] = await enc.output([long], enc.task === 'feature-extraction' ? enc.manifest.pooling.output : 'logits');
      assert.ok(row.values.every(Number.isFinite));
    });
  });
}
