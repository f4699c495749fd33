// webhook-forward's logic, in plain JavaScript (tested by forward.test.js under node, no
// wasm): one templated JSON POST per event to the operator's URL.
//
// `host` is what app.js builds over the WIT imports: `send(request)` (http.send: returns
// `{ status, headers, body }` or throws an Error whose `.payload` is the http-error
// `{ tag, val }`), `config(key)` and `secret(name)` (string or undefined).

/** Worth trying again later: the host retries with backoff, not before `retryAfterMs`. */
export class Retryable extends Error {
  constructor(message, retryAfterMs) {
    super(message);
    this.retryAfterMs = retryAfterMs;
  }
}

/** Trying again will not help; the delivery ends dead with this message. */
export class Permanent extends Error {}

/** The body sent when the operator sets no `template`. */
export const DEFAULT_TEMPLATE =
  '{"id":"${id}","eventType":"${eventType}","published":"${published}","actor":"${actor}","user":"${user}","group":"${group}"}';

/** The plain fields a template can name, from a WIT event (camelCase, as jco gives it). */
export function fields(event) {
  const target = (kind) => event.targets.find((t) => t.kind === kind);
  const user = target('User');
  const group = target('UserGroup');
  return {
    id: event.id,
    eventType: event.eventType,
    published: event.published,
    actor: (event.actor && event.actor.alternateId) || '',
    user: (user && user.alternateId) || '',
    userId: (user && user.id) || '',
    group: (group && group.displayName) || '',
    groupId: (group && group.id) || '',
  };
}

/**
 * Fills `${name}` placeholders: each value JSON-escaped (so the template puts it inside a
 * JSON string), except `${raw}`, the whole Okta LogEvent as JSON. The result must be JSON.
 */
export function render(template, values, raw) {
  const body = template.replace(/\$\{([A-Za-z]+)\}/g, (whole, name) => {
    if (name === 'raw') {
      return raw;
    }
    if (!(name in values)) {
      throw new Permanent(`the template names \${${name}}, which is not one of: raw, ${Object.keys(values).join(', ')}`);
    }
    return JSON.stringify(String(values[name])).slice(1, -1);
  });
  try {
    JSON.parse(body);
  } catch (e) {
    throw new Permanent(`the template does not make JSON (${e.message}); fix [plugins.webhook-forward.config] template`);
  }
  return body;
}

/** The `retry-after` header in milliseconds (delay-seconds form), or undefined. */
export function retryAfterMs(headers) {
  const header = headers.find(([name]) => name === 'retry-after');
  if (!header || !/^\d+$/.test(header[1].trim())) {
    return undefined;
  }
  return Number.parseInt(header[1].trim(), 10) * 1000;
}

/** Forwards one event; returns the history's summary or throws Retryable / Permanent. */
export function forward(host, event) {
  const url = host.config('url');
  if (!url) {
    throw new Permanent('no URL to forward to: set [plugins.webhook-forward.config] url and allow its origin in allowed_hosts');
  }
  const values = fields(event);
  const body = render(host.config('template') || DEFAULT_TEMPLATE, values, event.raw);
  const headers = [
    ['content-type', 'application/json'],
    // The receiver can drop a repeat: Okta retries and replays reuse the event's uuid.
    ['idempotency-key', event.id],
  ];
  const secret = host.secret('webhook_secret');
  if (secret) {
    headers.push([host.config('secret_header') || 'authorization', secret]);
  }
  const timeout = Number.parseInt(host.config('timeout_ms') || '10000', 10);
  let response;
  try {
    response = host.send({
      method: 'post',
      url,
      headers,
      body: new TextEncoder().encode(body),
      timeoutMs: Number.isFinite(timeout) ? timeout : 10000,
    });
  } catch (e) {
    const error = e && e.payload !== undefined ? e.payload : e;
    const why = `${error && error.tag}: ${error && error.val}`;
    if (error && (error.tag === 'timeout' || error.tag === 'connect')) {
      throw new Retryable(`POST ${origin(url)} failed (${why})`);
    }
    throw new Permanent(`POST ${origin(url)} was refused before sending (${why})`);
  }
  const status = response.status;
  if (status >= 200 && status < 300) {
    return `forwarded ${values.eventType} ${values.id} to ${origin(url)}: ${status}`;
  }
  const text = new TextDecoder().decode(response.body).slice(0, 200);
  if (status === 429 || status >= 500) {
    throw new Retryable(`${origin(url)} answered ${status}: ${text}`, retryAfterMs(response.headers));
  }
  throw new Permanent(`${origin(url)} answered ${status}: ${text}; check the URL, the secret and the template`);
}

/** The URL's origin: what goes into messages (a path or query may carry a token). */
function origin(url) {
  try {
    return new URL(url).origin;
  } catch {
    return '(an invalid URL)';
  }
}
