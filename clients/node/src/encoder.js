/**
 * Encoder bundles (docs/bundle-format.md, "Running an encoder"): sentence embeddings, text and
 * token classification, fill-mask.
 *
 * Each text is encoded with special tokens and truncated to max_context (the closing special
 * token kept); texts run in batches, sorted by length, padded on the right with
 * special_tokens.pad; every name in graph.inputs is fed as int64 (input_ids, attention_mask,
 * token_type_ids as zeros). Results come back in the caller's order, unpadded. Pooling and
 * normalisation are inside the graph: embed only reads pooling.output.
 *
 *   const enc = await load('bundles/minilm');
 *   const vectors = await enc.embed(['a sentence', 'another one']);   // Float32Array per text
 */

import ort from 'onnxruntime-node';

import { BundleError, GenerationError } from './errors.js';

const LOGITS = 'logits';

export class Encoder {
  /**
   * @param {{folder: string, manifest: Record<string, any>, session: ort.InferenceSession,
   *          tokenizer: import('./tokenizer.js').BundleTokenizer}} bundle
   */
  constructor(bundle) {
    this.folder = bundle.folder;
    this.manifest = bundle.manifest;
    this.session = bundle.session;
    this.tokenizer = bundle.tokenizer;
    this.inputNames = this.manifest.graph.inputs.map((t) => t.name);
    const known = ['input_ids', 'attention_mask', 'token_type_ids'];
    const unknown = this.inputNames.filter((n) => !known.includes(n));
    if (unknown.length) throw new BundleError(`the encoder graph takes ${unknown.join(', ')}, which the bundle format does not describe; re-export the bundle`);
  }

  get task() {
    return this.manifest.task;
  }

  /**
   * Token ids of each text as the graph gets them: special tokens added, cut to max_context.
   * @param {string[]} texts
   * @returns {number[][]}
   */
  encode(texts) {
    return checkTexts(texts).map((t) => this.tokenizer.encode(t, { addSpecialTokens: true, maxLength: this.manifest.max_context }));
  }

  /**
   * Sentence vectors (pooling.output), one Float32Array of pooling.dimension per text.
   * @param {string[]} texts
   * @param {{batchSize?: number}} [options]
   */
  async embed(texts, { batchSize = 32 } = {}) {
    this.requireTask('embed', ['feature-extraction']);
    return (await this.output(texts, this.manifest.pooling.output, { batchSize })).map((r) => r.values);
  }

  /**
   * Raw task logits per text, unpadded: {ids, values, rows, width} with values (rows * width)
   * row-major: rows = 1 for text-classification, the text's tokens for the others.
   * @param {string[]} texts
   * @param {{batchSize?: number}} [options]
   */
  async logits(texts, { batchSize = 32 } = {}) {
    this.requireTask('logits', ['text-classification', 'token-classification', 'fill-mask']);
    return this.output(texts, LOGITS, { batchSize });
  }

  /**
   * Labels by softmax score, best first: [{label, score}] per text (text-classification).
   * @param {string[]} texts
   * @param {{topK?: number}} [options]
   */
  async classify(texts, { topK = 1 } = {}) {
    this.requireTask('classify', ['text-classification']);
    const rows = await this.logits(texts);
    return rows.map((row) => {
      const probs = softmax(row.values);
      return [...probs.keys()].sort((a, b) => probs[b] - probs[a] || a - b).slice(0, topK)
        .map((i) => ({ label: this.label(i, probs.length), score: probs[i] }));
    });
  }

  /**
   * Candidates for each mask token, best first: per text, per mask, [{tokenId, token, score}].
   * @param {string[]} texts each holding the mask token
   * @param {{topK?: number}} [options]
   */
  async fillMask(texts, { topK = 5 } = {}) {
    this.requireTask('fillMask', ['fill-mask']);
    const mask = this.manifest.special_tokens?.mask;
    if (mask === null || mask === undefined) throw new BundleError(`bundle ${this.folder} records no mask token; re-export it with --task fill-mask`);
    const ids = this.encode(texts);
    const rows = await this.run(ids, LOGITS, { batchSize: 32 });
    return rows.map((row, t) => ids[t].flatMap((id, position) => (id === mask ? [position] : [])).map((position) => {
      const probs = softmax(row.values.subarray(position * row.width, (position + 1) * row.width));
      return [...probs.keys()].sort((a, b) => probs[b] - probs[a] || a - b).slice(0, topK)
        .map((tokenId) => ({ tokenId, token: this.tokenizer.decode([tokenId]).trim() || this.tokenizer.idToToken(tokenId), score: probs[tokenId] }));
    }));
  }

  /**
   * Graph output NAME per text, unpadded: {ids, values, rows, width} (rows = 1 for pooled outputs).
   * @param {string[]} texts
   * @param {string} name
   * @param {{batchSize?: number}} [options]
   */
  async output(texts, name, { batchSize = 32 } = {}) {
    return this.run(this.encode(texts), name, { batchSize });
  }

  /**
   * Run IDS (one list per text) in length-sorted batches; per text its row of output NAME cut
   * to its own length: {ids, values (Float32Array), rows, width}.
   */
  async run(ids, name, { batchSize = 32 }) {
    if (!this.manifest.graph.outputs.some((t) => t.name === name)) {
      throw new GenerationError(`the graph has no output ${name}; it has ${this.manifest.graph.outputs.map((t) => t.name).join(', ')}`);
    }
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new GenerationError(`batchSize must be a whole number >= 1, got ${batchSize}`);
    const order = [...ids.keys()].sort((a, b) => ids[a].length - ids[b].length || a - b);
    const results = new Array(ids.length);
    for (let at = 0; at < order.length; at += batchSize) {
      const chunk = order.slice(at, at + batchSize);
      const out = (await this.session.run(this.feeds(chunk.map((i) => ids[i])), [name]))[name];
      const data = /** @type {Float32Array} */ (out.data);
      const perRow = data.length / chunk.length;
      chunk.forEach((i, r) => {
        const row = data.subarray(r * perRow, (r + 1) * perRow);
        if (out.dims.length === 2) results[i] = { ids: ids[i], values: Float32Array.from(row), rows: 1, width: out.dims[1] };
        else {
          const width = out.dims[2];
          results[i] = { ids: ids[i], values: Float32Array.from(row.subarray(0, ids[i].length * width)), rows: ids[i].length, width };
        }
      });
    }
    return results;
  }

  /** input_ids right-padded with special_tokens.pad, attention_mask, token_type_ids zeros: (batch, seq) int64. */
  feeds(rows) {
    const pad = BigInt(this.manifest.special_tokens?.pad ?? 0);
    const longest = Math.max(...rows.map((r) => r.length));
    const inputIds = new BigInt64Array(rows.length * longest).fill(pad);
    const attentionMask = new BigInt64Array(rows.length * longest);
    rows.forEach((r, b) => r.forEach((id, j) => {
      inputIds[b * longest + j] = BigInt(id);
      attentionMask[b * longest + j] = 1n;
    }));
    const dims = [rows.length, longest];
    const arrays = { input_ids: inputIds, attention_mask: attentionMask, token_type_ids: new BigInt64Array(rows.length * longest) };
    return Object.fromEntries(this.inputNames.map((n) => [n, new ort.Tensor('int64', arrays[n], dims)]));
  }

  /** Class name I (of COUNT): labels[i], or transformers' LABEL_i when the bundle has none. */
  label(i, count) {
    const labels = this.manifest.labels;
    return labels && labels.length === count ? labels[i] : `LABEL_${i}`;
  }

  requireTask(call, tasks) {
    if (!tasks.includes(this.task)) {
      throw new GenerationError(`${call} needs a ${tasks.join(' or ')} bundle, but ${this.folder} is a ${this.task} bundle`);
    }
  }
}

/** A non-empty array of non-blank, well-formed strings, or a GenerationError. */
function checkTexts(texts) {
  if (!Array.isArray(texts) || texts.length === 0) throw new GenerationError('texts must be a non-empty list of strings');
  texts.forEach((t, i) => {
    if (typeof t !== 'string' || !t.trim()) throw new GenerationError(`text ${i} must be a non-empty string`);
    if (!t.isWellFormed()) throw new GenerationError(`text ${i} holds an unpaired surrogate (not valid Unicode)`);
  });
  return texts;
}

/** Softmax in float64. @param {ArrayLike<number>} values @returns {Float64Array} */
export function softmax(values) {
  let top = -Infinity;
  for (const v of values) if (v > top) top = v;
  const out = Float64Array.from(values, (v) => Math.exp(v - top));
  const total = out.reduce((a, b) => a + b, 0);
  return out.map((v) => v / total);
}
