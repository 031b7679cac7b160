/**
 * Render a bundle's chat template as transformers' apply_chat_template does.
 *
 * @huggingface/jinja always lexes with trim_blocks and lstrip_blocks on, knows break/continue
 * (Jinja's loopcontrols extension), strips one trailing newline of the template (Jinja's
 * keep_trailing_newline=False) and its tojson keeps non-ASCII text, as transformers' does.
 * Added here: raise_exception(message) as a clear GenerationError, strftime_now(format) with
 * C-locale names (its own knows only %Y %m %d %b %B %H %M), and the manifest's
 * special_token_strings (bos_token, eos_token...) as variables. The rendered text is encoded
 * WITHOUT special tokens by the caller: the template already wrote them.
 */

import { Environment, Interpreter, Template } from '@huggingface/jinja';

import { BundleError, GenerationError } from './errors.js';

const ROLES = ['system', 'user', 'assistant', 'tool'];

/** Thrown by the template's raise_exception, told apart from the engine's own errors. */
class TemplateRaised extends Error {}

export class ChatTemplate {
  /**
   * @param {string} source the template text (chat_template.jinja)
   * @param {Record<string, string>} specialTokenStrings variables the template may use
   * @param {string} name where the template came from, for messages
   */
  constructor(source, specialTokenStrings, name) {
    try {
      this.template = new Template(source);
    } catch (e) {
      throw new BundleError(`${name} is not a valid Jinja template (${e.message}); re-export the bundle`);
    }
    this.specialTokenStrings = specialTokenStrings;
  }

  /**
   * The prompt text for MESSAGES.
   * @param {{role: string, content: string}[]} messages
   * @param {{addGenerationPrompt?: boolean}} [options]
   * @returns {string}
   */
  render(messages, { addGenerationPrompt = true } = {}) {
    checkMessages(messages);
    try {
      const env = globals();
      const variables = { ...this.specialTokenStrings, messages: messages.map((m) => ({ ...m })), add_generation_prompt: addGenerationPrompt };
      for (const [name, value] of Object.entries(variables)) env.set(name, value);
      return new Interpreter(env).run(this.template.parsed).value;
    } catch (e) {
      if (e instanceof TemplateRaised) throw new GenerationError(`the bundle's chat template refused these messages: ${e.message}`);
      throw new GenerationError(`the bundle's chat template does not render (${e.message}); fix chat_template.jinja or re-export the bundle`);
    }
  }
}

/**
 * The environment Template.render builds (@huggingface/jinja 0.5.13's setupGlobals: true,
 * false, none and their Python spellings, range), with this module's raise_exception and
 * strftime_now instead of the library's: Template.render cannot replace a global.
 */
function globals() {
  const env = new Environment();
  const values = {
    false: false, true: true, none: null, False: false, True: true, None: null,
    range: (...args) => pythonRange(...args),
    raise_exception: (message) => { throw new TemplateRaised(String(message)); },
    strftime_now: (format) => strftime(new Date(), String(format)),
  };
  for (const [name, value] of Object.entries(values)) env.set(name, value);
  return env;
}

/** Python's range(stop) / range(start, stop[, step]) as an array. */
function pythonRange(...args) {
  const [start, stop, step = 1] = args.length === 1 ? [0, args[0]] : args;
  if (!Number.isInteger(start) || !Number.isInteger(stop) || !Number.isInteger(step) || step === 0) {
    throw new Error(`range() takes whole numbers and a non-zero step, got ${args.join(', ')}`);
  }
  const out = [];
  for (let i = start; step > 0 ? i < stop : i > stop; i += step) out.push(i);
  return out;
}

/** A non-empty list of {role, content} with known roles and text content, or a GenerationError. */
export function checkMessages(messages) {
  if (!Array.isArray(messages) || messages.length === 0) {
    throw new GenerationError('a chat needs a non-empty list of messages like {"role": "user", "content": "Hi"}');
  }
  messages.forEach((m, i) => {
    if (typeof m !== 'object' || m === null || typeof m.content !== 'string' || !ROLES.includes(m.role)) {
      throw new GenerationError(`message ${i} must be an object with a role in ${ROLES.join(', ')} and string content`);
    }
  });
}

const DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];
const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October',
  'November', 'December'];

/**
 * Python's datetime.strftime in the C locale for the common codes (local time), glibc's
 * %-d style (no padding) included; an unknown code is left as written.
 */
export function strftime(date, format) {
  const pad = (n, width = 2, fill = '0') => String(n).padStart(width, fill);
  const hours12 = date.getHours() % 12 || 12;
  const startOfYear = new Date(date.getFullYear(), 0, 1);
  const dayOfYear = Math.floor((date - startOfYear) / 86400000) + 1;
  const codes = {
    a: DAYS[date.getDay()].slice(0, 3), A: DAYS[date.getDay()], b: MONTHS[date.getMonth()].slice(0, 3),
    B: MONTHS[date.getMonth()], d: pad(date.getDate()), e: pad(date.getDate(), 2, ' '), H: pad(date.getHours()),
    I: pad(hours12), j: pad(dayOfYear, 3), m: pad(date.getMonth() + 1), M: pad(date.getMinutes()),
    p: date.getHours() < 12 ? 'AM' : 'PM', S: pad(date.getSeconds()), y: pad(date.getFullYear() % 100),
    Y: String(date.getFullYear()), '%': '%',
  };
  const unpadded = { d: date.getDate(), m: date.getMonth() + 1, H: date.getHours(), I: hours12, M: date.getMinutes(), S: date.getSeconds(), j: dayOfYear };
  return format.replace(/%(-?)([a-zA-Z%])/g, (whole, dash, code) => {
    if (dash) return code in unpadded ? String(unpadded[code]) : whole;
    return code in codes ? codes[code] : whole;
  });
}
