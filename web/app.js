// linkgate web page: POST /api/v1/links and show the short link, the API's
// problem details, and the rate-limit state from the RateLimit and
// Retry-After headers (which linkgate exposes to cross-origin pages).
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const form = $("shorten");
  const urlInput = $("url");
  const codeInput = $("code");
  const submit = $("submit");
  const result = $("result");
  const shortLink = $("short-link");
  const target = $("target");
  const copyButton = $("copy");
  const copied = $("copied");
  const errorBox = $("error");
  const errorTitle = $("error-title");
  const errorDetail = $("error-detail");
  const quota = $("quota");

  // apiBase: ?api=..., else <body data-api>, else this origin. Only http(s)
  // URLs are accepted; a trailing slash is dropped.
  function apiBase() {
    const candidates = [new URLSearchParams(location.search).get("api"), document.body.dataset.api];
    for (const raw of candidates) {
      if (!raw) continue;
      try {
        const u = new URL(raw, location.href);
        if (u.protocol === "http:" || u.protocol === "https:") {
          return (u.origin + u.pathname).replace(/\/+$/, "");
        }
      } catch (e) {
        // not a URL: try the next candidate
      }
    }
    return location.origin;
  }

  // parseRateLimit reads the first item of a RateLimit field such as
  // `"create";r=9;t=2` into {policy, remaining, reset}, or null.
  function parseRateLimit(value) {
    if (!value) return null;
    const item = value.split(",")[0];
    const name = /^\s*"([^"]*)"/.exec(item);
    const r = /;\s*r=(\d+)/.exec(item);
    const t = /;\s*t=(\d+)/.exec(item);
    if (!r) return null;
    return { policy: name ? name[1] : "", remaining: Number(r[1]), reset: t ? Number(t[1]) : null };
  }

  // retryAfterSeconds reads Retry-After as delay-seconds or an HTTP date.
  function retryAfterSeconds(value) {
    if (!value) return null;
    if (/^\d+$/.test(value.trim())) return Number(value.trim());
    const when = Date.parse(value);
    if (Number.isNaN(when)) return null;
    return Math.max(0, Math.ceil((when - Date.now()) / 1000));
  }

  function showQuota(headers) {
    const rl = parseRateLimit(headers.get("RateLimit"));
    if (!rl) return;
    let text = rl.remaining === 1 ? "1 more link" : rl.remaining + " more links";
    text += " can be created now";
    if (rl.reset !== null && rl.remaining === 0) {
      text += "; the quota refills in " + rl.reset + " s";
    }
    quota.textContent = text + ".";
    quota.hidden = false;
  }

  function showError(title, detail) {
    result.hidden = true;
    errorTitle.textContent = title;
    errorDetail.textContent = detail || "";
    errorDetail.hidden = !detail;
    errorBox.hidden = false;
  }

  function showResult(link) {
    errorBox.hidden = true;
    shortLink.textContent = link.short_url;
    shortLink.href = link.short_url;
    target.textContent = "→ " + link.url;
    copyButton.textContent = "Copy";
    result.hidden = false;
  }

  async function readProblem(resp) {
    const type = resp.headers.get("Content-Type") || "";
    if (type.includes("json")) {
      try {
        return await resp.json();
      } catch (e) {
        // fall through to the status line
      }
    }
    return { title: "Request failed (" + resp.status + ")." };
  }

  async function shorten(event) {
    event.preventDefault();
    const url = urlInput.value.trim();
    if (!url) {
      showError("Enter a URL to shorten.", "");
      urlInput.focus();
      return;
    }
    const body = { url: url };
    const code = codeInput.value.trim();
    if (code) body.code = code;

    submit.disabled = true;
    submit.textContent = "Shortening…";
    let resp;
    try {
      resp = await fetch(apiBase() + "/api/v1/links", {
        method: "POST",
        mode: "cors",
        credentials: "omit",
        headers: { "Content-Type": "application/json", "Accept": "application/json" },
        body: JSON.stringify(body),
      });
    } catch (e) {
      showError("Could not reach the link service.",
        "The network failed, or this page's origin is not allowed to call the API (CORS).");
      return;
    } finally {
      submit.disabled = false;
      submit.textContent = "Shorten";
    }

    showQuota(resp.headers);
    if (resp.status === 201) {
      showResult(await resp.json());
      return;
    }
    const problem = await readProblem(resp);
    if (resp.status === 429) {
      const wait = retryAfterSeconds(resp.headers.get("Retry-After"));
      showError(wait !== null ? "Too many requests, try again in " + wait + " s." : "Too many requests, try again later.",
        problem.detail || "");
      return;
    }
    showError(problem.title || "Request failed (" + resp.status + ").", problem.detail || "");
  }

  async function copy() {
    const text = shortLink.textContent;
    try {
      await navigator.clipboard.writeText(text);
    } catch (e) {
      // Clipboard API unavailable (insecure context, permissions): select the
      // text so the user can copy it by hand.
      const range = document.createRange();
      range.selectNodeContents(shortLink);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      copied.textContent = "Select and copy the link by hand.";
      return;
    }
    copyButton.textContent = "Copied";
    copied.textContent = "Short link copied to the clipboard.";
  }

  form.addEventListener("submit", shorten);
  copyButton.addEventListener("click", copy);
})();
