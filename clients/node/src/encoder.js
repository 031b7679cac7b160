/**
 * Encoder bundles (docs/bundle-format.md, "Running an encoder"): sentence embeddings (with the
 * bundle's named prompts), text and token classification, fill-mask, reranking.
 *
 * Each text (or a reranker's (query, document) pair) is encoded with special tokens and truncated
 * to max_context (the closing special token kept; a pair longest_first); texts run in batches,
 * sorted by length, padded on the right with special_tokens.pad; every name in graph.inputs is
 * fed as int64 (input_ids, attention_mask, token_type_ids as zeros or a pair's type ids,
 * prompt_length as the prompt's token count, src/prompts.js). Results come back in the caller's
 * order, unpadded. Pooling and normalisation are inside the graph: embed only reads
 * pooling.output.
 *
 *   const enc = await load('bundles/minilm');
 *   const vectors = await enc.embed(['a sentence', 'another one'], { prompt: 'query' });   // Float32Array per text
 *   const ranking = await reranker.rerank('a question', ['doc one', 'doc two']);          // [{index, score}], best first
 */

import ort from 'onnxruntime-node';

import { BundleError, GenerationError } from './errors.js';
import { PROMPT_LENGTH, promptLength, promptText } from './prompts.js';
import { checkQuery, checkTopN, ranked, rerankerProblem, sigmoid } from './ranking.js';

const LOGITS = 'logits';
/** Every graph input an encoder bundle may list (docs/bundle-format.md). */
const INPUTS = ['input_ids', 'attention_mask', 'token_type_ids', PROMPT_LENGTH];

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
    const unknown = this.inputNames.filter((n) => !INPUTS.includes(n));
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
   *
   * prompt: a name in the manifest's `prompts` (e.g. 'query'), whose text is put before each
   * text, as SentenceTransformer.encode(texts, {prompt_name}) does; left out, the bundle's
   * `default_prompt` is used when it has one. A graph that pools without the prompt's tokens
   * gets their count as prompt_length (0 with no prompt).
   * @param {string[]} texts
   * @param {{prompt?: string | null, batchSize?: number}} [options]
   */
  async embed(texts, { prompt = null, batchSize = 32 } = {}) {
    this.requireTask('embed', ['feature-extraction']);
    checkTexts(texts);
    const prefix = promptText(this.manifest, prompt);
    const promptTokens = promptLength(this.tokenizer, this.manifest, prefix);
    const ids = this.encode(texts.map((t) => prefix + t));
    return (await this.run(ids, this.manifest.pooling.output, { batchSize, promptTokens })).map((r) => r.values);
  }

  /**
   * DOCUMENTS ordered by relevance to QUERY: [{index, score}], best first (ties in the
   * documents' order), the first topN. score is what sentence-transformers' CrossEncoder.predict
   * gives for (query, document): the sigmoid of the bundle's one logit.
   * @param {string} query
   * @param {string[]} documents
   * @param {{topN?: number | null, batchSize?: number}} [options]
   * @returns {Promise<{index: number, score: number}[]>}
   */
  async rerank(query, documents, { topN = null, batchSize = 32 } = {}) {
    this.requireReranker();
    checkTopN(topN);
    checkQuery(query);
    if (typeof documents === 'string') throw new GenerationError('documents must be a list of strings, got one string; pass [document]');
    checkTexts(documents, 'document');
    return ranked(await this.scorePairs(documents.map((d) => [query, d]), { batchSize }), topN);
  }

  /**
   * Relevance of each [query, document] pair, in (0, 1), in PAIRS' order.
   * @param {[string, string][]} pairs
   * @param {{batchSize?: number}} [options]
   * @returns {Promise<Float64Array>}
   */
  async scorePairs(pairs, { batchSize = 32 } = {}) {
    const encoded = this.encodePairs(pairs);
    const rows = await this.run(encoded.map((e) => e.ids), LOGITS, { batchSize, typeIds: encoded.map((e) => e.typeIds) });
    return Float64Array.from(rows, (row) => sigmoid(row.values[0])); // row.values: (1,)
  }

  /**
   * Token ids and type ids of each [query, document] pair as the graph gets them: the pair
   * template's special tokens added, cut to max_context longest_first.
   * @param {[string, string][]} pairs
   * @returns {{ids: number[], typeIds: number[]}[]}
   */
  encodePairs(pairs) {
    this.requireReranker();
    if (!Array.isArray(pairs) || pairs.length === 0 || !pairs.every((p) => Array.isArray(p) && p.length === 2)) {
      throw new GenerationError('pairs must be a non-empty list of [query, document] pairs of strings');
    }
    checkTexts(pairs.map((p) => p[0]), 'query');
    checkTexts(pairs.map((p) => p[1]), 'document');
    return pairs.map(([q, d]) => this.tokenizer.encodePair(q, d, { maxLength: this.manifest.max_context }));
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
   * The texts run as given: no prompt is added (a default one neither) and prompt_length is 0.
   * @param {string[]} texts
   * @param {string} name
   * @param {{batchSize?: number}} [options]
   */
  async output(texts, name, { batchSize = 32 } = {}) {
    return this.run(this.encode(texts), name, { batchSize });
  }

  /**
   * Run IDS (one list per text) in length-sorted batches; per text its row of output NAME cut
   * to its own length: {ids, values (Float32Array), rows, width}. typeIds: per text its
   * token_type_ids (a pair's), else zeros; promptTokens: the prompt_length fed.
   */
  async run(ids, name, { batchSize = 32, typeIds = null, promptTokens = 0 }) {
    if (!this.manifest.graph.outputs.some((t) => t.name === name)) {
      throw new GenerationError(`the graph has no output ${name}; it has ${this.manifest.graph.outputs.map((t) => t.name).join(', ')}`);
    }
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new GenerationError(`batchSize must be a whole number >= 1, got ${batchSize}`);
    const order = [...ids.keys()].sort((a, b) => ids[a].length - ids[b].length || a - b);
    const results = new Array(ids.length);
    for (let at = 0; at < order.length; at += batchSize) {
      const chunk = order.slice(at, at + batchSize);
      const feeds = this.feeds(chunk.map((i) => ids[i]), typeIds && chunk.map((i) => typeIds[i]), promptTokens);
      const out = (await this.session.run(feeds, [name]))[name];
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

  /**
   * The graph inputs it lists: input_ids right-padded with special_tokens.pad, attention_mask,
   * token_type_ids (TYPE_ROWS, else zeros; padding 0), all (batch, seq) int64; prompt_length
   * [PROMPT_TOKENS], (1,) int64.
   */
  feeds(rows, typeRows = null, promptTokens = 0) {
    const pad = BigInt(this.manifest.special_tokens?.pad ?? 0);
    const longest = Math.max(...rows.map((r) => r.length));
    const inputIds = new BigInt64Array(rows.length * longest).fill(pad);
    const attentionMask = new BigInt64Array(rows.length * longest);
    const tokenTypeIds = new BigInt64Array(rows.length * longest);
    rows.forEach((r, b) => r.forEach((id, j) => {
      inputIds[b * longest + j] = BigInt(id);
      attentionMask[b * longest + j] = 1n;
      if (typeRows) tokenTypeIds[b * longest + j] = BigInt(typeRows[b][j]);
    }));
    const dims = [rows.length, longest];
    const tensors = {
      input_ids: new ort.Tensor('int64', inputIds, dims),
      attention_mask: new ort.Tensor('int64', attentionMask, dims),
      token_type_ids: new ort.Tensor('int64', tokenTypeIds, dims),
      [PROMPT_LENGTH]: new ort.Tensor('int64', BigInt64Array.of(BigInt(promptTokens)), [1]),
    };
    return Object.fromEntries(this.inputNames.map((n) => [n, tensors[n]]));
  }

  /** Class name I (of COUNT): labels[i], or transformers' LABEL_i when the bundle has none. */
  label(i, count) {
    const labels = this.manifest.labels;
    return labels && labels.length === count ? labels[i] : `LABEL_${i}`;
  }

  requireReranker() {
    const problem = rerankerProblem(this.manifest, this.folder);
    if (problem) throw new GenerationError(problem);
  }

  requireTask(call, tasks) {
    if (!tasks.includes(this.task)) {
      throw new GenerationError(`${call} needs a ${tasks.join(' or ')} bundle, but ${this.folder} is a ${this.task} bundle`);
    }
  }
}

/** A non-empty array of non-blank, well-formed strings, or a GenerationError. NOUN names the items. */
function checkTexts(texts, noun = 'text') {
  const plural = noun.endsWith('y') ? `${noun.slice(0, -1)}ies` : `${noun}s`;
  if (!Array.isArray(texts) || texts.length === 0) throw new GenerationError(`${plural} must be a non-empty list of strings`);
  texts.forEach((t, i) => {
    if (typeof t !== 'string' || !t.trim()) throw new GenerationError(`${noun} ${i} must be a non-empty string`);
    if (!t.isWellFormed()) throw new GenerationError(`${noun} ${i} holds an unpaired surrogate (not valid Unicode)`);
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
