/**
 * Rerankers (one-label text-classification bundles): documents ranked once each, best first, by
 * the sigmoid of the pair's logit; a batch of pairs scores each as it scores alone; pairs are
 * encoded with the tokenizer's pair template and type ids and cut longest_first to max_context;
 * bad input and bundles that are not cross-encoders are refused with one line.
 */

import assert from 'node:assert/strict';
import test, { describe, before } from 'node:test';

import { GenerationError, load } from '../src/index.js';
import { labelCount } from '../src/ranking.js';
import { bundlesOrFail, folderBytes, isDecoder, manifestOf, tolerancesOf } from '../testkit/bundles.js';

const QUERY = 'What is the capital of France?';
const DOCUMENTS = ['Paris is the capital and largest city of France.', 'The quick brown fox jumps over the lazy dog.',
  'Rain falls softly on the roof; the kiosk hums along.', 'France',
  'What is the capital of France? The capital of France is Paris.'];

const isReranker = (folder) => {
  const manifest = manifestOf(folder);
  return manifest.task === 'text-classification' && labelCount(manifest) === 1;
};
const bundles = bundlesOrFail();

/** Index where NEEDLE starts inside HAY as a contiguous run, or -1. */
const runAt = (hay, needle) => hay.findIndex((_, i) => needle.every((x, j) => hay[i + j] === x));

for (const folder of bundles.filter(isReranker)) {
  describe(folder, () => {
    /** @type {import('../src/encoder.js').Encoder} */
    let enc;
    before(async () => { enc = await load(folder); });

    test('every document is ranked once, best first, by the sigmoid of its pair\'s logit', async () => {
      const results = await enc.rerank(QUERY, DOCUMENTS, { batchSize: 2 });
      assert.deepEqual(results.map((r) => r.index).sort(), [...DOCUMENTS.keys()]);
      results.forEach((r, i) => {
        assert.ok(r.score > 0 && r.score < 1, `score ${r.score} in (0, 1)`);
        if (i) assert.ok(results[i - 1].score >= r.score, 'best first');
      });
      const [pair] = enc.encodePairs([[QUERY, DOCUMENTS[0]]]);
      const [row] = await enc.run([pair.ids], 'logits', { typeIds: [pair.typeIds] }); // row.values: (1,)
      const first = results.find((r) => r.index === 0).score;
      const bound = tolerancesOf(folder).logit_abs / 4; // the sigmoid's slope is at most 1/4
      assert.ok(Math.abs(first - 1 / (1 + Math.exp(-row.values[0]))) <= bound, 'score = sigmoid(logit)');
    });

    test('a batch of pairs scores each pair as it scores alone, within tolerance', async () => {
      const batch = await enc.scorePairs(DOCUMENTS.map((d) => [QUERY, d]), { batchSize: DOCUMENTS.length });
      for (const [i, document] of DOCUMENTS.entries()) {
        const [alone] = await enc.scorePairs([[QUERY, document]]);
        assert.ok(Math.abs(alone - batch[i]) <= tolerancesOf(folder).logit_abs, `pair ${i}: ${batch[i]} in a batch, ${alone} alone`);
      }
    });

    test('topN keeps the n best in order', async () => {
      const every = await enc.rerank(QUERY, DOCUMENTS);
      assert.deepEqual(await enc.rerank(QUERY, DOCUMENTS, { topN: 2 }), every.slice(0, 2));
      assert.deepEqual(await enc.rerank(QUERY, DOCUMENTS, { topN: 100 }), every);
    });

    test('a pair is the query\'s tokens then the document\'s, in the pair template, with one type per segment', () => {
      const [{ ids, typeIds }] = enc.encodePairs([[QUERY, DOCUMENTS[0]]]);
      const [query, document] = [QUERY, DOCUMENTS[0]].map((t) => enc.tokenizer.encode(t, { addSpecialTokens: false }));
      const [q, d] = [runAt(ids, query), runAt(ids, document)];
      assert.ok(q >= 0 && d > q + query.length - 1, 'the query, then the document');
      assert.equal(typeIds.length, ids.length);
      assert.ok(typeIds.every((x, i) => (x === 0 || x === 1) && (i === 0 || x >= typeIds[i - 1])), 'type ids 0 then 1');
      assert.equal(new Set(typeIds.slice(q, q + query.length)).size, 1);
      assert.equal(new Set(typeIds.slice(d, d + document.length)).size, 1);
      assert.equal(typeIds[q], 0);
    });

    test('a pair over max_context is cut to it longest_first: the longer side loses tokens first', () => {
      const limit = enc.manifest.max_context;
      const long = Array.from({ length: limit }, (_, i) => `word${i % 7}`).join(' ');
      const short = enc.tokenizer.encode(DOCUMENTS[3], { addSpecialTokens: false });
      const [longShort, shortLong, longLong] = enc.encodePairs([[long, DOCUMENTS[3]], [DOCUMENTS[3], long], [long, long]]);
      for (const pair of [longShort, shortLong, longLong]) assert.equal(pair.ids.length, limit);
      assert.ok(runAt(longShort.ids, short) > 0, 'a short document is kept whole after a long query');
      assert.ok(runAt(shortLong.ids, short) >= 0, 'a short query is kept whole before a long document');
      const types = longLong.typeIds;
      const second = types.lastIndexOf(0) + 1;
      if (second > 0 && second < types.length) { // the template gives the document type 1: both halves are cut about equally
        assert.ok(Math.abs(second - (types.length - second)) <= 2, `${second} and ${types.length - second} tokens`);
      }
    });

    test('bad input is refused with one line', async () => {
      for (const [call, pattern] of [
        [() => enc.rerank(QUERY, []), /documents must be a non-empty list/],
        [() => enc.rerank(QUERY, 'one document'), /got one string; pass \[document\]/],
        [() => enc.rerank(QUERY, ['fine', '  ']), /document 1 must be a non-empty string/],
        [() => enc.rerank('   ', DOCUMENTS), /query is empty or only whitespace/],
        [() => enc.rerank(QUERY, DOCUMENTS, { topN: 0 }), /topN must be a whole number >= 1/],
      ]) await assert.rejects(call(), (e) => e instanceof GenerationError && pattern.test(e.message) && !e.message.includes('\n'));
    });
  });
}

const others = bundles.filter((b) => !isDecoder(b) && !isReranker(b));
if (others.length) {
  test('an encoder bundle that is not a cross-encoder refuses rerank, saying what it is', async () => {
    const folder = [...others].sort((a, b) => folderBytes(a) - folderBytes(b))[0];
    const enc = await load(folder);
    await assert.rejects(enc.rerank(QUERY, DOCUMENTS), (e) => e instanceof GenerationError
      && /^rerank needs a (text-classification bundle with one label|cross-encoder)/.test(e.message)
      && (enc.task === 'text-classification' ? /has \d+ labels/ : new RegExp(`is a ${enc.task} bundle`)).test(e.message));
  });
}
