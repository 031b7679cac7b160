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
 * cut, the special tokens the post-processor adds ([CLS] ... [SEP]) are kept; a text pair (a
 * reranker's query and document) is cut longest_first and gets the pair template's type ids.
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
   * Token ids and type ids of a text pair (a reranker's query and document), as Rust's
   * `tokenizers` encodes one: each text without special tokens, cut to fit MAX_LENGTH with the
   * pair's special tokens by its `longest_first` rule, then put through the post-processor's
   * pair template ([CLS] A [SEP] B [SEP], type ids 0 for A's part and 1 for B's where the
   * template says so).
   * @param {string} first
   * @param {string} second
   * @param {{maxLength?: number | null}} [options]
   * @returns {{ids: number[], typeIds: number[]}}
   */
  encodePair(first, second, { maxLength = null } = {}) {
    const [a, b] = [first, second].map((text) => this.encode(text, { addSpecialTokens: false }));
    if (maxLength === null) return this.pairTemplate(a, b);
    const added = this.pairTemplate([], []).ids.length;
    if (added >= maxLength) throw new GenerationError(`cannot truncate a pair to ${maxLength} tokens: the tokenizer adds ${added} special tokens itself`);
    const [n1, n2] = longestFirst(a.length, b.length, maxLength - added);
    return this.pairTemplate(a.slice(0, n1), b.slice(0, n2));
  }

  /**
   * The post-processor's pair template around the ids A and B. The library's post-processors
   * only concatenate the two sequences with their special tokens (given as token strings), so
   * they are handed the ids themselves and only the special tokens are looked up.
   */
  pairTemplate(a, b) {
    const post = this.inner.post_processor;
    const out = post ? post.post_process(a, b, true) : { tokens: a, tokens_pair: b };
    // a post-processor that leaves the pair apart (ByteLevel alone) merges as Rust's default does: B has type 1
    const tokens = out.tokens_pair ? [...out.tokens, ...out.tokens_pair] : out.tokens;
    const typeIds = leavesTypesZero(post) ? tokens.map(() => 0)
      : out.token_type_ids ?? [...out.tokens.map(() => 0), ...(out.tokens_pair ?? []).map(() => 1)];
    const ids = tokens.map((t) => (typeof t === 'number' ? t : this.tokenId(t)));
    return { ids, typeIds };
  }

  /** Id of a token string: the added token's, the vocabulary's, else unk (as the library's encode maps tokens). */
  tokenId(token) {
    const id = this.inner.token_to_id(token) ?? this.inner.model.unk_token_id;
    if (id === undefined || id === null) throw new GenerationError(`the tokenizer's pair template names ${token}, which it has no id for`);
    return id;
  }

  /** Ids of the added tokens tokenizer.json marks special. @returns {number[]} */
  specialIds() {
    return [...this.inner.get_added_tokens_decoder().values()].filter((t) => t.special).map((t) => t.id);
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

/**
 * Tokens kept of a pair of N1 and N2 tokens within BUDGET (the limit less the pair's special
 * tokens), by Rust tokenizers' longest_first rule (utils/truncation.rs): when only the longer one
 * must be cut it is cut to what the shorter leaves; when both must be, each gets half (the
 * longer one the odd token).
 * @returns {[number, number]}
 */
export function longestFirst(n1, n2, budget) {
  if (n1 + n2 <= budget) return [n1, n2];
  const [short, long] = n1 <= n2 ? [n1, n2] : [n2, n1];
  let [keepShort, keepLong] = [short, short > budget ? short : Math.max(short, budget - short)];
  if (keepShort + keepLong > budget) [keepShort, keepLong] = [Math.floor(budget / 2), Math.floor(budget / 2) + (budget % 2)];
  return n1 <= n2 ? [keepShort, keepLong] : [keepLong, keepShort];
}

/**
 * Whether POST (or a post-processor in its Sequence) is RobertaProcessing, which in Rust gives
 * every token of a pair type 0 (RoBERTa has no token types); the library gives the second text 1.
 */
function leavesTypesZero(post) {
  return Boolean(post) && (post.config?.type === 'RobertaProcessing' || (post.processors ?? []).some(leavesTypesZero));
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
