"use strict";

// The chat page of bitnet-serve: streams replies from the server's own /v1/chat/completions.
// Text from the model or the user reaches the page only as text nodes (textContent, append of
// strings), never as HTML.

const STORE = "bitnet-chat"; // localStorage: the conversation and settings survive a reload
const KEY_STORE = "bitnet-api-key"; // sessionStorage: the key lives only as long as the tab

const $ = (id) => document.getElementById(id);
const ui = {
  model: $("model"),
  newChat: $("new-chat"),
  settings: $("settings"),
  settingsForm: $("settings-form"),
  system: $("system"),
  temperature: $("temperature"),
  temperatureValue: $("temperature-value"),
  topP: $("top-p"),
  topPValue: $("top-p-value"),
  maxTokens: $("max-tokens"),
  log: $("log"),
  empty: $("empty"),
  composer: $("composer"),
  prompt: $("prompt"),
  send: $("send"),
  stop: $("stop"),
  keyDialog: $("key-dialog"),
  keyForm: $("key-form"),
  keyError: $("key-error"),
  key: $("key"),
  keyCancel: $("key-cancel"),
};

const DEFAULTS = { system: "", temperature: "0.8", topP: "0.95", maxTokens: "256" };

let chat = load();
let modelId = null;
let running = null; // the AbortController of the reply being streamed
const nodes = new WeakMap(); // message -> its <article>

// --- storage --------------------------------------------------------------------------------

function load() {
  const fresh = { ...DEFAULTS, messages: [] };
  let saved;
  try {
    saved = JSON.parse(localStorage.getItem(STORE) || "null");
  } catch {
    return fresh; // unreadable or unparsable storage: start over rather than fail
  }
  if (!saved || typeof saved !== "object") return fresh;
  for (const k of Object.keys(DEFAULTS)) {
    if (typeof saved[k] === "string") fresh[k] = saved[k];
  }
  const roles = ["user", "assistant", "error"];
  for (const m of Array.isArray(saved.messages) ? saved.messages : []) {
    if (!m || !roles.includes(m.role) || typeof m.content !== "string") continue;
    const message = { role: m.role, content: m.content };
    if (m.role === "error" && typeof m.status === "number") message.status = m.status;
    if (m.role === "assistant") {
      message.stats = m.stats && typeof m.stats === "object" ? m.stats : {};
      // A reply that was streaming when the page went away was cut off there.
      message.state = m.state === "streaming" ? "interrupted" : String(m.state || "done");
    }
    fresh.messages.push(message);
  }
  return fresh;
}

function save() {
  try {
    localStorage.setItem(STORE, JSON.stringify(chat));
  } catch {
    // Storage full or disabled: the page works on, the conversation just won't survive a reload.
  }
}

function apiKey() {
  try {
    return sessionStorage.getItem(KEY_STORE);
  } catch {
    return null;
  }
}

// --- Markdown -------------------------------------------------------------------------------
// Blocks: fenced code (kept verbatim), headings, rules, quotes, lists, paragraphs. Inline: code
// spans, strong, emphasis, strikethrough, links (http, https and mailto only), bare URLs.

const FENCE = /^ {0,3}(`{3,}|~{3,})[ \t]*([^\s`]*)/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const ITEM = /^( {0,3})([-*+]|\d{1,9}[.)])[ \t]+(\S.*)$/;
const ESCAPABLE = "\\`*_{}[]()#+-.!~>|";

function isItem(line) {
  return ITEM.test(line) && !RULE.test(line);
}

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line);
}

function closesFence(line, mark) {
  const rest = line.replace(/^ {0,3}/, "").trimEnd();
  return rest.length >= mark.length && [...rest].every((c) => c === mark[0]);
}

// Each block keeps its source lines (`src`), so a streamed reply re-renders only the blocks
// whose text changed.
function parseBlocks(text) {
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  const blocks = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const start = i;
    let m;
    if (!line.trim()) {
      i++;
      continue;
    }
    if ((m = FENCE.exec(line))) {
      i++;
      while (i < lines.length && !closesFence(lines[i], m[1])) i++;
      const body = lines.slice(start + 1, i).join("\n");
      if (i < lines.length) i++; // the closing fence
      blocks.push({ type: "code", lang: m[2], text: body });
    } else if ((m = HEADING.exec(line))) {
      i++;
      blocks.push({ type: "heading", level: m[1].length, text: m[2] || "" });
    } else if (RULE.test(line)) {
      i++;
      blocks.push({ type: "rule" });
    } else if (QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && (m = QUOTE.exec(lines[i]))) {
        inner.push(m[1]);
        i++;
      }
      blocks.push({ type: "quote", children: parseBlocks(inner.join("\n")) });
    } else if (isItem(line)) {
      const list = parseList(lines, i);
      i = list.end;
      blocks.push(list.block);
    } else {
      const para = [];
      while (i < lines.length && lines[i].trim()) {
        const l = lines[i];
        const interrupts = startsBlock(l) || (isItem(l) && /^ {0,3}([-*+]|1[.)])/.test(l));
        if (para.length && interrupts) break;
        para.push(l.trim());
        i++;
      }
      blocks.push({ type: "para", text: para.join("\n") });
    }
    blocks[blocks.length - 1].src = lines.slice(start, i).join("\n");
  }
  return blocks;
}

// A list from line `i`: items of one kind (bullets or numbers); lines indented under an item,
// and lines that start no other block, belong to it.
function parseList(lines, i) {
  const first = ITEM.exec(lines[i]);
  const ordered = /\d/.test(first[2]);
  const items = [];
  while (i < lines.length) {
    const m = isItem(lines[i]) && ITEM.exec(lines[i]);
    if (!m || /\d/.test(m[2]) !== ordered) break;
    const indent = m[1].length + m[2].length + 1;
    const body = [m[3]];
    i++;
    while (i < lines.length) {
      const l = lines[i];
      if (!l.trim()) {
        let next = i;
        while (next < lines.length && !lines[next].trim()) next++;
        if (next < lines.length && /^(\t| {2,})/.test(lines[next])) {
          body.push(...lines.slice(i, next).map(() => ""));
          i = next;
          continue;
        }
        break;
      }
      if (/^(\t| {2,})/.test(l)) {
        body.push(l.replace(new RegExp(`^(\\t| {1,${Math.max(indent, 2)}})`), ""));
      } else if (isItem(l) || startsBlock(l)) {
        break;
      } else {
        body.push(l.trim());
      }
      i++;
    }
    items.push(parseBlocks(body.join("\n")));
    // A blank line between two items of the list keeps it going.
    let next = i;
    while (next < lines.length && !lines[next].trim()) next++;
    const after = next > i && next < lines.length && isItem(lines[next]) && ITEM.exec(lines[next]);
    if (after && /\d/.test(after[2]) === ordered) i = next;
  }
  return {
    block: { type: "list", ordered, start: ordered ? parseInt(first[2], 10) : 1, items },
    end: i,
  };
}

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function blockNode(b) {
  switch (b.type) {
    case "code": {
      const pre = el("pre");
      const code = el("code", "", b.text);
      if (b.lang) pre.dataset.lang = b.lang;
      pre.append(code);
      return pre;
    }
    case "heading": {
      // h1 and h2 belong to the page; a reply's headings start below them.
      const h = el(`h${Math.min(6, b.level + 2)}`);
      inline(b.text, h);
      return h;
    }
    case "rule":
      return el("hr");
    case "quote": {
      const q = el("blockquote");
      for (const c of b.children) q.append(blockNode(c));
      return q;
    }
    case "list": {
      const list = el(b.ordered ? "ol" : "ul");
      if (b.ordered && b.start !== 1) list.start = b.start;
      for (const item of b.items) {
        const li = el("li");
        if (item.length === 1 && item[0].type === "para") inline(item[0].text, li);
        else for (const c of item) li.append(blockNode(c));
        list.append(li);
      }
      return list;
    }
    default: {
      const p = el("p");
      inline(b.text, p);
      return p;
    }
  }
}

const SPANS = [
  ["**", "strong"],
  ["__", "strong"],
  ["~~", "del"],
  ["*", "em"],
  ["_", "em"],
];

// An emphasis span opening at `i`: its tag, inner text and end, or null.
function spanAt(text, i) {
  for (const [mark, tag] of SPANS) {
    if (!text.startsWith(mark, i)) continue;
    const from = i + mark.length;
    if (from >= text.length || /\s/.test(text[from])) continue;
    if (mark[0] === "_" && i > 0 && /\w/.test(text[i - 1])) continue; // snake_case stays
    for (let end = text.indexOf(mark, from + 1); end !== -1; end = text.indexOf(mark, end + 1)) {
      if (/\s/.test(text[end - 1])) continue;
      const after = text[end + mark.length] || "";
      if (mark.length === 1 && (text[end - 1] === mark || after === mark)) continue;
      if (mark[0] === "_" && /\w/.test(after)) continue;
      return { tag, inner: text.slice(from, end), end: end + mark.length };
    }
  }
  return null;
}

function safeUrl(target) {
  try {
    const url = new URL(target, document.baseURI);
    return ["http:", "https:", "mailto:"].includes(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}

// `[label](target)` at `i`: label, href (null when not a safe URL) and end, or null.
function linkAt(text, i) {
  let depth = 0;
  let j = i;
  for (; j < text.length; j++) {
    if (text[j] === "[") depth++;
    else if (text[j] === "]" && --depth === 0) break;
  }
  if (j >= text.length || text[j + 1] !== "(") return null;
  // The target ends at the parenthesis that closes it: URLs may hold balanced ones.
  let close = j + 2;
  for (depth = 1; close < text.length; close++) {
    if (text[close] === "(") depth++;
    else if (text[close] === ")" && --depth === 0) break;
  }
  if (close >= text.length) return null;
  const target = text.slice(j + 2, close).trim().split(/\s+/)[0].replace(/^<(.*)>$/, "$1");
  return { label: text.slice(i + 1, j), href: safeUrl(target), end: close + 1 };
}

function link(href, parent) {
  const a = el("a");
  a.href = href;
  a.rel = "noopener noreferrer";
  a.target = "_blank";
  parent.append(a);
  return a;
}

function inline(text, parent) {
  let plain = "";
  const put = (node) => {
    if (plain) parent.append(plain);
    plain = "";
    if (node) parent.append(node);
  };
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === "\\" && i + 1 < text.length && ESCAPABLE.includes(text[i + 1])) {
      plain += text[i + 1];
      i += 2;
      continue;
    }
    if (c === "\n") {
      put(el("br"));
      i++;
      continue;
    }
    if (c === "`") {
      let n = 1;
      while (text[i + n] === "`") n++;
      const end = text.indexOf("`".repeat(n), i + n);
      if (end > i + n) {
        put(el("code", "", text.slice(i + n, end).replace(/^ (.*) $/s, "$1")));
        i = end + n;
      } else {
        plain += "`".repeat(n);
        i += n;
      }
      continue;
    }
    const span = (c === "*" || c === "_" || c === "~") && spanAt(text, i);
    if (span) {
      const e = el(span.tag);
      inline(span.inner, e);
      put(e);
      i = span.end;
      continue;
    }
    const l = c === "[" && linkAt(text, i);
    if (l) {
      put(null);
      inline(l.label, l.href ? link(l.href, parent) : parent);
      i = l.end;
      continue;
    }
    const bare = (c === "h" && (i === 0 || /\W/.test(text[i - 1]))) &&
      /^https?:\/\/[^\s<>()]*[^\s<>().,;:!?'"]/.exec(text.slice(i, i + 2048));
    if (bare) {
      put(null);
      link(bare[0], parent).textContent = bare[0];
      i += bare[0].length;
      continue;
    }
    plain += c;
    i++;
  }
  put(null);
}

const rendered = new WeakMap(); // element -> the blocks it shows

// Render `text` into `target`, keeping the leading blocks that did not change: while a reply
// streams in, only its last block is rebuilt, and assistive technology hears only what is new.
function renderMarkdown(target, text) {
  const blocks = parseBlocks(text);
  const before = rendered.get(target) || [];
  let same = 0;
  while (
    same < blocks.length &&
    same < before.length &&
    blocks[same].src === before[same].src &&
    blocks[same].type === before[same].type
  ) {
    same++;
  }
  while (target.childNodes.length > same) target.lastChild.remove();
  for (const b of blocks.slice(same)) target.append(blockNode(b));
  rendered.set(target, blocks);
}

// --- the conversation view ------------------------------------------------------------------

function statsText(m) {
  const s = m.stats || {};
  const parts = [];
  if (typeof s.ttft === "number") parts.push(`first token ${Math.round(s.ttft)} ms`);
  if (typeof s.tokens === "number") parts.push(`${s.tokens} token${s.tokens === 1 ? "" : "s"}`);
  if (typeof s.tps === "number") parts.push(`${s.tps.toFixed(1)} tokens/s`);
  const end = {
    streaming: "generating…",
    stopped: "stopped",
    interrupted: "interrupted",
    failed: "cut off",
  }[m.state];
  if (end) parts.push(end);
  else if (s.finish === "length") parts.push("max tokens reached");
  return parts.join(" · ");
}

function messageNode(m) {
  const article = el("article", `msg ${m.role}`);
  if (m.role === "error") {
    article.setAttribute("role", "alert");
    article.append(el("p", "", m.content));
    const last = () => chat.messages[chat.messages.length - 1] === m;
    const retry = el("button", "secondary", m.status === 401 ? "Enter API key" : "Retry");
    retry.type = "button";
    retry.addEventListener("click", () => {
      if (!last() || running) return;
      if (m.status === 401) askKey(m.content);
      else generate();
    });
    article.append(retry);
    return article;
  }
  const who = el("p", "who", m.role === "user" ? "You" : "Assistant");
  article.setAttribute("aria-label", m.role === "user" ? "You said" : "Assistant replied");
  article.append(who);
  if (m.role === "user") {
    article.append(el("div", "content", m.content));
  } else {
    const content = el("div", "content md");
    content.setAttribute("aria-live", "polite");
    article.append(content, el("p", "stats"));
  }
  return article;
}

function updateMessage(m) {
  const article = nodes.get(m);
  if (!article || m.role !== "assistant") return;
  article.dataset.state = m.state;
  const content = article.querySelector(".content");
  renderMarkdown(content, m.content);
  content.classList.toggle("blank", !m.content && m.state !== "streaming");
  article.querySelector(".stats").textContent = statsText(m);
}

function showMessage(m) {
  const stick = ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 80;
  const article = messageNode(m);
  nodes.set(m, article);
  ui.log.append(article);
  updateMessage(m);
  ui.empty.hidden = chat.messages.length > 0;
  if (stick || m.role !== "assistant") scrollDown();
}

function removeMessage(m) {
  const at = chat.messages.indexOf(m);
  if (at >= 0) chat.messages.splice(at, 1);
  nodes.get(m)?.remove();
  ui.empty.hidden = chat.messages.length > 0;
}

function scrollDown() {
  ui.log.scrollTop = ui.log.scrollHeight;
}

function renderAll() {
  for (const a of ui.log.querySelectorAll("article")) a.remove();
  for (const m of chat.messages) showMessage(m);
  ui.empty.hidden = chat.messages.length > 0;
  scrollDown();
}

// --- talking to the server ------------------------------------------------------------------

class ServerError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

class LostConnection extends Error {}

// The server's `{"error": {"message": ...}}`, else whatever text came back.
async function errorMessage(response) {
  const text = await response.text().catch(() => "");
  try {
    const message = JSON.parse(text).error.message;
    if (typeof message === "string" && message) return message;
  } catch {
    // not the server's JSON error (a proxy's page, say): show the text itself
  }
  return text.trim().slice(0, 500) || response.statusText || "no details";
}

// The `data:` payloads of a server-sent event stream.
async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r/g, "");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const data = buffer
        .slice(0, cut)
        .split("\n")
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).replace(/^ /, ""))
        .join("\n");
      buffer = buffer.slice(cut + 2);
      if (data) yield data;
    }
  }
}

function requestBody() {
  const messages = [];
  if (chat.system.trim()) messages.push({ role: "system", content: chat.system });
  for (const m of chat.messages) {
    if (m.role === "user" || (m.role === "assistant" && m.content)) {
      messages.push({ role: m.role, content: m.content });
    }
  }
  const body = {
    messages,
    stream: true,
    stream_options: { include_usage: true },
    temperature: Number(chat.temperature),
    top_p: Number(chat.topP),
  };
  if (modelId) body.model = modelId;
  // Empty means no limit; anything else goes to the server as typed, which says what is wrong.
  if (chat.maxTokens.trim()) body.max_tokens = Number(chat.maxTokens);
  return body;
}

function describe(error, gotResponse) {
  if (error instanceof ServerError) {
    return error.status
      ? `The server answered ${error.status}: ${error.message}`
      : `The server stopped the reply: ${error.message}`;
  }
  if (error instanceof LostConnection || gotResponse) {
    return (
      "The connection to the server was lost before the reply was complete; " +
      "the text so far is kept."
    );
  }
  return `Cannot reach the server (${error.message}). Is bitnet-serve running?`;
}

let frame = 0;

// Redraw the streaming reply at most once per frame, however fast tokens arrive.
function redraw(m) {
  if (frame) return;
  frame = requestAnimationFrame(() => {
    frame = 0;
    const stick = ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 80;
    updateMessage(m);
    if (stick) scrollDown();
    save();
  });
}

// Stream a reply to the conversation as it stands.
async function generate() {
  while (chat.messages.length && chat.messages[chat.messages.length - 1].role === "error") {
    removeMessage(chat.messages[chat.messages.length - 1]);
  }
  const body = requestBody();
  const reply = { role: "assistant", content: "", state: "streaming", stats: {} };
  chat.messages.push(reply);
  showMessage(reply);
  setBusy(new AbortController());
  const headers = { "Content-Type": "application/json" };
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  const started = performance.now();
  let first = 0;
  let last = 0;
  let chunks = 0;
  let gotResponse = false;
  let failure = null;
  try {
    const response = await fetch("v1/chat/completions", {
      method: "POST",
      headers,
      body: JSON.stringify(body),
      signal: running.signal,
    });
    if (!response.ok) throw new ServerError(response.status, await errorMessage(response));
    gotResponse = true;
    let finished = false;
    for await (const data of events(response)) {
      if (data === "[DONE]") {
        finished = true;
        break;
      }
      const chunk = JSON.parse(data);
      if (chunk.error) throw new ServerError(0, chunk.error.message || "unknown error");
      const choice = chunk.choices && chunk.choices[0];
      const text = choice && choice.delta && choice.delta.content;
      const now = performance.now();
      if (text) {
        if (!first) first = now;
        last = now;
        chunks++;
        reply.content += text;
        reply.stats.ttft = first - started;
        reply.stats.tokens = chunks;
      }
      if (choice && choice.finish_reason) reply.stats.finish = choice.finish_reason;
      if (chunk.usage) reply.stats.tokens = chunk.usage.completion_tokens;
      if (reply.stats.tokens > 1 && last > first) {
        reply.stats.tps = ((reply.stats.tokens - 1) * 1000) / (last - first);
      }
      redraw(reply);
    }
    if (!finished) throw new LostConnection();
    reply.state = "done";
  } catch (error) {
    if (error.name === "AbortError") {
      reply.state = "stopped";
    } else {
      reply.state = "failed";
      failure = error;
    }
  }
  setBusy(null);
  if (failure && !reply.content) removeMessage(reply);
  else updateMessage(reply);
  if (failure) {
    const notice = { role: "error", content: describe(failure, gotResponse) };
    if (failure instanceof ServerError && failure.status) notice.status = failure.status;
    chat.messages.push(notice);
    showMessage(notice);
    if (notice.status === 401) askKey(notice.content);
  }
  save();
}

function setBusy(controller) {
  running = controller;
  const busy = controller !== null;
  ui.send.setAttribute("aria-disabled", String(busy));
  if (!busy && document.activeElement === ui.stop) ui.prompt.focus();
  ui.stop.disabled = !busy;
}

function send() {
  const text = ui.prompt.value;
  if (running || !text.trim()) return;
  ui.prompt.value = "";
  const m = { role: "user", content: text };
  while (chat.messages.length && chat.messages[chat.messages.length - 1].role === "error") {
    removeMessage(chat.messages[chat.messages.length - 1]);
  }
  chat.messages.push(m);
  showMessage(m);
  save();
  generate();
}

function askKey(message) {
  ui.keyError.textContent = message;
  ui.key.value = "";
  if (!ui.keyDialog.open) ui.keyDialog.showModal();
  ui.key.focus();
}

// The model's name for the header; 503 means it is still loading, so ask again shortly.
async function loadModel() {
  try {
    const response = await fetch("v1/models");
    if (response.status === 503) {
      ui.model.textContent = "loading the model…";
      setTimeout(loadModel, 1000);
      return;
    }
    if (!response.ok) throw new ServerError(response.status, await errorMessage(response));
    modelId = (await response.json()).data[0].id;
    ui.model.textContent = modelId;
  } catch (error) {
    ui.model.textContent = `no model: ${describe(error, false)}`;
  }
}

// --- wiring ---------------------------------------------------------------------------------

function showSettings() {
  ui.system.value = chat.system;
  ui.temperature.value = chat.temperature;
  ui.topP.value = chat.topP;
  ui.maxTokens.value = chat.maxTokens;
  ui.temperatureValue.textContent = Number(ui.temperature.value).toFixed(2);
  ui.topPValue.textContent = Number(ui.topP.value).toFixed(2);
}

ui.settingsForm.addEventListener("input", () => {
  chat.system = ui.system.value;
  chat.temperature = ui.temperature.value;
  chat.topP = ui.topP.value;
  chat.maxTokens = ui.maxTokens.value;
  showSettings();
  save();
});
ui.settingsForm.addEventListener("submit", (e) => e.preventDefault());

ui.composer.addEventListener("submit", (e) => {
  e.preventDefault();
  send();
});

ui.prompt.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    send();
  } else if (e.key === "Escape" && running) {
    e.preventDefault();
    running.abort();
  }
});

ui.stop.addEventListener("click", () => {
  if (running) running.abort();
  ui.prompt.focus();
});

ui.newChat.addEventListener("click", () => {
  if (running) running.abort();
  chat.messages = [];
  save();
  renderAll();
  ui.prompt.focus();
});

ui.keyForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const key = ui.key.value.trim();
  if (!key) return;
  try {
    sessionStorage.setItem(KEY_STORE, key);
  } catch {
    // No session storage: the key cannot be kept, and the next request asks again.
  }
  ui.keyDialog.close();
  ui.prompt.focus();
  const last = chat.messages[chat.messages.length - 1];
  if (!running && last && last.role === "error") generate();
});

ui.keyCancel.addEventListener("click", () => {
  ui.keyDialog.close();
  ui.prompt.focus();
});

// Saved here too, so a reply cut off by a reload keeps the text it had.
window.addEventListener("pagehide", save);

if (window.matchMedia("(min-width: 60rem)").matches) ui.settings.open = true;
showSettings();
renderAll();
setBusy(null);
loadModel();
