/**
 * Named prompts of sentence-embedding bundles (docs/bundle-format.md, "prompts and
 * default_prompt"), applied as sentence-transformers applies them and as edgelm's
 * runtime/prompts.py does:
 *
 *   text = prompts[name] + text          // the default prompt's text when no name is given
 *   prompt_length = tokens of the prompt alone, with special tokens, less a closing special one
 *
 * prompt_length is fed only to graphs that list it (Pooling with include_prompt=false): rows are
 * padded on the right, so the prompt is every row's first prompt_length tokens, which pooling skips.
 */

import { GenerationError } from './errors.js';

/** The graph input; int64, shape (1,). */
export const PROMPT_LENGTH = 'prompt_length';

/**
 * The text to put before each text for prompt NAME (undefined or null: the bundle's
 * default_prompt, else none: '').
 * @param {Record<string, any>} manifest
 * @param {string | null | undefined} name
 * @returns {string}
 */
export function promptText(manifest, name) {
  const prompts = manifest.prompts ?? {};
  if (name === undefined || name === null) {
    name = manifest.default_prompt ?? null;
    if (name === null) return '';
  }
  if (typeof name !== 'string' || !Object.hasOwn(prompts, name)) {
    const known = Object.keys(prompts).map(quoted).join(', ');
    throw new GenerationError(`prompt ${quoted(name)} is not one of this bundle's prompts; `
      + (known ? `use one of ${known}` : 'it has none (leave prompt out)'));
  }
  return prompts[name];
}

/**
 * Leading tokens of every row that TEXT (a prompt) makes, as sentence-transformers counts them:
 * the prompt encoded alone with special tokens (cut to max_context, as texts are), less one when
 * its last token is special (the closing [SEP] or </s>, which is not there once a text follows).
 * @param {import('./tokenizer.js').BundleTokenizer} tokenizer
 * @param {Record<string, any>} manifest
 * @param {string} text
 * @returns {number}
 */
export function promptLength(tokenizer, manifest, text) {
  if (!text) return 0;
  const ids = tokenizer.encode(text, { addSpecialTokens: true, maxLength: manifest.max_context });
  return ids.length && specialIds(tokenizer, manifest).has(ids.at(-1)) ? ids.length - 1 : ids.length;
}

/**
 * transformers' all_special_ids: the added tokens tokenizer.json marks special, and the
 * manifest's special_tokens.
 * @returns {Set<number>}
 */
export function specialIds(tokenizer, manifest) {
  const st = manifest.special_tokens ?? {};
  const listed = [st.bos, st.pad, st.unk, st.mask, ...(st.eos ?? [])].filter((id) => id !== null && id !== undefined);
  return new Set([...tokenizer.specialIds(), ...listed]);
}

/** NAME as Python's repr writes a str ('query'), so that messages read as edgelm's. */
function quoted(name) {
  return typeof name === 'string' ? `'${name}'` : String(name);
}
