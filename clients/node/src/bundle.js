/**
 * Open a bundle folder: manifest (seal, version, names), file checks, tokenizer, chat template,
 * onnxruntime session; then the front end its task asks for.
 */

import { readFileSync } from 'node:fs';
import path from 'node:path';

import { ChatTemplate } from './chat.js';
import { LanguageModel } from './decoder.js';
import { Encoder } from './encoder.js';
import { BundleError } from './errors.js';
import { DECODER_TASKS, checkFiles, readManifest } from './manifest.js';
import { openSession } from './session.js';
import { BundleTokenizer } from './tokenizer.js';

/**
 * Read and check FOLDER and open it.
 * @param {string} folder
 * @param {{threads?: number}} [options]
 * @returns {Promise<LanguageModel | Encoder>}
 */
export async function load(folder, options = {}) {
  const manifest = readManifest(folder);
  await checkFiles(folder, manifest);
  const tokenizer = BundleTokenizer.load(folder, manifest);
  const templateFile = manifest.tokenizer.chat_template;
  const chatTemplate = templateFile
    ? new ChatTemplate(readText(folder, templateFile), manifest.tokenizer.special_token_strings ?? tokenizer.stringsFromIds(manifest.special_tokens ?? {}),
      `${templateFile} in ${folder}`)
    : null;
  const session = await openSession(folder, manifest, options);
  const bundle = { folder, manifest, session, tokenizer, chatTemplate };
  return DECODER_TASKS.includes(manifest.task) ? new LanguageModel(bundle) : new Encoder(bundle);
}

/** A bundle file's text as UTF-8, or a BundleError. */
export function readText(folder, name) {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(readFileSync(path.join(folder, name)));
  } catch (e) {
    throw new BundleError(`${name} in ${folder} is not readable UTF-8 text (${e.message}); re-export the bundle`);
  }
}
