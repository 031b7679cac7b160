/**
 * Decoder behaviour on every text-generation bundle: the KV buffers are updated in place (and
 * a row's view lands at its byte offset), a batch gives each row what it gets alone, streamed
 * pieces join to the text without broken characters, sampling is reproducible by seed, top_k=1
 * is greedy, and the context limit is guarded.
 */

import assert from 'node:assert/strict';
import test, { describe, before } from 'node:test';

import { GenerationError, load } from '../src/index.js';
import { StreamingDetokenizer } from '../src/detokenizer.js';
import { bundlesOrFail, isDecoder, tolerancesOf } from '../testkit/bundles.js';

const STEPS = 12;
const MIXED_TEXT = '今天天气很好 🚀🤖👍🏽 — done ✅ 👩‍💻 café';

for (const folder of bundlesOrFail().filter(isDecoder)) {
  describe(folder, () => {
    /** @type {import('../src/decoder.js').LanguageModel} */
    let lm;
    let prompts;
    before(async () => {
      lm = await load(folder);
      const chat = lm.chatTemplate !== null;
      prompts = [lm.encode('What is the capital of France?', { chat }), lm.encode('Once upon a time, in a small village by the sea, there lived')];
      assert.notEqual(prompts[0].length, prompts[1].length, 'the two prompts differ in length');
    });

    test('the KV buffers are the memory onnxruntime writes: in place, at each row view\'s byte offset', async () => {
      const cache = lm.graph.newCache(2, 32);
      const logits = await lm.graph.extend(cache, 1, prompts[1].slice(0, 8)); // row 1 alone, through a view at row 1's offset
      const { rowElements } = cache;
      for (const { data } of cache.buffers) {
        assert.ok(data.subarray(0, rowElements).every((x) => x === 0), 'row 0 is untouched');
        assert.ok(data.subarray(rowElements).some((x) => x !== 0), 'row 1 was written into the buffer itself');
      }
      assert.ok(cache.tensors(1, 2)[0].data.byteOffset > 0, 'the row view starts past row 0');
      const alone = lm.graph.newCache(1, 32);
      const reference = await lm.graph.extend(alone, 0, prompts[1].slice(0, 8));
      assert.deepEqual(Array.from(logits), Array.from(reference), 'a row prefilled through a view computes what a one-row cache does');
      const keys = cache.buffers[0].data;
      const before = Array.from(keys.subarray(rowElements));
      const stepped = await lm.graph.step(cache, [0, prompts[1][8]], [false, true]); // row 0 fed a filler, not advanced
      assert.deepEqual(cache.lengths, [0, 9]);
      assert.notDeepEqual(Array.from(keys.subarray(rowElements)), before, 'a decode step writes the new keys into the same buffer');
      const aloneStep = await lm.graph.step(alone, [prompts[1][8]], [true]);
      const vocab = lm.graph.vocabSize;
      // a two-row matmul may round differently from a one-row one (quantized kernels do): within tolerance
      const worst = Math.max(...aloneStep.map((v, j) => Math.abs(v - stepped[vocab + j])));
      assert.ok(worst <= tolerancesOf(folder).logit_abs, `the batched step gives row 1 its one-row logits (off by ${worst})`);
    });

    test('a batch of two rows of different lengths gives each row what it gets alone', async () => {
      const batch = await lm.generateIds(prompts, { maxNewTokens: STEPS });
      for (const [i, prompt] of prompts.entries()) {
        const [alone] = await lm.generateIds([prompt], { maxNewTokens: STEPS });
        assert.deepEqual(batch[i], alone, `row ${i}`);
      }
    });

    test('streamed pieces join to the generated text', async () => {
      const options = { chat: lm.chatTemplate !== null, maxNewTokens: STEPS };
      const pieces = [];
      const stream = lm.stream('Write a haiku about the sea.', options);
      let step = await stream.next();
      while (!step.done) { pieces.push(step.value); step = await stream.next(); }
      const completion = step.value;
      assert.equal(pieces.join(''), completion.text);
      const generated = await lm.generate('Write a haiku about the sea.', options);
      assert.equal(completion.text, generated.text);
      assert.deepEqual(completion.ids, generated.ids);
    });

    test('incremental detokenization never emits a broken character (Chinese, emoji, ZWJ)', () => {
      const ids = lm.tokenizer.encode(MIXED_TEXT, { addSpecialTokens: false });
      const detok = new StreamingDetokenizer(lm.tokenizer);
      const pieces = ids.map((id) => detok.add(id));
      pieces.push(detok.finish());
      assert.equal(pieces.join(''), lm.tokenizer.decode(ids));
      assert.ok(pieces.every((p) => !p.includes('\uFFFD')), 'no piece holds U+FFFD');
      assert.equal(lm.tokenizer.decode(ids), MIXED_TEXT, 'the tokenizer round-trips the text');
    });

    test('sampling is reproducible by seed', async () => {
      const options = { temperature: 0.9, topK: 40, topP: 0.95, maxNewTokens: STEPS };
      const [a] = await lm.generateIds([prompts[1]], { ...options, seed: 7 });
      const [b] = await lm.generateIds([prompts[1]], { ...options, seed: 7 });
      assert.deepEqual(a, b);
      const seeds = await Promise.all([1, 2, 3, 4].map(async (seed) => (await lm.generateIds([prompts[1]], { ...options, temperature: 1.5, topK: 0, topP: 1, seed }))[0].ids.join()));
      assert.ok(new Set(seeds).size > 1, 'different seeds give different samples');
    });

    test('top_k=1 sampling equals greedy decoding', async () => {
      const [greedy] = await lm.generateIds([prompts[0]], { maxNewTokens: STEPS });
      const [sampled] = await lm.generateIds([prompts[0]], { temperature: 0.7, topK: 1, seed: 3, maxNewTokens: STEPS });
      assert.deepEqual(sampled, greedy);
    });

    test('max_new_tokens, eos and the context limit end rows', async () => {
      const eos = lm.manifest.special_tokens.eos ?? [];
      for (const maxNewTokens of [3, 40]) {
        const [row] = await lm.generateIds([prompts[0]], { maxNewTokens });
        assert.ok(row.ids.length <= maxNewTokens);
        assert.ok(row.ids.slice(0, -1).every((id) => !eos.includes(id)), 'an eos id ends the row');
        assert.equal(row.finish, eos.includes(row.ids.at(-1)) ? 'eos' : 'length');
      }
      const limit = lm.manifest.max_context;
      await assert.rejects(lm.generateIds([new Array(limit).fill(prompts[0][0])], { maxNewTokens: 1 }), GenerationError);
      if (limit <= 4096) { // a row that reaches max_context ends with "context"
        const [full] = await lm.generateIds([new Array(limit - 2).fill(prompts[1][1])], { maxNewTokens: 8 });
        assert.ok(full.finish === 'context' ? full.ids.length === 2 : full.finish === 'eos' && full.ids.length <= 2);
      }
    });
  });
}
