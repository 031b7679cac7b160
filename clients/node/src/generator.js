/**
 * Step-wise decoding of a fixed batch of token-id rows, in the shape of edgelm's Generator.
 *
 *   const gen = new Generator(graph, params, { maxContext, eos, pad });
 *   await gen.appendTokens([[1, 2, 3], [4, 5]]);   // each row prefilled alone into its slot
 *   while (!gen.isDone()) {
 *     await gen.generateNextToken();               // one token for every unfinished row
 *     gen.newTokens(0); gen.finishReason(0);
 *   }
 *
 * A chosen token is fed to the graph lazily, at the start of the next step: the token that
 * ends the last row is never run. A row that ended is fed its last real token once (it goes
 * with the batch that chose it), then a filler (special_tokens.pad, else the smallest eos id,
 * else 0) at its spare position without advancing: the same feeds edgelm's runtime gives, so a
 * batch's arithmetic (a per-tensor activation quantizer sees every row) matches its recording.
 */

import { GenerationError } from './errors.js';
import { applyRepetitionPenalty, checkSampling, makeSampler, seededRandom } from './sampling.js';

/** Why a row finished. */
export const EOS = 'eos';
export const LENGTH = 'length';
export const CONTEXT = 'context';

/**
 * @typedef {object} GeneratorParams
 * @property {number} maxNewTokens
 * @property {number} temperature 0 = greedy
 * @property {number} topK 0 = off
 * @property {number} topP 1 = off
 * @property {number} repetitionPenalty 1 = off
 * @property {number | null} seed
 */

/** Check PARAMS; throws a GenerationError listing what is out of range. @param {GeneratorParams} params */
export function checkParams(params) {
  if (!Number.isInteger(params.maxNewTokens) || params.maxNewTokens < 1) {
    throw new GenerationError(`max_new_tokens must be a whole number >= 1, got ${params.maxNewTokens}`);
  }
  if (params.seed !== null && (!Number.isSafeInteger(params.seed) || params.seed < 0)) {
    throw new GenerationError(`seed must be a whole number >= 0 or null, got ${params.seed}`);
  }
  checkSampling(params);
}

export class Generator {
  /**
   * @param {import('./decoder_graph.js').DecoderGraph} graph
   * @param {GeneratorParams} params
   * @param {{maxContext: number, eos: number[], pad: number | null}} limits
   */
  constructor(graph, params, { maxContext, eos, pad }) {
    checkParams(params);
    this.graph = graph;
    this.params = params;
    this.maxContext = maxContext;
    this.eos = new Set(eos);
    this.pad = pad ?? (eos.length ? Math.min(...eos) : 0);
    this.sample = makeSampler(params);
    /** @type {import('./kv_cache.js').KVCache | null} */
    this.cache = null;
    /** @type {number[][]} prompt + generated ids of each row */
    this.rows = [];
    this.promptLengths = [];
    /** @type {(string | null)[]} */
    this.reasons = [];
    /** @type {Float32Array[]} logits (vocab) each row chooses from next */
    this.logits = [];
    /** @type {Float32Array[]} logits after each row's prompt (what its first token was chosen from) */
    this.firstLogits = [];
    /** @type {number[] | null} chosen last step, not yet fed */
    this.pending = null;
    /** @type {boolean[]} pending entries that are fillers for rows that had already finished */
    this.filler = [];
    this.randoms = [];
  }

  get batch() {
    return this.rows.length;
  }

  /**
   * Prefill ROWS (one list of ids per row); the first call fixes the batch size and allocates
   * the cache for the longest row (it grows while decoding).
   * @param {number[][]} rows
   */
  async appendTokens(rows) {
    if (!Array.isArray(rows) || rows.length === 0 || !rows.every((r) => Array.isArray(r) && r.length > 0)) {
      throw new GenerationError('appendTokens needs a non-empty list of non-empty rows of token ids');
    }
    const vocab = this.graph.vocabSize;
    if (rows.some((r) => r.some((t) => !Number.isInteger(t) || t < 0 || t >= vocab))) {
      throw new GenerationError(`token ids must be whole numbers in 0..${vocab - 1}; encode with the bundle's tokenizer`);
    }
    if (this.cache && rows.length !== this.batch) throw new GenerationError(`appendTokens got ${rows.length} rows for a batch of ${this.batch}`);
    rows = rows.map((r) => [...r]);
    const held = this.cache ? this.rows : rows.map(() => []);
    const longest = Math.max(...rows.map((r, i) => held[i].length + r.length));
    if (longest >= this.maxContext) {
      throw new GenerationError(`a sequence would hold ${longest} tokens, leaving no room under the model's limit of ${this.maxContext}; shorten the prompt`);
    }
    if (!this.cache) {
      this.cache = this.graph.newCache(rows.length, longest + 1);
      this.rows = rows.map(() => []);
      this.randoms = rows.map((_, i) => seededRandom(this.params.seed, i));
    }
    if (this.pending) { // the last chosen real tokens were never fed: they go first
      this.pending.forEach((_, i) => { if (!this.filler[i]) rows[i] = [this.rows[i].pop(), ...rows[i]]; });
      this.pending = null;
    }
    this.logits = [];
    for (let i = 0; i < rows.length; i++) {
      this.logits.push(await this.graph.extend(this.cache, i, rows[i]));
      this.rows[i].push(...rows[i]);
    }
    this.firstLogits = [...this.logits];
    this.promptLengths = this.rows.map((r) => r.length);
    this.reasons = this.rows.map(() => null);
  }

  /** Choose one token for every unfinished row, and mark the rows this finishes. */
  async generateNextToken() {
    if (!this.cache) throw new GenerationError('call appendTokens with the prompt before generateNextToken');
    if (this.isDone()) throw new GenerationError('every row has finished');
    if (this.pending) await this.feedPending();
    const filler = this.reasons.map((r) => r !== null);
    const chosen = this.rows.map((seen, i) => {
      if (filler[i]) return this.pad;
      const scores = applyRepetitionPenalty(this.logits[i], seen, this.params.repetitionPenalty);
      return this.sample(scores, this.randoms[i]);
    });
    chosen.forEach((token, i) => {
      if (filler[i]) return;
      this.rows[i].push(token);
      this.reasons[i] = this.stopReason(i, token);
    });
    this.pending = chosen;
    this.filler = filler;
  }

  /** Run the tokens chosen last step; rows that had finished before it get a filler and keep their length. */
  async feedPending() {
    const live = this.filler.map((f) => !f);
    if (live.some(Boolean)) {
      const stepped = await this.graph.step(this.cache, this.pending, live);
      const vocab = this.graph.vocabSize;
      live.forEach((isLive, i) => { if (isLive) this.logits[i] = stepped.subarray(i * vocab, (i + 1) * vocab); });
    }
    this.pending = null;
  }

  /** Why ROW ends after TOKEN (null: it goes on). */
  stopReason(row, token) {
    if (this.eos.has(token)) return EOS;
    if (this.rows[row].length - this.promptLengths[row] >= this.params.maxNewTokens) return LENGTH;
    if (this.rows[row].length >= this.maxContext) return CONTEXT; // full: its last token is never fed
    return null;
  }

  isDone() {
    return this.cache !== null && this.reasons.every((r) => r !== null);
  }

  /** Ids generated for ROW since the last appendTokens (an ending eos included). @param {number} row */
  newTokens(row) {
    return this.rows[row].slice(this.promptLengths[row]);
  }

  /** eos, length or context; null while the row runs. @param {number} row */
  finishReason(row) {
    return this.reasons[row];
  }
}
