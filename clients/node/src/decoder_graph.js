/**
 * One call of a decoder bundle's graph over a KVCache (docs/bundle-format.md, "Running a
 * decoder step by step"). Every name comes from the manifest: input and output names from
 * graph.inputs/outputs, cache names from the kv_cache patterns.
 *
 *   extend(cache, row, ids)   one row alone, any number of tokens (a prompt, a second turn)
 *   step(cache, ids, live)    every row, one token each (a decode step); rows not LIVE are fed a
 *                             filler at their spare position and keep their length
 *
 * LongRoPE (kv_cache.rope_switch): a row about to cross the switch, or cut back under it, is
 * cleared and its whole sequence (held ids, then the new ones) runs again in one call, without
 * prefill chunks (rerun); in a decode step such rows sit out the batched call (fed a filler like
 * a finished row) and run alone after it. The graph picks its rotary tables from the call's
 * lengths, as in edgelm's runtime (runtime/decoder.py), so the tokens are Python's.
 */

import ort from 'onnxruntime-node';

import { BundleError } from './errors.js';
import { KVCache } from './kv_cache.js';

const INPUT_IDS = 'input_ids';
const POSITION_IDS = 'position_ids';
const SEQUENCE_LENGTHS = 'sequence_lengths';
const LOGITS_TO_KEEP = 'logits_to_keep';
const LOGITS = 'logits';

/** Tokens per call when a prompt is long; the same chunks as edgelm's runtime, so long prompts round alike. */
export const PREFILL_CHUNK = 256;

export class DecoderGraph {
  /**
   * @param {ort.InferenceSession} session
   * @param {Record<string, any>} manifest
   */
  constructor(session, manifest) {
    this.session = session;
    this.manifest = manifest;
    this.layout = manifest.kv_cache;
    const inputs = manifest.graph.inputs.map((t) => t.name);
    const missing = [INPUT_IDS, SEQUENCE_LENGTHS, LOGITS_TO_KEEP].filter((name) => !inputs.includes(name));
    const logits = manifest.graph.outputs.find((t) => t.name === LOGITS);
    if (missing.length || !logits) {
      throw new BundleError(`the decoder graph lacks ${[...missing, ...(logits ? [] : [LOGITS])].join(', ')}; re-export the bundle`);
    }
    if ((this.layout.cache ?? 'shared-buffer') !== 'shared-buffer') {
      throw new BundleError(`kv_cache.cache is ${JSON.stringify(this.layout.cache)}; this reader knows only shared-buffer; upgrade edgelm-bundle`);
    }
    this.usesPositionIds = inputs.includes(POSITION_IDS);
    this.vocabSize = Number(logits.shape.at(-1));
    if (!Number.isInteger(this.vocabSize)) throw new BundleError(`graph output logits has no fixed vocabulary size (${logits.shape}); re-export the bundle`);
  }

  /**
   * A cache of SLOTS rows with room for TOKENS tokens each.
   * @param {number} slots
   * @param {number} tokens
   */
  newCache(slots, tokens) {
    return new KVCache(this.layout, slots, this.manifest.max_context, tokens);
  }

  /**
   * Append IDS to ROW alone (rows ROW..ROW of the buffers); logits (vocab) after its last token.
   * @param {KVCache} cache
   * @param {number} row
   * @param {number[]} ids
   * @returns {Promise<Float32Array>}
   */
  async extend(cache, row, ids) {
    if (cache.mustRerun(row, ids.length)) return this.rerun(cache, row, ids);
    cache.reserve(cache.lengths[row] + ids.length);
    let logits = null;
    for (let at = 0; at < ids.length; at += PREFILL_CHUNK) {
      const chunk = ids.slice(at, at + PREFILL_CHUNK);
      logits = await this.run(cache, row, row + 1, chunk, chunk.length, [cache.lengths[row]]);
      cache.advance([row], chunk.length, [chunk]);
    }
    return logits;
  }

  /**
   * LongRoPE: run ROW's whole sequence, then IDS, from an empty row in one call, so that every
   * key is rotated with the long factors (as transformers' generate does on crossing the switch).
   * @param {KVCache} cache
   * @param {number} row
   * @param {number[]} ids
   * @returns {Promise<Float32Array>} logits (vocab) after the last of IDS
   */
  async rerun(cache, row, ids) {
    const whole = cache.tokens[row].concat(ids);
    cache.clear(row);
    cache.reserve(whole.length);
    const logits = await this.run(cache, row, row + 1, whole, whole.length, [cache.lengths[row]]);
    cache.advance([row], whole.length, [whole]);
    return logits;
  }

  /**
   * One token for every row: IDS[b] for row b. Rows in LIVE advance; the others were fed a filler.
   * @param {KVCache} cache
   * @param {number[]} ids
   * @param {boolean[]} live
   * @returns {Promise<Float32Array>} logits (rows * vocab), row b at b * vocab
   */
  async step(cache, ids, live) {
    const rerun = cache.tokens ? live.flatMap((isLive, row) => (isLive && cache.mustRerun(row, 1) ? [row] : [])) : [];
    if (rerun.length) { // LongRoPE rows crossing the switch run alone; the others step
      const rest = live.map((isLive, row) => isLive && !rerun.includes(row));
      const logits = rest.some(Boolean) ? await this.step(cache, ids, rest) : new Float32Array(ids.length * this.vocabSize);
      for (const row of rerun) logits.set(await this.rerun(cache, row, [ids[row]]), row * this.vocabSize);
      return logits;
    }
    cache.reserve(Math.max(...cache.lengths) + 1);
    const logits = await this.run(cache, 0, cache.slots, ids, 1, cache.starts(live));
    const stepped = live.flatMap((isLive, row) => (isLive ? [row] : []));
    cache.advance(stepped, 1, cache.tokens ? stepped.map((row) => [ids[row]]) : null);
    return logits;
  }

  /**
   * Place IDS (rows * n, row-major) in rows START..STOP-1 from positions STARTS.
   * @returns {Promise<Float32Array>} logits of each row's last position, (rows * vocab)
   */
  async run(cache, start, stop, ids, n, starts) {
    const rows = stop - start;
    const { feeds, fetches } = cache.bind(start, stop);
    feeds[INPUT_IDS] = new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [rows, n]);
    feeds[SEQUENCE_LENGTHS] = new ort.Tensor('int32', Int32Array.from(starts, (s) => s + n), [rows]);
    feeds[LOGITS_TO_KEEP] = new ort.Tensor('int64', BigInt64Array.of(1n), [1]);
    if (this.usesPositionIds) {
      const positions = new BigInt64Array(rows * n);
      starts.forEach((s, r) => { for (let j = 0; j < n; j++) positions[r * n + j] = BigInt(s + j); });
      feeds[POSITION_IDS] = new ort.Tensor('int64', positions, [rows, n]);
    }
    const out = await this.session.run(feeds, { ...fetches, [LOGITS]: null });
    const logits = out[LOGITS];
    if (logits.dims.length !== 3 || logits.dims[0] !== rows || logits.dims[1] !== 1 || logits.dims[2] !== this.vocabSize) {
      throw new BundleError(`graph output logits has shape [${logits.dims}], expected [${rows}, 1, ${this.vocabSize}]; re-export the bundle`);
    }
    return /** @type {Float32Array} */ (logits.data);
  }
}
