// webhook-forward's logic under plain node: `node --test` (no wasm, no build).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { forward, Permanent, render, Retryable } from './forward.js';

const event = {
  id: 'evt-1',
  eventType: 'group.user_membership.add',
  published: '2026-11-28T10:00:00.000Z',
  actor: { id: '00uadmin', kind: 'User', alternateId: 'admin@example.com', displayName: 'Admin' },
  targets: [
    { id: '00u1', kind: 'User', alternateId: 'jane"q@example.com', displayName: 'Jane' },
    { id: '00g1', kind: 'UserGroup', alternateId: 'unknown', displayName: 'Sales' },
  ],
  raw: '{"uuid":"evt-1"}',
};

function host(config, answer, secrets = {}) {
  return {
    sent: [],
    config: (k) => config[k],
    secret: (k) => secrets[k],
    send(request) {
      this.sent.push(request);
      return answer(request);
    },
  };
}
const status = (s, headers = []) => () => ({ status: s, headers, body: new TextEncoder().encode('nope') });

test('posts the default template with the secret header and an idempotency key', () => {
  const h = host({ url: 'http://hooks.test/in', secret_header: 'x-token' }, status(200), { webhook_secret: 's3cret' });
  assert.equal(forward(h, event), 'forwarded group.user_membership.add evt-1 to http://hooks.test: 200');
  const [req] = h.sent;
  assert.equal(req.method, 'post');
  assert.deepEqual(req.headers.find(([n]) => n === 'x-token'), ['x-token', 's3cret']);
  assert.deepEqual(req.headers.find(([n]) => n === 'idempotency-key'), ['idempotency-key', 'evt-1']);
  const body = JSON.parse(new TextDecoder().decode(req.body));
  assert.deepEqual(body, {
    id: 'evt-1', eventType: 'group.user_membership.add', published: '2026-11-28T10:00:00.000Z',
    actor: 'admin@example.com', user: 'jane"q@example.com', group: 'Sales',
  });
});

test('a custom template can embed the raw event; a bad one is permanent', () => {
  assert.deepEqual(JSON.parse(render('{"who":"${user}","event":${raw}}', { user: 'a' }, '{"x":1}')), { who: 'a', event: { x: 1 } });
  assert.throws(() => render('{"a":${user}}', { user: 'x y' }, '{}'), Permanent);
  assert.throws(() => render('{"a":"${nope}"}', { user: 'x' }, '{}'), /not one of/);
});

test('429 and 5xx are retryable honouring Retry-After; other 4xx permanent', () => {
  const cfg = { url: 'http://hooks.test/in' };
  assert.throws(() => forward(host(cfg, status(429, [['retry-after', '3']])), event), (e) => e instanceof Retryable && e.retryAfterMs === 3000);
  assert.throws(() => forward(host(cfg, status(503)), event), (e) => e instanceof Retryable && e.retryAfterMs === undefined);
  assert.throws(() => forward(host(cfg, status(404)), event), Permanent);
});

test('a connect error is retryable, a denied origin permanent, a missing url permanent', () => {
  const failing = (tag) => () => { throw Object.assign(new Error(tag), { payload: { tag, val: 'why' } }); };
  assert.throws(() => forward(host({ url: 'http://hooks.test' }, failing('connect')), event), Retryable);
  assert.throws(() => forward(host({ url: 'http://hooks.test' }, failing('denied')), event), Permanent);
  assert.throws(() => forward(host({}, status(200)), event), /set \[plugins.webhook-forward.config\] url/);
});

test('the secret never reaches a message', () => {
  const h = host({ url: 'http://hooks.test/in?token=abc' }, status(401), { webhook_secret: 's3cret' });
  assert.throws(() => forward(h, event), (e) => !e.message.includes('s3cret') && !e.message.includes('token=abc'));
});
