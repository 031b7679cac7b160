/**
 * The two kinds of failure a caller can act on, each a one-line message naming what is
 * wrong and what to do about it.
 *
 *   BundleError      the folder is not a usable bundle (missing, damaged, edited, too new)
 *   GenerationError  the bundle is fine but the request is not (empty prompt, bad option)
 */

/** The bundle folder cannot be used as it is: re-export, copy again or upgrade. */
export class BundleError extends Error {
  /** @param {string} message one line: what is wrong; what to do */
  constructor(message) {
    super(message);
    this.name = 'BundleError';
  }
}

/** A request the bundle cannot serve as asked (bad option, prompt too long, wrong task). */
export class GenerationError extends Error {
  /** @param {string} message one line: what is wrong; what to do */
  constructor(message) {
    super(message);
    this.name = 'GenerationError';
  }
}
