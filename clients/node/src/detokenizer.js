/**
 * Streaming detokenization: text pieces whose concatenation equals decoding all tokens at once.
 *
 * A character can span several byte-level tokens (Chinese, emoji): decoding a prefix of them
 * ends in U+FFFD. Such a tail is held back until the character completes, and only text that
 * extends what was already emitted is ever emitted; `finish` emits whatever remains.
 */

const INCOMPLETE = '\uFFFD';

export class StreamingDetokenizer {
  /**
   * @param {import('./tokenizer.js').BundleTokenizer} tokenizer
   * @param {{skipSpecialTokens?: boolean}} [options]
   */
  constructor(tokenizer, { skipSpecialTokens = true } = {}) {
    this.tokenizer = tokenizer;
    this.skipSpecialTokens = skipSpecialTokens;
    /** @type {number[]} every token added so far */
    this.ids = [];
    /** everything emitted so far */
    this.text = '';
  }

  /**
   * Append one token; the new piece of text ('' while a character is incomplete).
   * @param {number} id
   */
  add(id) {
    this.ids.push(id);
    const decoded = this.tokenizer.decode(this.ids, { skipSpecialTokens: this.skipSpecialTokens });
    if (decoded.endsWith(INCOMPLETE) || !decoded.startsWith(this.text)) return '';
    return this.advance(decoded);
  }

  /** The rest of the text once no more tokens will come. */
  finish() {
    const decoded = this.tokenizer.decode(this.ids, { skipSpecialTokens: this.skipSpecialTokens });
    if (!decoded.startsWith(this.text)) throw new Error('tokenizer decoding is not prefix-stable; cannot stream it');
    return this.advance(decoded);
  }

  advance(decoded) {
    const piece = decoded.slice(this.text.length);
    this.text = decoded;
    return piece;
  }
}
