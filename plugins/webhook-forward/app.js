// webhook-forward as a component: forward.js over the hookhost WIT imports. Built with
// `jco componentize … --disable http fetch-event --bundle` (see the Makefile's js_plugin).

import { send } from 'hookhost:plugin/http@0.2.0';
import { get as configGet } from 'hookhost:plugin/config@0.2.0';
import { get as secretGet } from 'hookhost:plugin/secrets@0.2.0';
import { log } from 'hookhost:plugin/log@0.2.0';

import { forward, Permanent, Retryable } from './forward.js';

const host = { send, config: configGet, secret: secretGet };

export const handler = {
  handle(event) {
    try {
      const summary = forward(host, event);
      log('info', summary);
      return { summary };
    } catch (e) {
      if (e instanceof Retryable) {
        const retryAfterMs = e.retryAfterMs === undefined ? undefined : BigInt(e.retryAfterMs);
        throw { tag: 'retryable', val: { message: e.message, retryAfterMs } };
      }
      if (e instanceof Permanent) {
        throw { tag: 'permanent', val: e.message };
      }
      throw { tag: 'permanent', val: `webhook-forward failed unexpectedly: ${e && e.stack ? e.stack : e}` };
    }
  },
};
