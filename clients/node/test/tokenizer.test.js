/**
 * The tokenizer of every bundle: the JavaScript library's whitespace is made Rust's (Unicode
 * White_Space: U+0085 is whitespace, U+FEFF is not), and texts round-trip.
 */

import assert from 'node:assert/strict';
import test from 'node:test';

import { BertPreTokenizer, ByteLevelPreTokenizer } from '@huggingface/tokenizers';

import { readManifest } from '../src/manifest.js';
import { BundleTokenizer } from '../src/tokenizer.js';
import { bundlesOrFail } from '../testkit/bundles.js';

/** Every pre-tokenizer below PRE (a Sequence holds several). */
const preTokenizers = (pre) => (pre ? [pre, ...(pre.tokenizers ?? []).flatMap(preTokenizers)] : []);

for (const folder of bundlesOrFail()) {
  test(`${folder}: pre-tokenizer patterns use Unicode White_Space, not JavaScript's \\s`, () => {
    const manifest = readManifest(folder);
    const tokenizer = BundleTokenizer.load(folder, manifest);
    for (const pre of preTokenizers(tokenizer.inner.pre_tokenizer)) {
      if (pre.pattern instanceof RegExp) assert.doesNotMatch(pre.pattern.source, /(?<!\\)\\[sS]/, `${pre.constructor.name} pattern`);
      // what Rust's pre-tokenizers give for 'a\u0085b \uFEFFc': U+0085 is whitespace, U+FEFF is not
      const pieces = () => pre.pre_tokenize_text('a\u0085b \uFEFFc', {});
      if (pre instanceof BertPreTokenizer) assert.deepEqual(pieces(), ['a', 'b', '\uFEFFc']);
      if (pre instanceof ByteLevelPreTokenizer && pre.use_regex) assert.equal(pieces().length, 5, 'a | \\u0085 | b | " \\uFEFF" | c');
    }
  });

  test(`${folder}: encode and decode round-trip ordinary text`, () => {
    const manifest = readManifest(folder);
    const tokenizer = BundleTokenizer.load(folder, manifest);
    const text = 'Paris is the capital of France.';
    const ids = tokenizer.encode(text, { addSpecialTokens: false });
    assert.ok(ids.length > 0);
    const decoded = tokenizer.decode(ids);
    assert.equal(decoded.toLowerCase().replace(/\s+/g, ' ').trim(), text.toLowerCase(), 'decoded text (lower-cased for uncased vocabularies)');
    assert.equal(tokenizer.decode([]), '');
  });
}
