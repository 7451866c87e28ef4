// exam-client.js: submit an exam, then follow its job to the end by server-sent events or polling.
// Plain JavaScript (an ES module, no build step). Every URL is built from `baseUrl`, e.g.
// "https://exams.school.example", so a page on another origin works (that origin must be listed
// in the server's CORS_ALLOW_ORIGINS). With API_AUTH=tokens, pass `token` to every call.
// The types are JSDoc comments: editors and TypeScript (checkJs) read them, browsers skip them.

const FINAL = new Set(["completed", "failed", "cancelled"]);
const POLL_MS = 2000; // the server's own Retry-After while a job runs
const MAX_BACKOFF_MS = 30000; // the longest wait between tries while the server or network fails
const GIVE_UP_MS = 10 * 60 * 1000; // a job takes ~35 s; retries with back-off can take minutes

/**
 * What submitExam sends.
 * @typedef {object} Submission
 * @property {string} exam_code e.g. "MATH-101"
 * @property {string} student_id
 * @property {Record<string, string | string[] | number | boolean>} answers by question id
 */

/**
 * A job's status document (the fields used most; the API reference lists them all).
 * @typedef {object} JobStatus
 * @property {string} job_id
 * @property {"pending" | "processing" | "completed" | "failed" | "cancelled"} status
 * @property {number} progress 0-100, never decreasing
 * @property {string} current_step_label the current step, in the request's language
 * @property {object | null} result when completed: the grade and the study recommendations
 * @property {string | null} error_message why the job failed, in the request's language
 * @property {string | null} error_code a stable code for error_message
 */

/**
 * The options of pollJob and listenJob.
 * @typedef {object} FollowOptions
 * @property {string} [lang] "en" (the default) or "ar": the language of labels and messages
 * @property {string} [token] with API_AUTH=tokens
 * @property {(job: JobStatus) => void} [onProgress] called with each status document
 * @property {number} [giveUpAfterMs] 10 minutes by default
 * @property {AbortSignal} [signal] aborting it stops following (and rejects with its reason)
 */

/**
 * An RFC 9457 problem document.
 * @typedef {object} Problem
 * @property {string} [type]
 * @property {string} [title]
 * @property {number} [status]
 * @property {string} [detail]
 * @property {{ field: string, message: string }[]} [errors] a 422's validation errors
 */

/** The job is unknown: a wrong id, or a finished job deleted by the cleanup (after JOB_RETENTION_DAYS). */
export class JobNotFoundError extends Error {
  /** @param {string} jobId */
  constructor(jobId) {
    super(`job ${jobId} not found`);
    this.name = "JobNotFoundError";
  }
}

/** No final answer in time. The job may still finish: look again later, with the same job id. */
export class GaveUpError extends Error {
  /** @param {string} what @param {number} ms */
  constructor(what, ms) {
    super(`${what}: gave up after ${Math.round(ms / 1000)} s`);
    this.name = "GaveUpError";
  }
}

/** The server refused the request; `problem` is its RFC 9457 problem document (type, title, detail…). */
export class ProblemError extends Error {
  /** @param {number} status @param {Problem | null} problem null if the answer was not JSON */
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.name = "ProblemError";
    this.status = status;
    this.problem = problem;
  }
}

/**
 * Milliseconds the response asks us to wait (Retry-After in seconds or as a date), else `fallbackMs`.
 * @param {Response | null} response @param {number} fallbackMs
 */
function retryAfterMs(response, fallbackMs) {
  const value = response ? response.headers.get("Retry-After") : null;
  if (!value) return fallbackMs;
  const ms = /^\d+$/.test(value) ? Number(value) * 1000 : Date.parse(value) - Date.now();
  return Number.isFinite(ms) ? Math.max(ms, 0) : fallbackMs;
}

/** @param {number} failures */
const backoffMs = (failures) => Math.min(POLL_MS * 2 ** (failures - 1), MAX_BACKOFF_MS);

/** @param {number} ms @param {AbortSignal} [signal] @returns {Promise<void>} */
function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal && signal.aborted) return reject(signal.reason);
    const timer = setTimeout(resolve, ms);
    if (signal) {
      const onAbort = () => { clearTimeout(timer); reject(signal.reason); };
      signal.addEventListener("abort", onAbort, { once: true });
    }
  });
}

/**
 * fetch() that answers null instead of throwing on a network error (an abort still throws).
 * @param {URL} url @param {RequestInit} init
 */
async function tryFetch(url, init) {
  try {
    return await fetch(url, init);
  } catch (error) {
    if (init.signal && init.signal.aborted) throw error;
    return null;
  }
}

/**
 * A 503 (database down), 429 or a proxy's 502/504 (like no answer at all): worth another try.
 * @param {Response} response
 */
const transient = (response) => response.status === 429 || response.status >= 500;

/** @param {string} lang @param {string} [token] @param {Record<string, string>} [extra] */
function headers(lang, token, extra = {}) {
  return { "Accept-Language": lang, ...(token ? { Authorization: `Bearer ${token}` } : {}), ...extra };
}

/**
 * POST the submission; resolves with the new job's status document (status "pending").
 * Network errors, 503 and 429 are retried with back-off under the same Idempotency-Key, so a
 * resend never creates a second job. Other errors reject with a ProblemError (422: see .problem.errors).
 * @param {string | URL} baseUrl
 * @param {Submission} submission
 * @param {{ lang?: string, token?: string, giveUpAfterMs?: number, signal?: AbortSignal }} [options]
 *   giveUpAfterMs: 60 s by default
 * @returns {Promise<JobStatus>}
 */
export async function submitExam(
  baseUrl, submission, { lang = "en", token, giveUpAfterMs = 60000, signal } = {},
) {
  const url = new URL("/api/exam-results/process", baseUrl);
  const key = crypto.randomUUID(); // randomUUID needs https (or localhost)
  const deadline = Date.now() + giveUpAfterMs;
  for (let failures = 1; ; failures += 1) {
    const response = await tryFetch(url, {
      method: "POST",
      headers: headers(lang, token, { "Content-Type": "application/json", "Idempotency-Key": key }),
      body: JSON.stringify(submission),
      signal,
    });
    if (response && response.status === 202) return response.json();
    if (response && !transient(response)) {
      throw new ProblemError(response.status, await response.json().catch(() => null));
    }
    const waitMs = retryAfterMs(response, backoffMs(failures));
    if (Date.now() + waitMs > deadline) throw new GaveUpError("submission", giveUpAfterMs);
    await sleep(waitMs, signal);
  }
}

/**
 * Poll the job's status until it is completed, failed or cancelled; resolves with that document.
 * Waits what each answer's Retry-After says; backs off on 503, 429 and network errors.
 * Rejects with JobNotFoundError (404), ProblemError (another 4xx) or GaveUpError.
 * @param {string | URL} baseUrl @param {string} jobId @param {FollowOptions} [options]
 * @returns {Promise<JobStatus>}
 */
export async function pollJob(
  baseUrl, jobId, { lang = "en", token, onProgress = () => {}, giveUpAfterMs = GIVE_UP_MS, signal } = {},
) {
  const url = new URL(`/api/exam-results/status/${encodeURIComponent(jobId)}`, baseUrl);
  const deadline = Date.now() + giveUpAfterMs;
  let failures = 0;
  for (;;) {
    const response = await tryFetch(url, { headers: headers(lang, token), cache: "no-store", signal });
    let waitMs;
    if (response && response.ok) {
      /** @type {JobStatus} */
      const job = await response.json();
      onProgress(job);
      if (FINAL.has(job.status)) return job;
      failures = 0;
      waitMs = retryAfterMs(response, POLL_MS);
    } else if (response === null || transient(response)) {
      failures += 1;
      waitMs = retryAfterMs(response, backoffMs(failures));
    } else if (response.status === 404) {
      throw new JobNotFoundError(jobId);
    } else {
      throw new ProblemError(response.status, await response.json().catch(() => null));
    }
    if (Date.now() + waitMs > deadline) throw new GaveUpError(`job ${jobId}`, giveUpAfterMs);
    await sleep(waitMs, signal);
  }
}

/**
 * Listen to the job's server-sent events until the final `completed`, `failed` or `cancelled` event,
 * then close the stream; resolves with the final document. A dropped connection is resumed by
 * EventSource itself. If the server refuses the stream (404, 503, another origin) this falls back
 * to pollJob, which tells those apart. Aborting `signal` closes the stream. EventSource cannot send
 * an Authorization header: with a `token` this polls instead.
 * @param {string | URL} baseUrl @param {string} jobId @param {FollowOptions} [options]
 * @returns {Promise<JobStatus>}
 */
export function listenJob(
  baseUrl, jobId, { lang = "en", token, onProgress = () => {}, giveUpAfterMs = GIVE_UP_MS, signal } = {},
) {
  if (token) return pollJob(baseUrl, jobId, { lang, token, onProgress, giveUpAfterMs, signal });
  const url = new URL(`/api/exam-results/status/${encodeURIComponent(jobId)}/events`, baseUrl);
  url.searchParams.set("lang", lang); // EventSource cannot send Accept-Language
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const source = new EventSource(url);
    const stop = () => {
      source.close();
      clearTimeout(timer);
      if (signal) signal.removeEventListener("abort", onAbort);
    };
    const onAbort = () => { stop(); reject(signal?.reason); };
    const giveUp = () => { stop(); reject(new GaveUpError(`job ${jobId}`, giveUpAfterMs)); };
    const timer = setTimeout(giveUp, giveUpAfterMs);
    if (signal) {
      if (signal.aborted) return onAbort();
      signal.addEventListener("abort", onAbort, { once: true });
    }
    source.addEventListener("progress", (event) => onProgress(JSON.parse(event.data)));
    for (const status of FINAL) {
      source.addEventListener(status, (event) => { stop(); resolve(JSON.parse(event.data)); });
    }
    source.addEventListener("error", () => {
      if (source.readyState !== EventSource.CLOSED) return; // reconnecting by itself
      stop();
      const left = giveUpAfterMs - (Date.now() - started);
      pollJob(baseUrl, jobId, { lang, onProgress, giveUpAfterMs: left, signal }).then(resolve, reject);
    });
  });
}
