/* The dashboard's only script (the CSP allows no inline script): live polling that pauses while
   the tab is hidden, the live dot of a server-sent-events stream, the 401 → login redirect, error
   fragments swapped in, dialogs brought into view and dismissed, "select all" on the failed list.
   Everything else is htmx attributes in the templates. */
(function () {
  "use strict";

  // Polling elements ([data-poll]) skip their requests while the tab is hidden and refresh as
  // soon as it is visible again (the "visible-again" event their hx-trigger listens to).
  document.addEventListener("htmx:beforeRequest", function (event) {
    var elt = event.detail && event.detail.elt;
    if (document.hidden && elt && elt.closest && elt.closest("[data-poll]") && event.detail.requestConfig.verb === "get") {
      event.preventDefault();
    }
  });
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && window.htmx) {
      window.htmx.trigger(document.body, "visible-again");
    }
    document.querySelectorAll("[data-live-indicator]").forEach(function (dot) {
      dot.classList.toggle("is-paused", document.hidden);
    });
  });

  // Live parts fed by server-sent events (htmx's SSE extension) stay connected while the tab is
  // hidden; their dot ([data-stream-indicator]) shows whether the stream is up.
  function streamState(connected) {
    document.querySelectorAll("[data-stream-indicator]").forEach(function (dot) {
      dot.classList.toggle("is-paused", !connected);
    });
  }
  document.addEventListener("htmx:sseOpen", function () {
    streamState(true);
  });
  document.addEventListener("htmx:sseError", function () {
    streamState(false);
  });

  document.addEventListener("htmx:beforeSwap", function (event) {
    if (!event.detail.xhr) {
      return; // a swap that no request answered (a server-sent event)
    }
    var status = event.detail.xhr.status;
    if (status === 401) {
      var next = encodeURIComponent(window.location.pathname + window.location.search);
      window.location.assign((document.body.dataset.loginUrl || "/admin/login") + "?next=" + next);
      return;
    }
    // 403, 404, 409 and 422 carry a localized explanation: show it where the answer was going.
    if (status === 403 || status === 404 || status === 409 || status === 422) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  // A confirmation or notice swapped into a dialog slot may be far from the button clicked (a row
  // low in the jobs list): bring it into view.
  document.addEventListener("htmx:afterSwap", function (event) {
    var target = event.detail && event.detail.target;
    if (target && target.classList && target.classList.contains("dialog-slot") && target.firstElementChild) {
      target.scrollIntoView({ block: "nearest" });
    }
  });

  document.addEventListener("click", function (event) {
    var target = event.target;
    if (!(target instanceof Element)) {
      return;
    }
    var dismiss = target.closest("[data-dismiss]");
    if (dismiss) {
      var box = dismiss.closest(".confirm");
      if (box) {
        box.remove();
      }
    }
  });

  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target instanceof HTMLInputElement && target.hasAttribute("data-check-all")) {
      var form = target.closest("form");
      if (form) {
        form.querySelectorAll("input[name='job_id']").forEach(function (box) {
          box.checked = target.checked;
        });
      }
    }
  });
})();
