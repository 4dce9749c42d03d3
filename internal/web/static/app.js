// jitgate console: progressive enhancement of the server-rendered pages.
// Every change goes through the REST API (same origin, session cookie and
// the X-CSRF-Token header); the API decides what is allowed.
"use strict";

(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  // ---- the REST API ----
  async function api(method, path, body, headers) {
    const opts = { method, credentials: "same-origin", headers: Object.assign({ Accept: "application/json" }, headers || {}) };
    if (method !== "GET" && method !== "HEAD") {
      opts.headers["X-CSRF-Token"] = document.body.dataset.csrf || "";
    }
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, opts);
    } catch (e) {
      return { ok: false, status: 0, data: { error: "The server cannot be reached: " + e.message } };
    }
    let data = null;
    const text = await resp.text();
    if (text) {
      try { data = JSON.parse(text); } catch (e) { data = { error: text }; }
    }
    if (!resp.ok && (!data || !data.error)) data = { error: "The server answered " + resp.status };
    if (resp.status === 401) data.error = "Your session has ended: reload the page to sign in again.";
    return { ok: resp.ok, status: resp.status, data };
  }

  // ---- durations and times ----
  // parseDuration reads a Go duration ("1h30m", "90s") into seconds, or NaN.
  function parseDuration(s) {
    s = (s || "").trim();
    if (!/^(\d+(\.\d+)?(h|m|s|ms))+$/.test(s)) return NaN;
    const unit = { h: 3600, m: 60, s: 1, ms: 0.001 };
    let total = 0;
    for (const m of s.matchAll(/(\d+(?:\.\d+)?)(ms|h|m|s)/g)) total += parseFloat(m[1]) * unit[m[2]];
    return total;
  }
  function fmtSeconds(sec) {
    sec = Math.max(0, Math.floor(sec));
    const h = Math.floor(sec / 3600), m = Math.floor((sec % 3600) / 60), s = sec % 60;
    const pad = (n) => String(n).padStart(2, "0");
    return h > 0 ? `${h}:${pad(m)}:${pad(s)}` : `${m}:${pad(s)}`;
  }
  function fmtMax(sec) {
    const h = Math.floor(sec / 3600), m = Math.floor((sec % 3600) / 60);
    return (h ? h + "h" : "") + (m ? m + "m" : "") || sec + "s";
  }
  function tickCountdowns() {
    const now = Date.now();
    for (const el of $$(".countdown[data-expires]")) {
      const left = (Date.parse(el.dataset.expires) - now) / 1000;
      // Counts down; once past, it says when it ended (the server's
      // rendering of the time when there is one, else the browser's).
      const ended = el.dataset.until || new Date(Date.parse(el.dataset.expires)).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      const text = left > 0 ? fmtSeconds(left) + " left" : "ended " + ended;
      if (el.textContent !== text) el.textContent = text;
      el.classList.toggle("ending", left > 0 && left < 300);
    }
  }

  // ---- copy buttons (connect lines) ----
  function copyButton(text) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "small copy";
    b.dataset.copy = text;
    // The visible word starts the accessible name ("Copy ssh ...").
    const label = document.createElement("span");
    label.className = "copy-label";
    label.textContent = "Copy";
    const what = document.createElement("span");
    what.className = "sr-only";
    what.textContent = " " + text;
    b.append(label, what);
    return b;
  }
  function initCopy() {
    // One listener for every copy button, present or added later.
    document.addEventListener("click", async (e) => {
      const b = e.target.closest("button[data-copy]");
      if (!b) return;
      let ok = true;
      try {
        await navigator.clipboard.writeText(b.dataset.copy);
      } catch (err) {
        // No clipboard permission (plain http, an old browser): select
        // the text so Ctrl+C copies it.
        ok = false;
        const code = b.parentElement && b.parentElement.querySelector("code");
        if (code) { const r = document.createRange(); r.selectNodeContents(code); const sel = getSelection(); sel.removeAllRanges(); sel.addRange(r); }
      }
      const label = b.querySelector(".copy-label") || b;
      label.textContent = ok ? "Copied" : "Press Ctrl+C";
      setTimeout(() => { label.textContent = "Copy"; }, 2000);
    });
  }

  // ---- addresses and prefixes (IPv4 and IPv6) ----
  function parseAddr(s) {
    s = s.trim();
    if (/^\d{1,3}(\.\d{1,3}){3}$/.test(s)) {
      const parts = s.split(".").map(Number);
      if (parts.some((p) => p > 255)) return null;
      return { v: 4, n: parts.reduce((a, p) => (a << 8n) | BigInt(p), 0n), bits: 32 };
    }
    if (s.includes(":")) {
      const halves = s.split("::");
      if (halves.length > 2) return null;
      const words = (h) => (h ? h.split(":") : []);
      const head = words(halves[0]), tail = halves.length === 2 ? words(halves[1]) : [];
      const fill = halves.length === 2 ? 8 - head.length - tail.length : 0;
      const all = head.concat(Array(Math.max(fill, 0)).fill("0"), tail);
      if (all.length !== 8 || all.some((w) => !/^[0-9a-fA-F]{1,4}$/.test(w))) return null;
      return { v: 6, n: all.reduce((a, w) => (a << 16n) | BigInt(parseInt(w, 16)), 0n), bits: 128 };
    }
    return null;
  }
  function parsePrefix(s) {
    const [a, b] = s.trim().split("/");
    const addr = parseAddr(a || "");
    if (!addr) return null;
    if (b === undefined) return addr;
    if (!/^\d+$/.test(b) || Number(b) > addr.bits) return null;
    return { v: addr.v, n: addr.n, bits: Number(b), width: addr.bits };
  }
  // contains reports whether prefix outer holds all of inner.
  function contains(outer, inner) {
    if (outer.v !== inner.v || inner.bits < outer.bits) return false;
    const width = outer.v === 4 ? 32n : 128n;
    const shift = width - BigInt(outer.bits);
    return outer.n >> shift === inner.n >> shift;
  }

  // ---- dashboard ----
  function initDashboard() {
    const search = $("#search");
    const table = $("#targets");
    if (search && table) {
      const rows = $$("tbody tr", table);
      const none = $("#no-match");
      search.addEventListener("input", () => {
        const q = search.value.trim().toLowerCase();
        let shown = 0;
        for (const r of rows) {
          const hit = !q || r.dataset.search.includes(q);
          r.hidden = !hit;
          if (hit) shown++;
        }
        if (none) none.hidden = shown > 0;
      });
    }
    const enable = $("#enable-jit");
    if (!enable) return;
    const picks = $$(".pick");
    const all = $("#select-all");
    const update = () => {
      const n = picks.filter((p) => p.checked && !p.closest("tr").hidden).length;
      enable.disabled = n === 0;
      enable.textContent = n ? `Enable JIT on ${n} selected` : "Enable JIT on selected";
    };
    picks.forEach((p) => p.addEventListener("change", update));
    if (all) {
      all.addEventListener("change", () => {
        picks.forEach((p) => { if (!p.closest("tr").hidden) p.checked = all.checked; });
        update();
      });
    }
    enable.addEventListener("click", async () => {
      const names = picks.filter((p) => p.checked && !p.closest("tr").hidden).map((p) => p.value);
      const status = $("#enable-status");
      const skippedList = $("#enable-skipped");
      enable.disabled = true;
      status.classList.remove("error");
      status.textContent = `Enabling JIT on ${names.length} target${names.length === 1 ? "" : "s"}…`;
      // The server's rule, as `policy enable --default`: a target that got a
      // policy since this page loaded keeps it, an unsupported one is left
      // alone, and each skipped target comes back with its reason.
      const r = await api("POST", "/api/v1/policies/enable", { targets: names, default: true });
      if (!r.ok) {
        status.textContent = `Nothing changed: ${r.data.error}`;
        status.classList.add("error");
        enable.disabled = false;
        return;
      }
      const done = r.data.enabled.length;
      const skipped = r.data.skipped || [];
      status.textContent = `JIT enabled on ${done} target${done === 1 ? "" : "s"}.` +
        (skipped.length ? ` Left ${skipped.length} alone:` : "");
      skippedList.replaceChildren(...skipped.map((s) => {
        const li = document.createElement("li");
        li.dataset.name = s.target;
        li.textContent = `${s.target}: ${s.reason}`;
        return li;
      }));
      skippedList.hidden = skipped.length === 0;
      // Reload to show the new tabs, unless there are reasons to read.
      if (!skipped.length) setTimeout(() => location.reload(), 800);
    });
  }

  // removalText says whether the agent confirmed that a revoked request's
  // ports closed: never "closed" before it did.
  function removalText(q) {
    const rm = q.removal;
    if (!rm) return `Revoked ${q.id}.`;
    if (rm.state === "confirmed") return `Revoked ${q.id}: the agent confirmed the port is closed.`;
    if (rm.state === "deadline_passed") return `Revoked ${q.id}: the kernel closed it at its deadline.`;
    const by = rm.closes_by ? ` The kernel closes it by ${new Date(rm.closes_by).toUTCString()} at the latest.` : "";
    return `Revoked ${q.id}; not yet confirmed closed by the agent${rm.agent ? " of " + rm.agent + " (" + rm.agent_state + ")" : ""}.${by}`;
  }

  // ---- target page: revoke, policy editor ----
  function initRevoke() {
    for (const b of $$("[data-revoke]")) {
      b.addEventListener("click", async () => {
        b.disabled = true;
        const r = await api("POST", `/api/v1/requests/${encodeURIComponent(b.dataset.revoke)}/revoke`, { reason: "revoked in the web console" });
        const status = $("#live-status");
        if (r.ok) {
          status.textContent = removalText(r.data);
          setTimeout(() => location.reload(), 1500);
        } else {
          status.textContent = r.data.error;
          status.classList.add("error");
          b.disabled = false;
        }
      });
    }
  }

  function initPolicyEditor() {
    const form = $("#policy-form");
    if (!form) return;
    const tbody = $("#rules", form);
    const status = $("#policy-status");
    const wire = (row) => $(".r-remove", row).addEventListener("click", () => row.remove());
    // A refusal names the field ("rules[2].max_duration"): show it next to
    // that input of that row, tied to it for screen readers.
    const fieldInput = { port: ".r-port", protocol: ".r-protocol", allowed_sources: ".r-sources", max_duration: ".r-max",
      approval: ".r-mode", approvals: ".r-groups", windows: ".r-windows", justification: ".r-reason-pattern" };
    function clearFieldErrors() {
      for (const el of $$(".field-error", tbody)) el.remove();
      for (const el of $$("[aria-invalid]", tbody)) { el.removeAttribute("aria-invalid"); el.removeAttribute("aria-describedby"); }
    }
    function showFieldError(field, msg) {
      const m = /^rules\[(\d+)\]\.([a-z_]+)/.exec(field || "");
      if (!m) return;
      const row = $$("tr.rule", tbody)[Number(m[1])];
      const input = row && $(fieldInput[m[2]] || ".r-port", row);
      if (!input) return;
      const err = document.createElement("div");
      err.className = "field-error error";
      err.id = "rule-err-" + m[1];
      err.textContent = msg.replace(/^rules\[\d+\][.a-z_\[\]0-9]*: /, "");
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", err.id);
      input.closest("td").appendChild(err);
      input.focus();
    }
    $$("tr.rule", tbody).forEach(wire);
    $("#add-rule").addEventListener("click", () => {
      const row = $("#rule-template").content.firstElementChild.cloneNode(true);
      row.dataset.rule = "{}";
      tbody.appendChild(row);
      wire(row);
      $(".r-port", row).focus();
    });
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const rules = [];
      for (const row of $$("tr.rule", tbody)) {
        // Start from the rule as the API gave it, so fields the editor does
        // not show (publishing, mapped ports, ...) are kept.
        let rule = {};
        try { rule = JSON.parse(row.dataset.rule || "{}") || {}; } catch (err) { rule = {}; }
        rule.port = Number($(".r-port", row).value);
        rule.protocol = $(".r-protocol", row).value;
        const sources = $(".r-sources", row).value.split(/[\s,]+/).filter(Boolean);
        if (sources.length) rule.allowed_sources = sources; else delete rule.allowed_sources;
        const max = $(".r-max", row).value.trim();
        if (max) rule.max_duration = max; else delete rule.max_duration;
        rule.approval = $(".r-mode", row).value === "manual"
          ? { mode: "manual", approvals: Number($(".r-approvals", row).value) || 1 }
          : { mode: "auto" };
        // Approvals by group, "group:dba=1, group:security=1": the server
        // checks them (and makes the rule manual); a bad one comes back as
        // a field error.
        const groups = $(".r-groups", row).value.split(",").map((g) => g.trim()).filter(Boolean).map((g) => {
          const i = g.lastIndexOf("=");
          return i > 0 && /^[0-9]+$/.test(g.slice(i + 1)) ? { from: g.slice(0, i).trim(), count: Number(g.slice(i + 1)) } : { from: g, count: 1 };
        });
        if (groups.length) {
          rule.approvals = groups;
          if (rule.approval.mode === "auto") rule.approval = { mode: "manual" };
        } else delete rule.approvals;
        const windows = $(".r-windows", row).value.split(";").map((w) => w.trim()).filter(Boolean);
        if (windows.length) rule.windows = windows; else delete rule.windows;
        const pattern = $(".r-reason-pattern", row).value.trim();
        const required = $(".r-reason-req", row).checked;
        const j = Object.assign({}, rule.justification || {});
        j.required = required;
        if (pattern) j.pattern = pattern; else delete j.pattern;
        if (j.required || j.pattern || j.min_length) rule.justification = j; else delete rule.justification;
        if ($(".r-close", row).checked) rule.close_established = true; else delete rule.close_established;
        rules.push(rule);
      }
      clearFieldErrors();
      status.classList.remove("error");
      status.textContent = "Saving…";
      // Name the policy this page shows: if another editor saved since,
      // the server refuses (412) instead of overwriting their change.
      const pre = form.dataset.etag ? { "If-Match": form.dataset.etag } : { "If-None-Match": "*" };
      const r = await api("PUT", `/api/v1/targets/${encodeURIComponent(form.dataset.target)}/policy`, { rules }, pre);
      if (r.status === 412) {
        status.textContent = "Someone else changed this policy since the page loaded: nothing was saved. Reload the page to see their change, then edit again.";
        status.classList.add("error");
        return;
      }
      if (r.ok) {
        status.textContent = r.data.changed ? "Saved: the agent applies it now." : "Saved (no change).";
        setTimeout(() => location.reload(), 600);
      } else {
        status.textContent = (r.data.field ? r.data.field + ": " : "") + r.data.error;
        showFieldError(r.data.field, r.data.error);
        status.classList.add("error");
      }
    });
    const remove = $("#remove-policy");
    if (remove) {
      remove.addEventListener("click", async () => {
        if (!confirm("Remove the JIT policy? Its ports open to every source again.")) return;
        // The policy shown is the one removed: another editor's newer one is refused (412).
        const r = await api("DELETE", `/api/v1/targets/${encodeURIComponent(form.dataset.target)}/policy`, undefined,
          form.dataset.etag ? { "If-Match": form.dataset.etag } : undefined);
        if (r.ok) location.reload();
        else { status.textContent = r.data.error; status.classList.add("error"); }
      });
    }
  }

  // ---- request access ----
  function initRequest() {
    const dialog = $("#request-dialog");
    if (!dialog) return;
    const form = $("#request-form");
    const follow = $("#follow");
    const ports = $$("input[name=port]", form);
    const duration = $("#duration"), source = $("#source"), reason = $("#reason");
    const start = $("#start");
    const other = $("#source-other");
    let changed = false;
    let current = null; // the request followed
    let lastBody = null;
    let generation = 0;

    $("#open-request").addEventListener("click", () => {
      form.hidden = false;
      follow.hidden = true;
      dialog.showModal();
      check(false);
    });
    $$(".close-dialog", dialog).forEach((b) => b.addEventListener("click", () => dialog.close()));
    dialog.addEventListener("close", () => {
      generation++; // stop following
      if (changed) location.reload();
    });
    source.addEventListener("focus", () => { other.checked = true; });

    const selected = () => ports.filter((p) => p.checked);
    const setErr = (field, msg) => {
      const el = $("#err-" + field);
      el.textContent = msg || "";
      const input = { ports: $("#f-ports"), source: source, duration: duration, reason: reason, start: start }[field];
      if (input) {
        if (msg) input.setAttribute("aria-invalid", "true");
        else input.removeAttribute("aria-invalid");
      }
    };

    // check mirrors the policy's rules so a refusal shows at once, next to
    // the field it concerns. The server checks again and has the last word.
    function check(focus) {
      const errs = {};
      const sel = selected();
      if (!sel.length) errs.ports = "Choose at least one port.";
      const maxSec = sel.length ? Math.min(...sel.map((p) => Number(p.dataset.max))) : 0;
      $("#max-duration").textContent = sel.length ? fmtMax(maxSec) : "–";
      const d = parseDuration(duration.value);
      if (isNaN(d)) errs.duration = "Write a duration such as 30m, 1h or 2h30m.";
      else if (d < 1) errs.duration = "Too short.";
      else {
        const over = sel.filter((p) => d > Number(p.dataset.max));
        if (over.length) errs.duration = over.map((p) => `${p.value} allows at most ${p.dataset.maxText}`).join("; ") + ".";
      }
      let src;
      if (other.checked) {
        src = parsePrefix(source.value);
        if (!src) errs.source = "Write an address (198.51.100.7) or a prefix (198.51.100.0/24).";
      } else {
        src = parseAddr(form.dataset.clientAddr);
      }
      if (src && !errs.source) {
        for (const p of sel) {
          const allowed = (p.dataset.sources || "").split(/[\s,]+/).filter(Boolean).map(parsePrefix).filter(Boolean);
          if (allowed.length) {
            if (!allowed.some((a) => contains(a, src))) {
              errs.source = `${p.value} accepts only sources inside ${p.dataset.sources}.`;
              break;
            }
          } else if (src.bits < (src.v === 4 ? 32 : 128)) {
            errs.source = `${p.value} accepts a single address, not a prefix.`;
            break;
          }
        }
      }
      const text = reason.value.trim();
      const helps = [];
      for (const p of sel) {
        const min = Number(p.dataset.reasonMin || 0);
        const pattern = p.dataset.reasonPattern;
        if (pattern) helps.push(`${p.value}: must match ${pattern}`);
        else if (p.dataset.reasonRequired === "true" || min) helps.push(`${p.value}: required`);
        if ((p.dataset.reasonRequired === "true" || min) && !text) errs.reason = `${p.value} needs a justification.`;
        else if (min && text.length < min) errs.reason = `${p.value} needs at least ${min} characters.`;
        // A pattern is not tested here: JavaScript's backtracking engine can
        // take exponential time on a pattern RE2 runs in linear time (say
        // (a+)+$), so a policy-admin could freeze requesters' browsers. The
        // help line shows the pattern; the server's RE2 decides, and its
        // refusal is shown next to the field.
      }
      $("#reason-help").textContent = helps.length ? helps.join("; ") : "Optional for these ports; it is recorded in the audit trail.";
      // A scheduled start: the server has the last word (the limits are
      // access.CheckStart's); this only catches an obvious slip.
      if (start && start.value && isNaN(new Date(start.value).getTime())) errs.start = "Choose a date and time.";
      for (const f of ["ports", "duration", "source", "reason", "start"]) setErr(f, errs[f]);
      $("#err-form").textContent = "";
      const first = ["ports", "source", "duration", "reason", "start"].find((f) => errs[f]);
      if (focus && first) ({ ports: ports[0], source, duration, reason, start })[first].focus();
      return !first;
    }
    form.addEventListener("input", () => check(false));
    form.addEventListener("change", () => check(false));

    // serverField says which field a 403/422 of the API concerns.
    function serverField(err) {
      if (err.field) {
        const f = err.field.replace(/\[.*$/, "");
        if (["ports", "duration", "source", "reason"].includes(f)) return f;
        if (f === "starts_at") return "start";
        return "form";
      }
      const m = (err.error || "").toLowerCase();
      if (m.startsWith("starts_at")) return "start";
      if (m.includes("source")) return "source";
      if (m.includes("duration")) return "duration";
      if (m.includes("reason") || m.includes("justification")) return "reason";
      if (err.rule || m.includes("port")) return "ports";
      return "form";
    }

    async function submit(body) {
      const r = await api("POST", "/api/v1/requests", body);
      if (!r.ok) return r;
      changed = true;
      lastBody = body;
      followRequest(r.data);
      return r;
    }

    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      if (!check(true)) return;
      const body = {
        target: form.dataset.target,
        ports: selected().map((p) => p.value),
        source: other.checked ? source.value.trim() : "my-ip",
        duration: duration.value.trim(),
        reason: reason.value.trim(),
      };
      // datetime-local is the browser's local time; the API takes RFC 3339.
      if (start && start.value) body.starts_at = new Date(start.value).toISOString();
      const btn = $("#request-submit");
      btn.disabled = true;
      const r = await submit(body);
      btn.disabled = false;
      if (!r.ok) {
        const f = serverField(r.data);
        setErr(f, r.data.error);
        const focusEl = { ports: ports[0], source: other.checked ? source : ports[0], duration, reason, start }[f];
        if (focusEl) focusEl.focus();
      }
    });

    const terminal = (s) => ["expired", "revoked", "failed", "superseded", "denied"].includes(s);
    const explain = {
      pending_approval: (q) => `Waiting for ${q.approvals_required - (q.decisions || []).filter((d) => d.decision === "approve").length} more approval(s).`,
      scheduled: (q) => `Scheduled: opens at ${new Date(q.starts_at).toLocaleString()} if your roles and the policy still allow it then.`,
      pending: () => "Approved; waiting for the target's agent to open the port.",
      active: () => "Open now.",
      expired: () => "The grant has ended.",
      revoked: (q) => (q.message || "Revoked.") + (q.removal && q.removal.state === "unconfirmed" ? " " + removalText(q) : ""),
      failed: (q) => q.message || "The agent could not open the port.",
      denied: (q) => q.message || "Denied by an approver.",
      superseded: (q) => q.message || "A newer request took over its grants.",
    };
    function render(q) {
      current = q;
      form.hidden = true;
      follow.hidden = false;
      $("#follow-id").textContent = q.id;
      const st = $("#follow-state");
      st.textContent = q.state.replace(/_/g, " ");
      st.className = "state state-" + q.state.replace(/_/g, "-");
      $("#follow-msg").textContent = (explain[q.state] || (() => ""))(q);
      const active = q.state === "active";
      $("#follow-expires").hidden = !active;
      const cd = $("#follow-countdown");
      if (active) cd.dataset.expires = q.expires_at; else delete cd.dataset.expires;
      const list = $("#connect-list");
      list.replaceChildren(...(q.connect || []).map((c) => {
        const li = document.createElement("li");
        const code = document.createElement("code");
        code.textContent = c;
        li.appendChild(code);
        li.append(" ", copyButton(c));
        return li;
      }));
      $("#follow-connect").hidden = !(active && q.connect && q.connect.length);
      $("#follow-extend").hidden = !(active || q.state === "pending");
      $("#follow-revoke").hidden = terminal(q.state);
      tickCountdowns();
    }
    async function followRequest(q) {
      const mine = ++generation;
      render(q);
      $("#follow-error").textContent = "";
      while (mine === generation && !terminal(current.state)) {
        const r = await api("GET", `/api/v1/requests/${encodeURIComponent(current.id)}?wait=25s&version=${current.version}`);
        if (mine !== generation) return;
        if (!r.ok) {
          $("#follow-error").textContent = r.data.error;
          if (r.status === 401 || r.status === 403 || r.status === 404) return;
          await new Promise((res) => setTimeout(res, 2000));
          continue;
        }
        $("#follow-error").textContent = "";
        render(r.data);
      }
    }
    $("#follow-extend").addEventListener("click", async () => {
      // A new request for the same ports and source extends the live grant.
      const r = await submit(lastBody || {
        target: current.target, ports: current.ports, source: current.source,
        duration: current.duration, reason: current.reason,
      });
      if (!r.ok) $("#follow-error").textContent = r.data.error;
    });
    $("#follow-revoke").addEventListener("click", async () => {
      const r = await api("POST", `/api/v1/requests/${encodeURIComponent(current.id)}/revoke`, { reason: "revoked in the web console" });
      if (r.ok) { changed = true; generation++; render(r.data); }
      else $("#follow-error").textContent = r.data.error;
    });
  }

  // ---- approvals ----
  function initApprovals() {
    for (const form of $$("form.decide")) {
      let decision = "approve";
      $$("button[name=decision]", form).forEach((b) => b.addEventListener("click", () => { decision = b.value; }));
      form.addEventListener("submit", async (e) => {
        e.preventDefault();
        const status = $(".status", form);
        const reason = form.elements.reason.value.trim();
        if (decision === "deny" && !reason) {
          status.textContent = "Say why you deny it: the requester sees your reason.";
          status.classList.add("error");
          form.elements.reason.focus();
          return;
        }
        $$("button", form).forEach((b) => { b.disabled = true; });
        const r = await api("POST", `/api/v1/requests/${encodeURIComponent(form.dataset.id)}/${decision}`,
          { reason, version: Number(form.dataset.version) });
        if (r.ok) {
          status.classList.remove("error");
          const st = r.data.state.replace(/_/g, " ");
          status.textContent = decision === "approve" ? `Approved; the request is now ${st}.` : `Denied; the request is now ${st}.`;
          form.dataset.version = r.data.version;
          $$("button", form).forEach((b) => { b.disabled = false; });
          return;
        }
        status.classList.add("error");
        status.textContent = r.status === 409
          ? "This request changed since the page was loaded (another approver decided, or it expired): nothing was done. Reload to see it as it is now."
          : r.data.error;
        if (r.status !== 409) $$("button", form).forEach((b) => { b.disabled = false; });
      });
    }
  }

  // ---- break-glass alerts (dashboard, auditors and admins) ----
  function initAlertReviews() {
    for (const form of $$("form.review-alert")) {
      form.addEventListener("submit", async (e) => {
        e.preventDefault();
        const status = $(".status", form);
        $$("button", form).forEach((b) => { b.disabled = true; });
        const r = await api("POST", `/api/v1/breakglass/alerts/${encodeURIComponent(form.dataset.id)}/review`,
          { note: form.elements.note.value.trim() });
        if (r.ok || r.status === 409) {
          status.classList.remove("error");
          status.textContent = r.ok ? "Reviewed." : "Already reviewed by someone else.";
          return;
        }
        status.classList.add("error");
        status.textContent = r.data.error;
        $$("button", form).forEach((b) => { b.disabled = false; });
      });
    }
  }

  // ---- bastion sessions ----
  // initSessions wires the Disconnect buttons (shown only to roles that may
  // kill sessions; the API decides per session): a dialog asks for the
  // reason, POST /api/v1/sessions/{id}/kill ends the session, and the row
  // shows how it ended.
  // fmtBytes writes a byte count as the server's page does (bytesText).
  function fmtBytes(n) {
    if (n < 1024) return `${n} B`;
    let div = 1024, exp = 0;
    for (let m = Math.floor(n / 1024); m >= 1024 && exp < 4; m = Math.floor(m / 1024)) { div *= 1024; exp++; }
    return `${(n / div).toFixed(1)} ${"KMGTP"[exp]}iB`;
  }
  // refreshLive polls the live sessions every few seconds: bytes move on,
  // a session that ended is marked so, and new ones are announced (reload
  // to list them with their details).
  function refreshLive() {
    const table = $("#live-sessions");
    const note = $("#sessions-new");
    if (!table && !$("#no-live")) return;
    setInterval(async () => {
      const r = await api("GET", "/api/v1/sessions?active=true");
      if (!r.ok) return;
      const live = new Map(r.data.map((x) => [x.id, x]));
      const shown = new Set();
      for (const row of table ? $$("tbody tr[data-id]", table) : []) {
        shown.add(row.dataset.id);
        const x = live.get(row.dataset.id);
        const cell = $(".bytes", row);
        if (x) {
          cell.textContent = `${fmtBytes(x.bytes_in)} / ${fmtBytes(x.bytes_out)}`;
          cell.title = `${x.bytes_in} bytes to the target, ${x.bytes_out} bytes back`;
        } else if (!row.dataset.ended) {
          row.dataset.ended = "true";
          const badge = document.createElement("span");
          badge.className = "state state-ended";
          badge.textContent = "ended";
          $(".s-state", row).replaceChildren(badge, document.createTextNode(" reload to see why"));
          const b = $("[data-kill]", row);
          if (b) b.remove();
        }
      }
      const fresh = r.data.filter((x) => !shown.has(x.id)).length;
      note.textContent = fresh ? `${fresh} new session${fresh === 1 ? "" : "s"} started: reload to list ${fresh === 1 ? "it" : "them"}.` : "";
    }, 3000);
  }

  function initSessions() {
    refreshLive();
    const dialog = $("#kill-dialog");
    if (!dialog) return;
    const form = $("#kill-form"), reason = $("#kill-reason"), err = $("#kill-error");
    let button = null;
    for (const b of $$("[data-kill]")) {
      b.addEventListener("click", () => {
        button = b;
        $("#kill-what").textContent = `${b.dataset.who}'s session ${b.dataset.kill} to ${b.dataset.target}.`;
        reason.value = "";
        err.textContent = "";
        dialog.showModal();
        reason.focus();
      });
    }
    $$(".close-dialog", dialog).forEach((b) => b.addEventListener("click", () => dialog.close()));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const text = reason.value.trim();
      if (!text) {
        err.textContent = "Say why you disconnect it: the reason is recorded.";
        reason.focus();
        return;
      }
      const id = button.dataset.kill;
      $("#kill-submit").disabled = true;
      const r = await api("POST", `/api/v1/sessions/${encodeURIComponent(id)}/kill`, { reason: text });
      $("#kill-submit").disabled = false;
      const status = $("#sessions-status");
      if (!r.ok) {
        err.textContent = r.data.error;
        if (r.status === 409) setTimeout(() => location.reload(), 1500);
        return;
      }
      dialog.close();
      const row = $("#session-" + CSS.escape(id));
      row.dataset.ended = "true";
      const cell = $(".s-state", row);
      const badge = document.createElement("span");
      badge.className = "state state-" + (r.data.end_reason || "ended").replace(/_/g, "-");
      badge.textContent = (r.data.end_reason || "ended").replace(/_/g, " ");
      cell.replaceChildren(badge, document.createTextNode(r.data.ended_by ? " by " + r.data.ended_by : ""));
      button.remove();
      status.classList.remove("error");
      status.textContent = `Disconnected ${r.data.principal}'s session ${id} (${r.data.bytes_in} bytes in, ${r.data.bytes_out} out).`;
    });
  }

  // ---- audit ----
  async function initAudit() {
    const el = $("#verify");
    if (!el) return;
    const r = await api("GET", "/api/v1/audit/verify");
    if (!r.ok) {
      el.textContent = "Chain verification unavailable: " + r.data.error;
      return;
    }
    const v = r.data;
    el.classList.add(v.ok ? "ok" : "bad");
    el.textContent = v.ok
      ? `Hash chain intact: ${v.events} events verified. Head ${v.head_hash.slice(0, 16)}…`
      : `Hash chain BROKEN at event ${v.first_bad_id}: ${v.problem}`;
    if (v.ok) el.title = "head hash " + v.head_hash;
  }


  // ---- browser terminal ----
  // The terminal page (templates/terminal.html): xterm.js (vendored) over a
  // WebSocket to GET /api/v1/requests/{id}/terminal. Binary frames carry the
  // terminal's bytes; text frames carry JSON control messages (start, resize
  // from here; status, notice, end from the server).
  //
  // The page's CSP has no 'unsafe-inline': xterm.js's <style> elements get
  // the response's style nonce, and a style attribute it would set with
  // setAttribute goes through the CSSOM (element.style), which CSP allows.
  function cspShims(nonce) {
    const create = Document.prototype.createElement;
    Document.prototype.createElement = function (name, opts) {
      const el = create.call(this, name, opts);
      if (String(name).toLowerCase() === "style") el.nonce = nonce;
      return el;
    };
    const setAttr = Element.prototype.setAttribute;
    Element.prototype.setAttribute = function (name, value) {
      if (String(name).toLowerCase() === "style" && this.style) {
        this.style.cssText = value;
        return;
      }
      return setAttr.call(this, name, value);
    };
  }

  function initTerminal() {
    const form = $("#term-form");
    if (!form || !window.Terminal) return;
    cspShims(form.dataset.nonce);
    const box = $("#terminal");
    const status = $("#term-status");
    const notice = $("#term-notice");
    const lost = $("#term-lost");
    const lostText = $("#term-lost-text");
    const secrets = $$(".term-secret", form);
    const showSecrets = () => {
      const auth = (form.querySelector("input[name=auth]:checked") || {}).value;
      secrets.forEach((el) => { el.hidden = el.dataset.for !== auth; });
    };
    $$("input[name=auth]", form).forEach((r) => r.addEventListener("change", showSecrets));
    showSecrets();

    const term = new window.Terminal({ cursorBlink: true, convertEol: false, fontSize: 14, scrollback: 5000 });
    const fit = new window.FitAddon.FitAddon();
    term.loadAddon(fit);
    let ws = null;
    let ended = false;
    let opened = false;
    let lastStart = null;
    const enc = new TextEncoder();
    const say = (text, bad) => { status.textContent = text; status.classList.toggle("error", !!bad); };
    // started: the start frame went out (the server reads it first: a
    // resize before it would be taken for a broken client).
    let started = false;
    const send = (obj) => { if (started && ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj)); };
    // A paste can be large: it goes in frames of at most 16 KiB (the server
    // refuses frames over 64 KiB).
    term.onData((d) => {
      if (!started || !ws || ws.readyState !== WebSocket.OPEN) return;
      const b = enc.encode(d);
      for (let i = 0; i < b.length; i += 16384) ws.send(b.subarray(i, i + 16384));
    });
    term.onBinary((d) => {
      if (!started || !ws || ws.readyState !== WebSocket.OPEN) return;
      const b = new Uint8Array(d.length);
      for (let i = 0; i < d.length; i++) b[i] = d.charCodeAt(i) & 255;
      ws.send(b);
    });
    term.onResize(({ cols, rows }) => send({ type: "resize", cols, rows }));
    window.addEventListener("resize", () => { if (!box.hidden) fit.fit(); });

    function showLost(text) {
      lostText.textContent = text;
      lost.hidden = false;
    }

    // refused asks the same URL without the upgrade why the WebSocket was
    // refused (a browser does not show a failed upgrade's answer).
    async function refused(url) {
      const r = await api("GET", url);
      return r.ok ? "the server closed the connection" : r.data.error;
    }

    function connect(start) {
      lastStart = start;
      ended = false;
      opened = false;
      started = false;
      lost.hidden = true;
      const q = new URLSearchParams({ port: form.dataset.port, login: start.login });
      const path = `/api/v1/requests/${encodeURIComponent(form.dataset.request)}/terminal?${q}`;
      const proto = location.protocol === "https:" ? "wss:" : "ws:";
      say("Connecting…");
      ws = new WebSocket(`${proto}//${location.host}${path}`);
      ws.binaryType = "arraybuffer";
      ws.onopen = () => {
        opened = true;
        box.hidden = false;
        fit.fit();
        ws.send(JSON.stringify({ type: "start", cols: term.cols, rows: term.rows, auth: start.auth,
          password: start.password, private_key: start.private_key, passphrase: start.passphrase,
          csrf: document.body.dataset.csrf || "" }));
        started = true;
        // The secrets are sent once; a reconnect asks for them again.
        start.password = start.private_key = start.passphrase = "";
        term.focus();
      };
      ws.onmessage = (ev) => {
        if (typeof ev.data !== "string") {
          term.write(new Uint8Array(ev.data));
          return;
        }
        let m;
        try { m = JSON.parse(ev.data); } catch (e) { return; }
        if (m.type === "status") {
          say(m.text === "connected" ? `Connected to ${form.dataset.target} as ${start.login}.` : m.text + "…");
          if (m.text === "connected") form.hidden = true;
        } else if (m.type === "notice") {
          notice.textContent = m.text;
          notice.hidden = false;
        } else if (m.type === "end") {
          ended = true;
          say(`Session ended: ${m.message || m.reason}`, m.reason !== "closed");
          term.write(`\r\n\x1b[1m[session ended: ${m.message || m.reason}]\x1b[0m\r\n`);
          form.hidden = false;
          if (m.reason === "agent_lost" || m.reason === "server_lost") showLost("Connection lost: " + (m.message || m.reason) + ".");
        }
      };
      ws.onclose = async () => {
        if (ended) return;
        ended = true;
        form.hidden = false;
        if (!opened) {
          say("Could not connect: " + await refused(path), true);
          return;
        }
        say("Connection lost.", true);
        term.write("\r\n\x1b[1m[connection lost]\x1b[0m\r\n");
        showLost("Connection lost — reconnect?");
      };
    }

    term.open(box);
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const fd = new FormData(form);
      connect({ login: String(fd.get("login") || ""), auth: String(fd.get("auth") || ""),
        password: String(fd.get("password") || ""), private_key: String(fd.get("private_key") || ""),
        passphrase: String(fd.get("passphrase") || "") });
      // The secrets leave the form as soon as they are sent.
      $$("#term-password, #term-key, #term-passphrase").forEach((el) => { el.value = ""; });
    });
    $("#term-reconnect").addEventListener("click", () => {
      if (lastStart && lastStart.auth === "certificate") {
        term.reset();
        connect({ login: lastStart.login, auth: "certificate" });
      } else {
        lost.hidden = true;
        say("Type the password or key again and connect.");
      }
    });
    form.dataset.ready = "1";
  }

  // ---- recordings: playback and watching ----
  // The playback page (templates/player.html): asciinema-player (vendored)
  // fetches the asciicast from GET /api/v1/sessions/{id}/recording with the
  // console's cookie. Its emulator is WebAssembly (the page's CSP admits
  // 'wasm-unsafe-eval', nothing inline); its <style> elements get the
  // response's nonce (cspShims).
  function initPlayer() {
    const el = $("#player");
    if (!el || !window.AsciinemaPlayer) return;
    cspShims(el.dataset.nonce);
    window.AsciinemaPlayer.create(el.dataset.src, el, { fit: "width", idleTimeLimit: 2, preload: true, controls: true });
    el.dataset.ready = "1";
  }

  // The watch page (templates/watch.html): a read-only xterm.js over the
  // WebSocket GET /api/v1/sessions/{id}/watch. Binary frames are what the
  // target prints; text frames resize it or end it. Nothing typed here is
  // sent.
  function initWatch() {
    const box = $("#watch");
    if (!box || !window.Terminal) return;
    cspShims(box.dataset.nonce);
    const status = $("#watch-status");
    const say = (text, bad) => { status.textContent = text; status.classList.toggle("error", !!bad); };
    const term = new window.Terminal({ disableStdin: true, cursorBlink: false, fontSize: 14, scrollback: 5000 });
    term.open(box);
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const path = `/api/v1/sessions/${encodeURIComponent(box.dataset.session)}/watch`;
    let ended = false;
    let opened = false;
    say("Connecting…");
    const ws = new WebSocket(`${proto}//${location.host}${path}`);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => { opened = true; say("Watching, read-only."); box.dataset.ready = "1"; };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== "string") {
        term.write(new Uint8Array(ev.data));
        return;
      }
      let m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      if (m.type === "resize" && m.cols > 0 && m.rows > 0) {
        term.resize(m.cols, m.rows);
      } else if (m.type === "end") {
        ended = true;
        say(`Session ended (${m.reason || "closed"}).`);
        term.write("\r\n\x1b[1m[session ended]\x1b[0m\r\n");
      }
    };
    ws.onclose = async () => {
      if (ended) return;
      ended = true;
      if (!opened) {
        const r = await api("GET", path);
        say("Could not watch: " + (r.ok ? "the server closed the connection" : r.data.error), true);
        return;
      }
      say("The session ended or the connection was lost.", true);
    };
  }

  document.addEventListener("DOMContentLoaded", () => {
    tickCountdowns();
    setInterval(tickCountdowns, 1000);
    initDashboard();
    initRevoke();
    initPolicyEditor();
    initCopy();
    initRequest();
    initApprovals();
    initAlertReviews();
    initSessions();
    initAudit();
    initTerminal();
    initPlayer();
    initWatch();
  });
})();
