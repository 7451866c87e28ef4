/* The student page: exam list, answer form, submission, progress polling and the result.
 *
 * Plain JavaScript, no build step. Every visible string comes from the JSON catalog the server
 * renders into <script id="i18n">; every API call carries ?lang= so server messages match.
 * Page state lives in the URL (?lang=&exam=&job=) so a reload or a language switch resumes it.
 * When the API needs tokens (API_AUTH=tokens) the server renders this page's own short-lived
 * token into <meta name="exams-api-token">, sent with every API call as a bearer token.
 */
(() => {
  "use strict";

  const MESSAGES = JSON.parse(document.getElementById("i18n").textContent);
  const TOKEN_META = document.querySelector('meta[name="exams-api-token"]');
  const API_TOKEN = TOKEN_META ? TOKEN_META.content : null;
  const LANG = document.documentElement.lang || "en";
  const POLL_MS = 2000;
  const MAX_BACKOFF_MS = 15000;
  const TERMINAL = new Set(["completed", "failed", "cancelled"]);
  // Latin digits in both languages: ids, codes and the server's messages use them too.
  const NUMBER = new Intl.NumberFormat(LANG === "ar" ? "ar-u-nu-latn" : LANG, { maximumFractionDigits: 2 });

  const $ = (id) => document.getElementById(id);
  const els = {
    problem: $("problem"),
    problemTitle: $("problem-title"),
    problemDetail: $("problem-detail"),
    examList: $("exam-list"),
    stages: {
      choose: $("stage-choose"),
      answer: $("stage-answer"),
      progress: $("stage-progress"),
      result: $("stage-result"),
      failed: $("stage-failed"),
    },
    examCode: $("exam-code"),
    examTitle: $("exam-title"),
    examMeta: $("exam-meta"),
    form: $("exam-form"),
    studentId: $("student-id"),
    questions: $("questions"),
    formError: $("form-error"),
    answered: $("answered-count"),
    submit: $("submit-btn"),
    progressBar: $("progress-bar"),
    progressStep: $("progress-step"),
    progressPercent: $("progress-percent"),
    progressAttempt: $("progress-attempt"),
    progressConnection: $("progress-connection"),
    progressJob: $("progress-job"),
    progressExam: $("progress-exam"),
    resultBody: $("result-body"),
    failedHeading: $("failed-heading"),
    failedHint: $("failed-hint"),
    failedMessage: $("failed-message"),
  };

  const state = {
    exams: [],
    exam: null, // the exam detail being answered
    attempt: null, // {key, body}: one Idempotency-Key per distinct submission
    submitting: false,
    jobId: null,
    pollTimer: null,
    pollFailures: 0,
  };

  /* ---------- small helpers ---------- */

  function t(key, params) {
    const text = Object.hasOwn(MESSAGES, key) ? MESSAGES[key] : key;
    if (!params) return text;
    return text.replace(/\{(\w+)\}/g, (match, name) => (Object.hasOwn(params, name) ? String(params[name]) : match));
  }

  /** Like t(), but placeholders may be DOM nodes (e.g. a <bdi> isolating "6 / 8" inside Arabic). */
  function tNodes(key, params) {
    const text = Object.hasOwn(MESSAGES, key) ? MESSAGES[key] : key;
    return text.split(/(\{\w+\})/).filter(Boolean).map((part) => {
      const name = part.startsWith("{") && part.endsWith("}") ? part.slice(1, -1) : null;
      return name !== null && Object.hasOwn(params, name) ? params[name] : part;
    });
  }

  const num = (value) => NUMBER.format(Number(value));
  /** "a / b" as a left-to-right island, so right-to-left text never shows it as "b / a". */
  const fraction = (a, b) => h("bdi", { dir: "ltr" }, `${num(a)} / ${num(b)}`);

  function topicLabel(topic) {
    const key = `page.topic.${topic}`;
    if (Object.hasOwn(MESSAGES, key)) return MESSAGES[key];
    const words = String(topic).replace(/[_-]+/g, " ").trim();
    return words.charAt(0).toUpperCase() + words.slice(1);
  }

  /** Build an element: h("p", {class: "x", dir: "auto"}, "text", child, …). Text is never parsed as HTML. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "dataset") Object.assign(el.dataset, value);
      else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
      else el.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  // A run of Latin letters, digits and maths ("2x + 3 = 11", "180°", "CO2"): inside Arabic text the
  // bidi algorithm would reorder it ("11 = 3 + 2x"), so it is isolated as left-to-right.
  const LTR_RUN = /[A-Za-z0-9(][A-Za-z0-9\u00b2\u00b3 .,:+\-\u2212\u00d7\u00f7=<>\u2264\u2265()^/\u00b0%']*[A-Za-z0-9\u00b2\u00b3)\u00b0%]|[A-Za-z0-9]/g;

  /** Text as nodes, with embedded left-to-right runs isolated on right-to-left pages. */
  function bidi(text) {
    const value = String(text);
    if (document.documentElement.dir !== "rtl") return [value];
    const nodes = [];
    let last = 0;
    for (const match of value.matchAll(LTR_RUN)) {
      if (match.index > last) nodes.push(value.slice(last, match.index));
      nodes.push(h("bdi", { dir: "ltr" }, match[0]));
      last = match.index + match[0].length;
    }
    if (last < value.length) nodes.push(value.slice(last));
    return nodes;
  }

  function uuid() {
    if (window.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
    // Plain-HTTP deployments have no randomUUID (secure contexts only): build a v4 UUID by hand.
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  function apiUrl(path) {
    const url = new URL(path, window.location.origin);
    url.searchParams.set("lang", LANG);
    return url.toString();
  }

  /** fetch + JSON; resolves {response, data} (data null when the body is not JSON), rejects on network errors. */
  async function api(path, options = {}) {
    const headers = { Accept: "application/json, application/problem+json", "Accept-Language": LANG };
    if (API_TOKEN) headers.Authorization = `Bearer ${API_TOKEN}`;
    const response = await fetch(apiUrl(path), { cache: "no-store", ...options, headers: { ...headers, ...options.headers } });
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    return { response, data };
  }

  function retryAfterMs(response, fallback) {
    const raw = response && response.headers.get("Retry-After");
    const seconds = raw === null || raw === undefined ? NaN : Number(raw);
    if (Number.isFinite(seconds) && seconds >= 0) return Math.min(Math.max(seconds * 1000, 500), 60000);
    return fallback;
  }

  /* ---------- URL state and language links ---------- */

  function setUrl(changes) {
    const url = new URL(window.location.href);
    for (const [name, value] of Object.entries(changes)) {
      if (value) url.searchParams.set(name, value);
      else url.searchParams.delete(name);
    }
    url.searchParams.set("lang", LANG);
    window.history.replaceState(null, "", url);
    syncLanguageLinks();
  }

  function syncLanguageLinks() {
    const here = new URL(window.location.href);
    for (const link of document.querySelectorAll(".lang-switch__link[data-lang]")) {
      const params = new URLSearchParams(here.search);
      params.set("lang", link.dataset.lang);
      link.setAttribute("href", `?${params.toString()}`);
    }
  }

  /* ---------- notices ---------- */

  function showProblem(title, detail) {
    els.problemTitle.textContent = title || t("page.error.heading");
    els.problemDetail.textContent = detail || "";
    els.problemDetail.hidden = !detail;
    els.problem.hidden = false;
  }

  function hideProblem() {
    els.problem.hidden = true;
  }

  /** A 401 with a page token: the page's session has expired (it lasts hours); a reload renews it. */
  const sessionExpired = (response) => Boolean(API_TOKEN) && response && response.status === 401;

  function showResponseProblem(response, data) {
    if (sessionExpired(response)) showProblem(data && data.title, t("page.error.session_expired"));
    else if (data && (data.title || data.detail)) showProblem(data.title, data.detail);
    else showProblem(t("page.error.heading"), t("page.error.unexpected", { status: response.status }));
  }

  /* ---------- stages ---------- */

  function showStage(name) {
    for (const [key, el] of Object.entries(els.stages)) {
      el.hidden = key !== name;
    }
    const step = { choose: "choose", answer: "answer", progress: "answer", result: "result", failed: "result" }[name];
    for (const li of document.querySelectorAll(".stepper__step")) {
      const order = ["choose", "answer", "result"];
      li.classList.toggle("is-done", order.indexOf(li.dataset.step) < order.indexOf(step));
      if (li.dataset.step === step) li.setAttribute("aria-current", "step");
      else li.removeAttribute("aria-current");
    }
    document.body.dataset.stage = name;
  }

  function stopPolling() {
    if (state.pollTimer) window.clearTimeout(state.pollTimer);
    state.pollTimer = null;
  }

  /* ---------- exam list ---------- */

  async function loadExams() {
    els.examList.setAttribute("aria-busy", "true");
    let result;
    try {
      result = await api("/api/exams");
    } catch {
      renderListError(t("page.error.network"));
      return;
    }
    const { response, data } = result;
    if (!response.ok || !data || !Array.isArray(data.items)) {
      renderListError((data && data.detail) || t("page.exams.load_failed"));
      return;
    }
    state.exams = data.items;
    renderExamList();
  }

  function renderListError(message) {
    els.examList.setAttribute("aria-busy", "false");
    els.examList.replaceChildren(
      h("div", { class: "notice notice--error" },
        h("p", { class: "notice__detail" }, message),
        h("button", { type: "button", class: "btn btn--ghost btn--small", onclick: loadExams }, t("page.error.retry"))),
    );
  }

  function renderExamList() {
    els.examList.setAttribute("aria-busy", "false");
    if (!state.exams.length) {
      els.examList.replaceChildren(h("p", { class: "muted" }, t("page.exams.empty")));
      return;
    }
    const cards = state.exams.map((exam) => {
      const closed = exam.status !== "open";
      const hintId = `exam-hint-${exam.code}`;
      return h("li", { class: "exam-list__item" },
        h("button", {
          type: "button",
          class: `exam-card${closed ? " is-closed" : ""}`,
          "data-code": exam.code,
          "data-status": exam.status,
          disabled: closed,
          "aria-disabled": closed ? "true" : null,
          "aria-describedby": closed ? hintId : null,
          onclick: closed ? null : () => selectExam(exam.code),
        },
        h("span", { class: "exam-card__top" },
          h("span", { class: "code", dir: "ltr" }, exam.code),
          h("span", { class: `badge ${closed ? "badge--muted" : "badge--success"}` },
            t(closed ? "page.exams.closed" : "page.exams.open"))),
        h("span", { class: "exam-card__title" }, exam.title),
        h("span", { class: "exam-card__meta" },
          h("span", {}, t("page.exams.questions", { count: num(exam.question_count) })),
          h("span", { "aria-hidden": "true" }, "·"),
          h("span", {}, t("page.exams.pass_mark", { value: num(exam.pass_percentage) }))),
        closed
          ? h("span", { class: "exam-card__hint", id: hintId }, t("page.exams.closed_hint"))
          : h("span", { class: "exam-card__cta", "aria-hidden": "true" }, t("page.exams.start"), h("span", { class: "arrow" }, "→")))
      );
    });
    els.examList.replaceChildren(h("ul", { class: "exam-list__grid", role: "list" }, cards));
  }

  /* ---------- the answer form ---------- */

  async function selectExam(code, options = {}) {
    hideProblem();
    stopPolling();
    let result;
    try {
      result = await api(`/api/exams/${encodeURIComponent(code)}`);
    } catch {
      showProblem(t("page.exam.load_failed"), t("page.error.network"));
      return false;
    }
    const { response, data } = result;
    if (!response.ok || !data) {
      showResponseProblem(response, data);
      return false;
    }
    if (data.status !== "open" && !options.readOnly) {
      showProblem(t("page.exams.closed"), t("page.exams.closed_hint"));
      return false;
    }
    state.exam = data;
    state.attempt = null;
    renderForm(data);
    setUrl({ exam: code, job: options.keepJob ? state.jobId : null });
    if (!options.readOnly) {
      showStage("answer");
      els.stages.answer.scrollIntoView({ block: "start", behavior: "smooth" });
      els.studentId.focus({ preventScroll: true });
    }
    return true;
  }

  /** Split "Solve … (a) x = 3  (b) x = 4" into the stem and one text per option, when every option is there. */
  function splitOptions(prompt, options) {
    if (!options || !options.length) return { stem: prompt, texts: null };
    const marks = options.map((option) => prompt.indexOf(`(${option})`));
    const ordered = marks.every((pos, i) => pos >= 0 && (i === 0 || pos > marks[i - 1]));
    if (!ordered) return { stem: prompt, texts: null };
    const texts = options.map((option, i) => {
      const start = marks[i] + option.length + 2;
      const end = i + 1 < marks.length ? marks[i + 1] : prompt.length;
      return prompt.slice(start, end).trim();
    });
    if (texts.some((text) => !text)) return { stem: prompt, texts: null };
    return { stem: prompt.slice(0, marks[0]).trim(), texts };
  }

  function choice(type, name, value, letter, text, describedBy) {
    return h("label", { class: "choice" },
      h("input", { type, name, value, class: "choice__input", "aria-describedby": describedBy }),
      letter ? h("span", { class: "choice__letter", dir: "ltr" }, letter) : null,
      h("span", { class: "choice__text", dir: "auto" }, text));
  }

  function renderQuestion(question, index) {
    const id = question.id;
    const promptId = `prompt-${id}`;
    const errorId = `answers.${id}-error`;
    const { stem, texts } = splitOptions(question.prompt, question.options);
    let typeHint = t(`page.form.type.${question.type}`);
    if (question.type === "numeric" && question.tolerance) {
      typeHint = t("page.form.type.numeric_tolerance", { tolerance: num(question.tolerance) });
    }
    let control;
    if (question.type === "single_choice" || question.type === "multiple_choice") {
      const type = question.type === "single_choice" ? "radio" : "checkbox";
      control = h("div", { class: "choices" },
        question.options.map((option, i) => choice(type, id, option, texts ? option : null, texts ? texts[i] : option, errorId)));
    } else if (question.type === "true_false") {
      control = h("div", { class: "choices choices--inline" },
        choice("radio", id, "true", null, t("page.form.true"), errorId),
        choice("radio", id, "false", null, t("page.form.false"), errorId));
    } else if (question.type === "numeric") {
      control = h("input", {
        type: "number", name: id, class: "input input--number", inputmode: "decimal", dir: "ltr",
        step: question.tolerance ? String(question.tolerance) : "any",
        placeholder: t("page.form.answer_placeholder"), "aria-labelledby": promptId, "aria-describedby": errorId,
      });
    } else {
      control = h("input", {
        type: "text", name: id, class: "input", dir: "auto", autocomplete: "off",
        placeholder: t("page.form.answer_placeholder"), "aria-labelledby": promptId, "aria-describedby": errorId,
      });
    }
    return h("li", { class: "question", id: `question-${id}`, "data-qid": id, "data-type": question.type },
      h("fieldset", { class: "question__fieldset" },
        h("legend", { class: "question__legend" },
          h("span", { class: "question__number" }, t("page.form.question", { number: num(index + 1) })),
          h("span", { class: "question__prompt", id: promptId }, bidi(stem))),
        h("div", { class: "question__meta" },
          h("span", { class: "chip chip--topic" }, t("page.form.topic", { topic: topicLabel(question.topic) })),
          h("span", { class: "chip" }, t("page.form.points", { value: num(question.points) })),
          h("span", { class: "chip chip--plain" }, typeHint)),
        control,
        h("p", { class: "field-error", id: errorId, hidden: true })));
  }

  function renderForm(exam) {
    els.examCode.textContent = exam.code;
    els.examTitle.textContent = exam.title;
    els.examMeta.textContent = [
      t("page.exams.questions", { count: num(exam.questions.length) }),
      t("page.exams.pass_mark", { value: num(exam.pass_percentage) }),
    ].join(" · ");
    els.questions.replaceChildren(...exam.questions.map(renderQuestion));
    clearErrors();
    setFormDisabled(false);
    updateAnsweredCount();
  }

  function setFormDisabled(disabled) {
    for (const el of els.form.querySelectorAll("input, button")) el.disabled = disabled;
    els.form.classList.toggle("is-locked", disabled);
  }

  function setSubmitting(busy) {
    state.submitting = busy;
    els.submit.disabled = busy;
    els.submit.classList.toggle("is-busy", busy);
    els.submit.querySelector(".btn__label").textContent = t(busy ? "page.form.submitting" : "page.form.submit");
    els.form.setAttribute("aria-busy", busy ? "true" : "false");
  }

  /** The answers as the API wants them; unanswered questions are left out. */
  function collectAnswers() {
    const answers = {};
    const clientErrors = [];
    for (const question of state.exam.questions) {
      const id = question.id;
      const inputs = Array.from(els.form.querySelectorAll(`[name="${CSS.escape(id)}"]`));
      if (question.type === "single_choice") {
        const checked = inputs.find((input) => input.checked);
        if (checked) answers[id] = checked.value;
      } else if (question.type === "multiple_choice") {
        const chosen = inputs.filter((input) => input.checked).map((input) => input.value);
        if (chosen.length) answers[id] = chosen;
      } else if (question.type === "true_false") {
        const checked = inputs.find((input) => input.checked);
        if (checked) answers[id] = checked.value === "true";
      } else if (question.type === "numeric") {
        const input = inputs[0];
        if (input.validity.badInput) clientErrors.push({ field: `answers.${id}`, message: t("page.form.bad_number") });
        else if (input.value.trim() !== "") {
          const value = Number(input.value);
          if (Number.isFinite(value)) answers[id] = value;
          else clientErrors.push({ field: `answers.${id}`, message: t("page.form.bad_number") });
        }
      } else {
        const value = inputs[0].value;
        if (value.trim() !== "") answers[id] = value;
      }
    }
    return { answers, clientErrors };
  }

  function updateAnsweredCount() {
    if (!state.exam) return;
    const { answers } = collectAnswers();
    els.answered.textContent = t("page.form.answered", {
      answered: num(Object.keys(answers).length),
      total: num(state.exam.questions.length),
    });
  }

  function clearErrors() {
    els.formError.hidden = true;
    els.formError.replaceChildren();
    for (const el of els.form.querySelectorAll(".field-error")) {
      el.hidden = true;
      el.textContent = "";
    }
    for (const el of els.form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    for (const el of els.form.querySelectorAll(".has-error")) el.classList.remove("has-error");
  }

  /** Put each {field, message} next to its question; return the messages that belong to no field. */
  function showFieldErrors(errors) {
    const unplaced = [];
    let first = null;
    for (const error of errors || []) {
      const field = String(error.field || "");
      const slot = document.getElementById(`${field}-error`);
      if (!slot || !els.form.contains(slot)) {
        unplaced.push(error.message);
        continue;
      }
      slot.textContent = slot.textContent ? `${slot.textContent} ${error.message}` : error.message;
      slot.hidden = false;
      const container = slot.closest(".question, .field");
      container.classList.add("has-error");
      for (const input of container.querySelectorAll("input")) input.setAttribute("aria-invalid", "true");
      first = first || container;
    }
    return { unplaced, first };
  }

  function showFormError(detail, extra) {
    const lines = [detail, ...(extra || [])].filter(Boolean);
    els.formError.replaceChildren(...lines.map((line) => h("p", {}, line)));
    els.formError.hidden = lines.length === 0;
  }

  async function submitAnswers(event) {
    event.preventDefault();
    if (state.submitting || !state.exam) return; // a double click sends one request
    hideProblem();
    clearErrors();
    const { answers, clientErrors } = collectAnswers();
    if (clientErrors.length) {
      const { first } = showFieldErrors(clientErrors);
      showFormError(t("page.form.fix_errors"));
      focusFirstInvalid(first);
      return;
    }
    const body = JSON.stringify({ exam_code: state.exam.code, student_id: els.studentId.value, answers });
    // Same answers, same key: a resend (double click, flaky network) returns the same job.
    if (!state.attempt || state.attempt.body !== body) state.attempt = { key: uuid(), body };
    setSubmitting(true);
    let result;
    try {
      result = await api("/api/exam-results/process", {
        method: "POST",
        headers: { "Content-Type": "application/json", "Idempotency-Key": state.attempt.key },
        body,
      });
    } catch {
      setSubmitting(false);
      showFormError(t("page.error.network"));
      return;
    }
    const { response, data } = result;
    if ((response.status === 202 || response.status === 200) && data && data.job_id) {
      setSubmitting(false);
      setFormDisabled(true);
      startTracking(data, response);
      return;
    }
    setSubmitting(false);
    if (response.status === 422 && data) {
      const { unplaced, first } = showFieldErrors(data.errors);
      showFormError(data.detail || data.title, unplaced);
      focusFirstInvalid(first);
    } else if (sessionExpired(response)) {
      showFormError(t("page.error.session_expired"));
    } else if (data && (data.title || data.detail)) {
      els.formError.replaceChildren(h("p", {}, h("strong", {}, data.title || "")), data.detail ? h("p", {}, data.detail) : "");
      els.formError.hidden = false;
    } else {
      showFormError(t("page.error.unexpected", { status: response.status }));
    }
  }

  function focusFirstInvalid(container) {
    const target = container ? container.querySelector("input") : els.formError;
    if (container) container.scrollIntoView({ block: "center", behavior: "smooth" });
    if (target) target.focus({ preventScroll: true });
  }

  /* ---------- progress ---------- */

  function startTracking(doc, response) {
    state.jobId = doc.job_id;
    state.pollFailures = 0;
    setUrl({ exam: doc.exam_code, job: doc.job_id });
    els.progressJob.textContent = doc.job_id;
    const exam = state.exam && state.exam.code === doc.exam_code ? state.exam : null;
    els.progressExam.textContent = exam ? `${exam.title} · ${exam.code}` : doc.exam_code;
    showStage("progress");
    els.stages.progress.scrollIntoView({ block: "center", behavior: "smooth" });
    handleStatus(doc, response);
  }

  function renderProgress(doc) {
    const value = Math.max(0, Math.min(100, Math.round(Number(doc.progress) || 0)));
    const percent = t("page.progress.percent", { value: num(value) });
    els.progressBar.setAttribute("aria-valuenow", String(value));
    els.progressBar.setAttribute("aria-valuetext", `${doc.current_step_label} — ${percent}`);
    els.progressBar.style.setProperty("--value", `${value}%`);
    els.progressBar.dataset.status = doc.status;
    els.progressStep.textContent = doc.current_step_label;
    els.progressStep.dataset.step = doc.current_step;
    els.progressPercent.textContent = percent;
    const retrying = doc.status === "processing" && Number(doc.attempts) > 1;
    els.progressAttempt.hidden = !retrying;
    els.progressAttempt.textContent = retrying ? t("page.progress.attempt", { attempt: num(doc.attempts) }) : "";
  }

  function handleStatus(doc, response) {
    renderProgress(doc);
    if (doc.status === "completed" && doc.result) {
      stopPolling();
      renderResult(doc);
    } else if (doc.status === "failed" || doc.status === "cancelled") {
      stopPolling();
      renderFailed(doc);
    } else if (!TERMINAL.has(doc.status)) {
      schedulePoll(retryAfterMs(response, POLL_MS));
    }
  }

  function schedulePoll(delay) {
    stopPolling();
    state.pollTimer = window.setTimeout(poll, delay);
  }

  async function poll() {
    const jobId = state.jobId;
    if (!jobId) return;
    let result;
    try {
      result = await api(`/api/exam-results/status/${encodeURIComponent(jobId)}`);
    } catch {
      pollFailed(null);
      return;
    }
    if (jobId !== state.jobId) return; // the student moved on meanwhile
    const { response, data } = result;
    if (response.ok && data) {
      state.pollFailures = 0;
      els.progressConnection.hidden = true;
      handleStatus(data, response);
    } else if (response.status === 404 || sessionExpired(response)) {
      stopPolling();
      showResponseProblem(response, data);
    } else {
      pollFailed(response);
    }
  }

  function pollFailed(response) {
    state.pollFailures += 1;
    els.progressConnection.hidden = false;
    const backoff = Math.min(POLL_MS * 2 ** (state.pollFailures - 1), MAX_BACKOFF_MS);
    schedulePoll(retryAfterMs(response, backoff));
  }

  /* ---------- result ---------- */

  function bar(percentage, tone) {
    const value = Math.max(0, Math.min(100, Number(percentage) || 0));
    return h("div", { class: `bar bar--${tone}`, style: `--value:${value}%`, "aria-hidden": "true" }, h("div", { class: "bar__fill" }));
  }

  function toneFor(percentage) {
    if (percentage >= 80) return "good";
    if (percentage >= 50) return "fair";
    return "poor";
  }

  function renderResult(doc) {
    const result = doc.result;
    const exam = state.exam && state.exam.code === doc.exam_code ? state.exam : null;
    const passed = Boolean(result.passed);
    const percentage = Number(result.percentage) || 0;
    const percentText = t("page.progress.percent", { value: num(percentage) });

    const summary = h("div", { class: `result-summary ${passed ? "is-passed" : "is-failed"}` },
      h("div", { class: "score-ring", style: `--value:${Math.max(0, Math.min(100, percentage))}`, role: "img", "aria-label": `${t("page.result.percentage")}: ${percentText}` },
        h("span", { class: "score-ring__value", dir: "ltr" }, percentText)),
      h("div", { class: "result-summary__text" },
        h("span", { class: `badge badge--large ${passed ? "badge--success" : "badge--danger"}`, id: "result-verdict", "data-passed": String(passed) },
          t(passed ? "page.result.passed" : "page.result.not_passed")),
        h("p", { class: "result-summary__message" }, t(passed ? "page.result.passed_message" : "page.result.not_passed_message")),
        h("dl", { class: "stats" },
          h("div", { class: "stats__item" },
            h("dt", {}, t("page.result.score")),
            h("dd", { id: "result-score", dir: "ltr" }, t("page.result.score_value", { score: num(result.score), max: num(result.max_score) }))),
          h("div", { class: "stats__item" },
            h("dt", {}, t("page.result.percentage")),
            h("dd", { id: "result-percentage", dir: "ltr" }, percentText)),
          exam ? h("div", { class: "stats__item" },
            h("dt", {}, t("page.result.pass_mark_label")),
            h("dd", { dir: "ltr" }, t("page.progress.percent", { value: num(exam.pass_percentage) }))) : null)));

    const topics = h("section", { class: "result-section", "aria-labelledby": "result-topics" },
      h("h3", { id: "result-topics" }, t("page.result.topics")),
      h("ul", { class: "topic-list", role: "list" },
        (result.topics || []).map((topic) => {
          const pct = Number(topic.percentage) || 0;
          return h("li", { class: "topic", "data-topic": topic.topic },
            h("div", { class: "topic__head" },
              h("span", { class: "topic__name" }, topicLabel(topic.topic)),
              h("span", { class: "topic__value", dir: "ltr" },
                `${num(topic.score)} / ${num(topic.max_score)} · ${t("page.progress.percent", { value: num(pct) })}`)),
            bar(pct, toneFor(pct)));
        })));

    const prompts = new Map(exam ? exam.questions.map((q, i) => [q.id, { index: i, prompt: splitOptions(q.prompt, q.options).stem }]) : []);
    const questions = h("section", { class: "result-section", "aria-labelledby": "result-questions" },
      h("h3", { id: "result-questions" }, t("page.result.questions")),
      h("ul", { class: "question-results", role: "list" },
        (result.questions || []).map((q, i) => {
          const info = prompts.get(q.question_id);
          const label = t("page.form.question", { number: num(info ? info.index + 1 : i + 1) });
          return h("li", { class: `question-result ${q.correct ? "is-correct" : "is-incorrect"}`, "data-qid": q.question_id, "data-correct": String(Boolean(q.correct)) },
            h("span", { class: "question-result__icon", "aria-hidden": "true" }, q.correct ? "✓" : "✗"),
            h("span", { class: "question-result__text" },
              h("strong", {}, label),
              info ? h("span", { class: "question-result__prompt" }, bidi(info.prompt)) : null),
            h("span", { class: "question-result__points" }, tNodes("page.result.awarded", { fraction: fraction(q.awarded, q.max) })),
            h("span", { class: `badge ${q.correct ? "badge--success" : "badge--danger"}` }, t(q.correct ? "page.result.correct" : "page.result.incorrect")));
        })));

    const recs = result.recommendations || [];
    const source = result.recommendations_source ? t(`page.result.source.${result.recommendations_source}`) : "";
    const recommendations = h("section", { class: "result-section", "aria-labelledby": "result-recs" },
      h("div", { class: "result-section__head" },
        h("h3", { id: "result-recs" }, t("page.result.recommendations")),
        source ? h("span", { class: "chip chip--plain", "data-source": result.recommendations_source }, source) : null),
      // Set when the AI tutor was unavailable and rule-based recommendations stood in.
      result.recommendations_note
        ? h("p", { class: "recommendations__note muted", role: "note", dir: "auto" }, result.recommendations_note)
        : null,
      recs.length
        ? h("ul", { class: "recommendations", role: "list" },
          recs.map((rec) => h("li", { class: `recommendation recommendation--${rec.priority}`, "data-priority": rec.priority },
            h("div", { class: "recommendation__head" },
              h("span", { class: `badge badge--priority-${rec.priority}` }, t(`page.priority.${rec.priority}`)),
              h("span", { class: "chip chip--topic" }, topicLabel(rec.topic))),
            h("p", { class: "recommendation__text", dir: "auto" }, rec.text))))
        : h("p", { class: "muted" }, t("page.result.no_recommendations")));

    els.resultBody.replaceChildren(summary, h("div", { class: "result-grid" }, topics, questions), recommendations);
    showStage("result");
    els.stages.result.focus({ preventScroll: true });
    els.stages.result.scrollIntoView({ block: "start", behavior: "smooth" });
  }

  function renderFailed(doc) {
    const kind = doc.status === "cancelled" ? "cancelled" : "failed";
    els.failedHeading.textContent = t(`page.${kind}.heading`);
    els.failedHint.textContent = t(`page.${kind}.hint`);
    els.failedMessage.textContent = doc.error_message || doc.current_step_label;
    showStage("failed");
    els.stages.failed.focus({ preventScroll: true });
  }

  /* ---------- navigation ---------- */

  function backToList() {
    stopPolling();
    hideProblem();
    state.exam = null;
    state.jobId = null;
    state.attempt = null;
    setUrl({ exam: null, job: null });
    showStage("choose");
    els.stages.choose.scrollIntoView({ block: "start", behavior: "smooth" });
  }

  async function tryAgain() {
    stopPolling();
    state.jobId = null;
    const code = state.exam ? state.exam.code : new URL(window.location.href).searchParams.get("exam");
    if (!code || !(await selectExam(code))) backToList();
  }

  /** Resume a job named in the URL (after a reload or a language switch). */
  async function resumeJob(jobId, examCode) {
    state.jobId = jobId;
    if (examCode) await selectExam(examCode, { readOnly: true, keepJob: true });
    let result;
    try {
      result = await api(`/api/exam-results/status/${encodeURIComponent(jobId)}`);
    } catch {
      showProblem(t("page.error.heading"), t("page.error.network"));
      return;
    }
    const { response, data } = result;
    if (!response.ok || !data) {
      showResponseProblem(response, data);
      state.jobId = null;
      setUrl({ job: null });
      if (state.exam) showStage("answer");
      return;
    }
    if (state.exam && state.exam.code === data.exam_code) setFormDisabled(true);
    startTracking(data, response);
  }

  function init() {
    syncLanguageLinks();
    $("problem-dismiss").addEventListener("click", hideProblem);
    $("change-exam").addEventListener("click", backToList);
    els.form.addEventListener("submit", submitAnswers);
    els.form.addEventListener("input", updateAnsweredCount);
    els.form.addEventListener("change", updateAnsweredCount);
    for (const button of document.querySelectorAll("[data-action='again']")) button.addEventListener("click", tryAgain);
    for (const button of document.querySelectorAll("[data-action='other']")) button.addEventListener("click", backToList);
    showStage("choose");
    const params = new URL(window.location.href).searchParams;
    const listed = loadExams();
    const job = params.get("job");
    const exam = params.get("exam");
    if (job) resumeJob(job, exam);
    else if (exam) listed.then(() => selectExam(exam));
  }

  init();
})();
