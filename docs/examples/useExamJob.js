// useExamJob.js: a React hook that follows one exam job to its end, by server-sent events or polling.
// Plain JavaScript (no JSX inside), next to exam-client.js; React 16.8 or later.
//
//   function Grading({ jobId }) {
//     const { job, error, done } = useExamJob(jobId, { baseUrl: "https://exams.school.example" });
//     if (error) return <p role="alert">{error.message}</p>;
//     if (!job) return <p>Submitted…</p>;
//     if (!done) return <progress max="100" value={job.progress}>{job.current_step_label}</progress>;
//     return job.status === "completed" ? <Result result={job.result} /> : <p>{job.error_message}</p>;
//   }
import { useEffect, useState } from "react";
import { listenJob, pollJob } from "./exam-client.js";

/** @typedef {import("./exam-client.js").JobStatus} JobStatus */

const FINAL = ["completed", "failed", "cancelled"];
/** @type {{ job: JobStatus | null, error: Error | null }} */
const NOTHING_YET = { job: null, error: null };

/**
 * Follow job `jobId` (nothing while it is null). Returns { job, error, done }: `job` is the latest
 * status document (null until the first arrives), `error` a JobNotFoundError, GaveUpError or
 * ProblemError from exam-client.js, `done` true once the job is completed, failed or cancelled.
 * Options: baseUrl (the API's origin), lang ("en" or "ar"), token (with API_AUTH=tokens), transport
 * ("events", the default, or "poll": a request every 2 s). Unmounting, or a new jobId, closes the
 * stream or stops the polling.
 * @param {string | null} jobId
 * @param {{ baseUrl: string | URL, lang?: string, token?: string, transport?: "events" | "poll" }} options
 * @returns {{ job: JobStatus | null, error: Error | null, done: boolean }}
 */
export function useExamJob(jobId, { baseUrl, lang = "en", token, transport = "events" }) {
  const [state, setState] = useState(NOTHING_YET);

  useEffect(() => {
    if (!jobId) return undefined;
    const controller = new AbortController();
    setState(NOTHING_YET);
    const follow = transport === "poll" || typeof EventSource === "undefined" ? pollJob : listenJob;
    follow(baseUrl, jobId, {
      lang,
      token,
      signal: controller.signal,
      onProgress: (job) => setState({ job, error: null }),
    }).then(
      (job) => setState({ job, error: null }),
      (error) => {
        if (!controller.signal.aborted) setState((previous) => ({ ...previous, error }));
      },
    );
    return () => controller.abort();
  }, [jobId, baseUrl, lang, token, transport]);

  return { ...state, done: state.job !== null && FINAL.includes(state.job.status) };
}
