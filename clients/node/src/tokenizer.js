/**
 * The bundle's tokenizer.json, through @huggingface/tokenizers (pure JavaScript).
 *
 * That library takes a second argument, the checkpoint's tokenizer_config.json, which bundles
 * do not ship. What it reads from it: the special-token strings (bos_token, eos_token...; only
 * its Unigram and legacy models use them), additional_special_tokens, and three decode/encode
 * switches. The manifest's tokenizer.special_token_strings stand in for the first; the switches
 * are set to what Hugging Face's Rust `tokenizers` does, which is what the docs name: in
 * particular clean_up_tokenization_spaces is off (the JS library turns it on by default, which
 * would rewrite " ." to "." in every decoded text; a WordPiece decoder still cleans up when its
 * own `cleanup` flag says so, as in Rust).
 *
 * Encoders truncate to max_context the way Rust's truncation does: the text's own tokens are
 * cut, the special tokens the post-processor adds ([CLS] ... [SEP]) are kept.
 *
 * One repair: the library's built-in ByteLevel and BertPreTokenizer patterns use JavaScript's
 * `\s`, which counts U+FEFF as whitespace and not U+0085, while Rust (Oniguruma's `\s`,
 * char::is_whitespace) uses Unicode White_Space. "x \uFEFF's" then splits differently (other
 * ids). The patterns are rebuilt with \p{White_Space} (the library itself does so for the
 * patterns it translates from tokenizer.json), and BertPreTokenizer no longer trims the text
 * with String.prototype.trim first (which strips U+FEFF; its pattern skips whitespace anyway).
 */

import { readFileSync } from 'node:fs';
import path from 'node:path';

import { BertPreTokenizer, Tokenizer } from '@huggingface/tokenizers';

import { BundleError, GenerationError } from './errors.js';

export class BundleTokenizer {
  /**
   * @param {object} tokenizerJson parsed tokenizer.json
   * @param {Record<string, string>} specialTokenStrings the manifest's tokenizer.special_token_strings
   */
  constructor(tokenizerJson, specialTokenStrings) {
    /** @type {Tokenizer} */
    this.inner = new Tokenizer(tokenizerJson, {
      ...specialTokenStrings,
      clean_up_tokenization_spaces: false,
      remove_space: false,
      do_lowercase_and_remove_accent: false,
    });
    useUnicodeWhitespace(this.inner.pre_tokenizer);
  }

  /**
   * Load tokenizer.file of a bundle.
   * @param {string} folder
   * @param {Record<string, any>} manifest
   */
  static load(folder, manifest) {
    const file = path.join(folder, manifest.tokenizer.file);
    let json;
    try {
      json = JSON.parse(readFileSync(file, 'utf8'));
    } catch (e) {
      throw new BundleError(`${manifest.tokenizer.file} in ${folder} is not a tokenizers file (${e.message}); re-export the bundle`);
    }
    const strings = manifest.tokenizer.special_token_strings;
    let tokenizer;
    try {
      tokenizer = new BundleTokenizer(json, strings ?? {});
    } catch (e) {
      throw new BundleError(`${manifest.tokenizer.file} in ${folder} cannot be loaded by @huggingface/tokenizers (${e.message}); `
        + 're-export the bundle or report the tokenizer type');
    }
    if (!strings) tokenizer.inner = new Tokenizer(json, { ...tokenizer.stringsFromIds(manifest.special_tokens ?? {}), clean_up_tokenization_spaces: false });
    return tokenizer;
  }

  /**
   * bos_token/eos_token... from the special token ids, for bundles written before the manifest
   * recorded the strings (docs: "then use id_to_token of the ids in special_tokens").
   * @param {Record<string, any>} special the manifest's special_tokens
   */
  stringsFromIds(special) {
    const ids = { bos_token: special.bos, eos_token: special.eos?.[0], pad_token: special.pad, unk_token: special.unk, mask_token: special.mask };
    return Object.fromEntries(Object.entries(ids)
      .filter(([, id]) => id !== null && id !== undefined && this.idToToken(id) !== undefined)
      .map(([key, id]) => [key, this.idToToken(id)]));
  }

  /**
   * Token ids of TEXT.
   * @param {string} text
   * @param {{addSpecialTokens?: boolean, maxLength?: number | null}} [options]
   *   maxLength: truncate to this many tokens, keeping the special tokens the tokenizer adds
   * @returns {number[]}
   */
  encode(text, { addSpecialTokens = true, maxLength = null } = {}) {
    if (typeof text !== 'string') throw new GenerationError(`text must be a string, got ${typeof text}`);
    if (!text.isWellFormed()) {
      throw new GenerationError('the text holds an unpaired surrogate: it is not valid Unicode; decode bytes as UTF-8 first');
    }
    const ids = this.inner.encode(text, { add_special_tokens: addSpecialTokens }).ids;
    if (maxLength === null || ids.length <= maxLength) return ids;
    if (!addSpecialTokens) return ids.slice(0, maxLength);
    return this.truncateKeepingSpecials(text, ids, maxLength);
  }

  /**
   * IDS (encoded with special tokens) cut to MAX_LENGTH: the added prefix and suffix stay, the
   * text's own tokens are cut at the end, as Rust tokenizers' truncation (direction right) does.
   */
  truncateKeepingSpecials(text, ids, maxLength) {
    const plain = this.inner.encode(text, { add_special_tokens: false }).ids;
    const prefix = findRun(ids, plain);
    if (prefix < 0) throw new GenerationError('cannot truncate: the tokenizer does not add its special tokens around the text');
    const suffix = ids.length - prefix - plain.length;
    if (prefix + suffix >= maxLength) {
      throw new GenerationError(`cannot truncate to ${maxLength} tokens: the tokenizer adds ${prefix + suffix} special tokens itself`);
    }
    return [...ids.slice(0, prefix), ...plain.slice(0, maxLength - prefix - suffix), ...ids.slice(ids.length - suffix)];
  }

  /**
   * Text of IDS.
   * @param {number[]} ids
   * @param {{skipSpecialTokens?: boolean}} [options]
   */
  decode(ids, { skipSpecialTokens = true } = {}) {
    if (ids.length === 0) return '';
    return this.inner.decode(ids, { skip_special_tokens: skipSpecialTokens, clean_up_tokenization_spaces: false });
  }

  /** @param {number} id @returns {string | undefined} */
  idToToken(id) {
    return this.inner.id_to_token(id);
  }
}

/**
 * Rebuild the `pattern` of PRE_TOKENIZER (and of the pre-tokenizers of a Sequence) with
 * \p{White_Space} for `\s` and \P{White_Space} for `\S`: Rust's whitespace, not JavaScript's.
 */
function useUnicodeWhitespace(preTokenizer) {
  if (!preTokenizer) return;
  for (const inner of preTokenizer.tokenizers ?? []) useUnicodeWhitespace(inner);
  const { pattern } = preTokenizer;
  if (pattern instanceof RegExp && pattern.flags.includes('u') && /\\[sS]/.test(pattern.source)) {
    const source = pattern.source.replace(/(?<!\\)\\s/g, '\\p{White_Space}').replace(/(?<!\\)\\S/g, '\\P{White_Space}');
    preTokenizer.pattern = new RegExp(source, pattern.flags);
  }
  if (preTokenizer instanceof BertPreTokenizer) {
    preTokenizer.pre_tokenize_text = (text) => text.match(preTokenizer.pattern) || [];
  }
}

/** Index where NEEDLE occurs inside HAY (as a contiguous run), or -1; an empty needle sits after the prefix. */
function findRun(hay, needle) {
  if (needle.length === 0) return Math.min(1, hay.length);
  for (let start = 0; start + needle.length <= hay.length; start++) {
    let ok = true;
    for (let i = 0; i < needle.length && ok; i++) ok = hay[start + i] === needle[i];
    if (ok) return start;
  }
  return -1;
}
