/**
 * Text in, text out for decoder bundles: prompts (plain or chat), sampling options resolved
 * against the bundle's generation defaults, batches, and streaming.
 *
 *   const lm = await load('bundles/smollm2-int8');
 *   const { text, ids, finish } = await lm.generate('What is the capital of France?', { chat: true });
 *   for await (const piece of lm.stream('Tell me a story', { chat: true, maxNewTokens: 64 })) process.stdout.write(piece);
 *   const rows = await lm.generateIds([[1, 2, 3], [4, 5]], { maxNewTokens: 16 });   // greedy on ids
 *
 * Results hold the generated ids as edgelm's runtime returns them: an eos id that ended a row is
 * the last one (its text is not shown: decoding skips special tokens); `finish` says why a row
 * ended: eos, length (max_new_tokens) or context (max_context reached).
 */

import { StreamingDetokenizer } from './detokenizer.js';
import { GenerationError } from './errors.js';
import { DecoderGraph } from './decoder_graph.js';
import { Generator } from './generator.js';

const DEFAULT_MAX_NEW_TOKENS = 256;
const OPTION_NAMES = ['chat', 'maxNewTokens', 'temperature', 'topK', 'topP', 'repetitionPenalty', 'seed'];

/**
 * @typedef {object} GenerateOptions
 * @property {boolean} [chat] wrap a string prompt as one user message and render the chat template
 * @property {number} [maxNewTokens]
 * @property {number} [temperature] 0 = greedy; default from the bundle (greedy unless do_sample)
 * @property {number} [topK]
 * @property {number} [topP]
 * @property {number} [repetitionPenalty]
 * @property {number | null} [seed]
 */

/**
 * @typedef {object} Completion
 * @property {string} text generated text, special tokens skipped
 * @property {number[]} ids generated ids, an ending eos id included
 * @property {string} finish eos | length | context
 * @property {number} promptTokens
 */

export class LanguageModel {
  /**
   * @param {{folder: string, manifest: Record<string, any>, session: import('onnxruntime-node').InferenceSession,
   *          tokenizer: import('./tokenizer.js').BundleTokenizer, chatTemplate: import('./chat.js').ChatTemplate | null}} bundle
   */
  constructor(bundle) {
    this.folder = bundle.folder;
    this.manifest = bundle.manifest;
    this.session = bundle.session;
    this.tokenizer = bundle.tokenizer;
    this.chatTemplate = bundle.chatTemplate;
    this.graph = new DecoderGraph(bundle.session, bundle.manifest);
  }

  get task() {
    return this.manifest.task;
  }

  /**
   * Prompt ids: a string as plain text with special tokens; chat messages (or a string with
   * chat: true) through the chat template, encoded without them.
   * @param {string | {role: string, content: string}[]} prompt
   * @param {{chat?: boolean}} [options]
   * @returns {number[]}
   */
  encode(prompt, { chat = false } = {}) {
    if (typeof prompt === 'string' && !prompt.trim()) throw new GenerationError('the prompt is empty; pass some text');
    const messages = typeof prompt === 'string' ? (chat ? [{ role: 'user', content: prompt }] : null) : prompt;
    if (messages === null) return this.tokenizer.encode(prompt, { addSpecialTokens: true });
    return this.tokenizer.encode(this.renderChat(messages), { addSpecialTokens: false });
  }

  /**
   * The chat template rendered for MESSAGES with the generation prompt.
   * @param {{role: string, content: string}[]} messages
   * @param {{addGenerationPrompt?: boolean}} [options]
   */
  renderChat(messages, options = {}) {
    if (!this.chatTemplate) throw new GenerationError(`${this.folder} has no chat template; pass plain text prompts`);
    return this.chatTemplate.render(messages, options);
  }

  /**
   * Generator parameters: what is not given comes from the bundle's generation defaults the way
   * transformers reads them (greedy unless do_sample; top_k 50 when sampling).
   * @param {GenerateOptions} [options]
   * @returns {import('./generator.js').GeneratorParams}
   */
  params({ maxNewTokens, temperature, topK, topP, repetitionPenalty, seed } = {}) {
    const defaults = this.manifest.generation ?? {};
    const t = temperature ?? (defaults.do_sample ? Number(defaults.temperature ?? 1.0) : 0);
    return {
      maxNewTokens: maxNewTokens ?? Number(defaults.max_new_tokens ?? DEFAULT_MAX_NEW_TOKENS),
      temperature: t,
      topK: topK ?? (t ? Number(defaults.top_k ?? 50) : 0),
      topP: topP ?? Number(defaults.top_p ?? 1.0),
      repetitionPenalty: repetitionPenalty ?? Number(defaults.repetition_penalty ?? 1.0),
      seed: seed ?? null,
    };
  }

  /**
   * A step-wise Generator on this bundle.
   * @param {import('./generator.js').GeneratorParams} params
   */
  generator(params) {
    const special = this.manifest.special_tokens ?? {};
    return new Generator(this.graph, params, { maxContext: this.manifest.max_context, eos: special.eos ?? [], pad: special.pad ?? null });
  }

  /**
   * Decode token-id rows as one batch (greedy unless options say otherwise).
   * @param {number[][]} rows
   * @param {GenerateOptions} [options]
   * @returns {Promise<{ids: number[], finish: string}[]>}
   */
  async generateIds(rows, options = {}) {
    const gen = this.generator(this.params({ temperature: 0, ...options }));
    await gen.appendTokens(rows);
    while (!gen.isDone()) await gen.generateNextToken();
    return rows.map((_, i) => ({ ids: gen.newTokens(i), finish: gen.finishReason(i) }));
  }

  /**
   * The completion for one prompt, or a list of completions for a list of prompts (one batch).
   * @param {string | {role: string, content: string}[] | (string | {role: string, content: string}[])[]} prompt
   * @param {GenerateOptions} [options]
   * @returns {Promise<Completion | Completion[]>}
   */
  async generate(prompt, options = {}) {
    const single = typeof prompt === 'string' || isMessages(prompt);
    const runner = this.run(single ? [prompt] : prompt, options, false);
    let step = await runner.next();
    while (!step.done) step = await runner.next();
    return single ? step.value[0] : step.value;
  }

  /**
   * Text pieces as they are generated; joined, they equal generate()'s text exactly. The
   * generator's return value is the Completion.
   * @param {string | {role: string, content: string}[]} prompt
   * @param {GenerateOptions} [options]
   * @returns {AsyncGenerator<string, Completion>}
   */
  async* stream(prompt, options = {}) {
    const completions = yield* this.run([prompt], options, true);
    return completions[0];
  }

  /** Decode PROMPTS as one batch; yields row 0's pieces when STREAM; returns the completions. */
  async* run(prompts, options, stream) {
    if (!Array.isArray(prompts) || prompts.length === 0) throw new GenerationError('pass a prompt or a non-empty list of prompts');
    const unknown = Object.keys(options).filter((k) => !OPTION_NAMES.includes(k));
    if (unknown.length) throw new GenerationError(`unknown option(s) ${unknown.join(', ')}; known: ${OPTION_NAMES.join(', ')}`);
    const { chat = false, ...sampling } = options;
    const promptIds = prompts.map((p) => this.encode(p, { chat }));
    const gen = this.generator(this.params(sampling));
    const detokenizers = promptIds.map(() => new StreamingDetokenizer(this.tokenizer));
    const seen = promptIds.map(() => 0);
    await gen.appendTokens(promptIds);
    while (!gen.isDone()) {
      await gen.generateNextToken();
      for (let i = 0; i < promptIds.length; i++) {
        const ids = gen.newTokens(i);
        let piece = '';
        for (; seen[i] < ids.length; seen[i]++) piece += detokenizers[i].add(ids[seen[i]]);
        if (stream && i === 0 && piece) yield piece;
      }
    }
    const rest = detokenizers.map((d) => d.finish());
    if (stream && rest[0]) yield rest[0];
    return promptIds.map((ids, i) => ({
      text: detokenizers[i].text, ids: gen.newTokens(i), finish: gen.finishReason(i), promptTokens: ids.length,
    }));
  }
}

function isMessages(prompt) {
  return Array.isArray(prompt) && prompt.length > 0 && prompt.every((m) => typeof m === 'object' && m !== null && !Array.isArray(m));
}
