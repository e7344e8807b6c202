// Strongroom.js: the merchant SDK for Strongroom hosted card fields.
//
// Card fields live in iframes served by the vault, so card data never enters the merchant's
// page; this script only places the frames, relays events without values, and hands back
// tokens. Direct mode is the exception the merchant opts into: it posts card data the page
// already holds straight to the vault. Classic script; the only global is window.Strongroom.
(function () {
  'use strict';
  if (typeof window.Strongroom === 'function') return;

  // Read now: document.currentScript is only set while this script first runs.
  const script = document.currentScript;
  const scriptOrigin = script && script.src ? new URL(script.src, location.href).origin : null;

  const TYPES = { card: 'card', cardNumber: 'number', cardExpiry: 'expiry', cardCvc: 'cvc', cardName: 'name' };
  const TITLES = {
    card: 'Secure card payment input',
    number: 'Secure card number input',
    expiry: 'Secure expiry date input',
    cvc: 'Secure security code input',
    name: 'Secure cardholder name input',
  };
  const HEIGHTS = { card: 150, number: 80, expiry: 80, cvc: 80, name: 80 };
  const EVENTS = ['ready', 'change', 'focus', 'blur', 'submit', 'error'];
  const READY_TIMEOUT_MS = 10000;
  const TOKENIZE_TIMEOUT_MS = 30000;

  const GENERIC = 'Something went wrong; please try again.';
  const MESSAGES = {
    card_number_invalid: 'Your card number is invalid.',
    card_number_luhn: 'Your card number is invalid.',
    card_brand_unknown: 'This card brand is not accepted.',
    expiry_invalid: "Your card's expiry date is invalid.",
    card_expired: 'Your card has expired.',
    cvc_invalid: "Your card's security code is invalid.",
    live_card_in_test_mode: 'This is a live card, but this payment form is in test mode. Use a test card.',
    test_card_in_live_mode: 'This is a test card, but this payment form takes real payments.',
    client_session_expired: 'This payment form has expired. Please reload the page to start again.',
    client_session_used: 'This payment form has already been used.',
    client_session_invalid: 'This payment form is not valid. Please reload the page to start again.',
    rate_limited: 'Too many attempts. Please wait a moment and try again.',
    element_unavailable: 'The payment form could not be loaded. Please reload the page.',
    element_not_mounted: 'The payment form is not on the page.',
    timeout: 'The payment service took too long to answer. Please try again.',
    api_connection_error: 'We could not reach the payment service. Please check your connection and try again.',
  };

  // Each element's own tokenize, off the public object, so a split group can route to it.
  const submitters = new WeakMap();

  const fail = (code, message) => ({ error: { code, message: message || MESSAGES[code] || GENERIC } });

  // Only the listed fields leave a frame's result or the vault's answer: nothing else the
  // payload may carry reaches the merchant's code.
  function pickToken(p) {
    const token = {};
    for (const k of ['id', 'object', 'brand', 'last4', 'masked_number', 'exp_month', 'exp_year',
      'mode', 'created', 'expires_at', 'cvc_available']) {
      if (p && p[k] !== undefined) token[k] = p[k];
    }
    return token;
  }

  function pickError(e) {
    const code = e && typeof e.code === 'string' ? e.code.slice(0, 64) : 'api_error';
    const message = e && typeof e.message === 'string' ? e.message.slice(0, 300) : MESSAGES[code] || GENERIC;
    return { error: { code, message } };
  }

  function randomId(length) {
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
    const bytes = crypto.getRandomValues(new Uint8Array(length));
    return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join('');
  }

  function sessionOf(clientSecret) {
    const id = typeof clientSecret === 'string' ? clientSecret.split('_secret_')[0] : '';
    if (!/^cs_[A-Za-z0-9]+$/.test(id) || clientSecret.length <= id.length + 8) {
      throw new TypeError('Strongroom: clientSecret must look like cs_…_secret_…');
    }
    return id;
  }

  // Handlers are the merchant's code: one that throws must not break the SDK's bookkeeping.
  function call(handler, payload) {
    try {
      handler(payload);
    } catch (err) {
      setTimeout(() => { throw err; });
    }
  }

  function createElement(ctx, group, type, options) {
    const field = TYPES[type];
    const frameId = group.id + '-' + field;
    const handlers = Object.fromEntries(EVENTS.map((e) => [e, []]));
    const pending = new Map(); // request id -> resolve
    const readyWaiters = [];
    let style = options.style || {};
    let iframe = null;
    let ready = false;
    let unavailable = false;
    let destroyed = false;
    let readyTimer = 0;

    function emit(event, payload) {
      for (const h of handlers[event].slice()) call(h, payload);
    }

    function send(msg) {
      if (iframe && iframe.contentWindow) {
        iframe.contentWindow.postMessage(Object.assign({ sr: 1, frame: frameId }, msg), ctx.origin);
      }
    }

    function settleReady(ok) {
      for (const w of readyWaiters.splice(0)) w(ok);
    }

    function onMessage(event) {
      if (!iframe || event.origin !== ctx.origin || event.source !== iframe.contentWindow) return;
      const msg = event.data;
      if (!msg || typeof msg !== 'object' || msg.sr !== 1 || msg.frame !== frameId) return;
      switch (msg.type) {
        case 'ready':
          ready = true;
          unavailable = false;
          clearTimeout(readyTimer);
          settleReady(true);
          emit('ready', { elementType: type, state: String(msg.state) });
          break;
        case 'change':
          emit('change', {
            elementType: type,
            complete: msg.complete === true,
            empty: msg.empty === true,
            brand: typeof msg.brand === 'string' ? msg.brand : null,
            error: msg.error ? pickError(msg.error).error : null,
          });
          break;
        case 'focus':
        case 'blur':
        case 'submit':
          emit(msg.type, { elementType: type });
          break;
        case 'error':
          emit('error', { elementType: type, error: pickError(msg.error).error });
          break;
        case 'resize':
          if (Number.isFinite(msg.height)) {
            iframe.style.height = Math.max(0, Math.min(2000, Math.ceil(msg.height))) + 'px';
          }
          break;
        case 'result': {
          const resolve = pending.get(msg.request);
          if (!resolve) break;
          pending.delete(msg.request);
          resolve(msg.token ? { token: pickToken(msg.token) } : pickError(msg.error));
          break;
        }
      }
    }

    function init() {
      send({
        type: 'init',
        publishableKey: ctx.publishableKey,
        clientSecret: group.clientSecret,
        style,
        fields: options.fields || {},
        placeholders: options.placeholders || {},
      });
    }

    function submit() {
      if (destroyed || !iframe) return Promise.resolve(fail('element_not_mounted'));
      if (unavailable) return Promise.resolve(fail('element_unavailable'));
      return new Promise((resolve) => {
        const request = randomId(12);
        const timer = setTimeout(() => {
          pending.delete(request);
          resolve(fail('timeout'));
        }, TOKENIZE_TIMEOUT_MS);
        pending.set(request, (res) => { clearTimeout(timer); resolve(res); });
        const go = (ok) => {
          if (!pending.has(request)) return;
          if (ok) return send({ type: 'tokenize', request });
          pending.get(request)(fail('element_unavailable'));
          pending.delete(request);
        };
        if (ready) go(true);
        else readyWaiters.push(go);
      });
    }

    const element = {
      mount(target) {
        if (destroyed) throw new Error('Strongroom: this element was destroyed');
        const host = typeof target === 'string' ? document.querySelector(target) : target;
        if (!(host instanceof HTMLElement)) throw new TypeError('Strongroom: mount target not found');
        if (iframe) element.unmount();
        iframe = document.createElement('iframe');
        iframe.src = `${ctx.origin}/elements/v1/${field}?session=${encodeURIComponent(group.sessionId)}` +
          `&origin=${encodeURIComponent(location.origin)}&frame=${frameId}`;
        iframe.title = options.title || TITLES[field];
        iframe.setAttribute('scrolling', 'no');
        // color-scheme matches the frame's own, or Chrome paints an opaque backdrop behind it
        // on a page that declares a dark scheme.
        Object.assign(iframe.style, {
          border: '0', width: '100%', display: 'block', overflow: 'hidden',
          height: HEIGHTS[field] + 'px', colorScheme: 'normal',
        });
        // The secrets go in a message to the vault's origin only, after the frame has loaded:
        // a frame the browser refused to show has another origin and never receives them.
        iframe.addEventListener('load', init);
        window.addEventListener('message', onMessage);
        ready = false;
        unavailable = false;
        readyTimer = setTimeout(() => {
          unavailable = true;
          settleReady(false);
          emit('error', { elementType: type, error: fail('element_unavailable').error });
        }, READY_TIMEOUT_MS);
        host.appendChild(iframe);
        return element;
      },
      on(event, handler) {
        if (!handlers[event]) throw new TypeError('Strongroom: unknown event ' + event);
        if (typeof handler === 'function') handlers[event].push(handler);
        return element;
      },
      off(event, handler) {
        if (handlers[event]) handlers[event] = handlers[event].filter((h) => h !== handler);
        return element;
      },
      tokenize() {
        return field === 'card' || field === 'number' ? submit() : group.tokenize();
      },
      focus() { if (ready) send({ type: 'focus' }); },
      clear() { if (ready) send({ type: 'clear' }); },
      update(opts) {
        if (opts && opts.style) {
          style = opts.style;
          if (ready) send({ type: 'update', style });
        }
      },
      unmount() {
        if (!iframe) return;
        clearTimeout(readyTimer);
        window.removeEventListener('message', onMessage);
        iframe.remove();
        iframe = null;
        ready = false;
        settleReady(false);
        for (const resolve of pending.values()) resolve(fail('element_not_mounted'));
        pending.clear();
      },
      destroy() {
        element.unmount();
        destroyed = true;
        group.forget(type);
      },
    };
    submitters.set(element, submit);
    return Object.freeze(element);
  }

  function createGroup(ctx, options) {
    const clientSecret = options && options.clientSecret;
    const group = {
      id: randomId(20),
      sessionId: sessionOf(clientSecret),
      clientSecret,
      elements: {},
      forget(type) { delete group.elements[type]; },
      tokenize() {
        // Split fields submit through the number frame, which gathers its siblings' values.
        const via = group.elements.cardNumber || group.elements.card;
        return via ? submitters.get(via)() : Promise.resolve(fail('element_not_mounted'));
      },
    };
    return Object.freeze({
      create(type, opts) {
        if (!TYPES[type]) throw new TypeError('Strongroom: unknown element type ' + type);
        if (group.elements[type]) throw new Error('Strongroom: a ' + type + ' element already exists in this group');
        const element = createElement(ctx, group, type, opts || {});
        group.elements[type] = element;
        return element;
      },
      getElement(type) { return group.elements[type] || null; },
      tokenize: () => group.tokenize(),
    });
  }

  async function directTokenize(ctx, card, options) {
    let sessionId;
    try {
      sessionId = sessionOf(options && options.clientSecret);
    } catch (e) {
      return fail('client_session_invalid', e.message);
    }
    card = card || {};
    const body = {
      client_secret: options.clientSecret,
      number: String(card.number == null ? '' : card.number).replace(/[\s-]/g, ''),
      exp_month: Number(card.exp_month),
      exp_year: Number(card.exp_year) < 100 ? 2000 + Number(card.exp_year) : Number(card.exp_year),
    };
    // Shape errors are answered here, so the card travels only when it could be accepted.
    if (!/^\d{12,19}$/.test(body.number)) return fail('card_number_invalid');
    if (!Number.isInteger(body.exp_month) || !Number.isInteger(body.exp_year)) return fail('expiry_invalid');
    if (card.cvc != null && card.cvc !== '') body.cvc = String(card.cvc);
    if (typeof card.cardholder_name === 'string' && card.cardholder_name.trim()) {
      body.cardholder_name = card.cardholder_name.trim();
    }
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), TOKENIZE_TIMEOUT_MS);
    try {
      const response = await fetch(`${ctx.origin}/v1/client_sessions/${encodeURIComponent(sessionId)}/cards`, {
        method: 'POST',
        mode: 'cors',
        credentials: 'omit',
        cache: 'no-store',
        referrerPolicy: 'no-referrer',
        headers: { Authorization: 'Bearer ' + ctx.publishableKey, 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
        signal: abort.signal,
      });
      const payload = await response.json().catch(() => null);
      if (response.status === 201 && payload && typeof payload.id === 'string') return { token: pickToken(payload) };
      const code = payload && payload.error && typeof payload.error.code === 'string' ? payload.error.code : 'api_error';
      if (code === 'rate_limited') {
        const wait = parseInt(response.headers.get('Retry-After') || '', 10);
        if (wait > 0) return fail(code, `Too many attempts. Please wait ${wait} seconds and try again.`);
      }
      return fail(code);
    } catch (e) {
      return fail(abort.signal.aborted ? 'timeout' : 'api_connection_error');
    } finally {
      clearTimeout(timer);
    }
  }

  function Strongroom(publishableKey, options) {
    if (typeof publishableKey !== 'string' || !/^pk_(test|live)_[A-Za-z0-9_]+$/.test(publishableKey)) {
      throw new TypeError('Strongroom: a publishable key (pk_test_… or pk_live_…) is required');
    }
    const wanted = (options && options.origin) || scriptOrigin;
    let origin;
    try {
      origin = new URL(wanted).origin;
    } catch (_) {
      throw new TypeError('Strongroom: cannot tell the vault origin; pass {origin}');
    }
    if (origin === 'null' || !/^https?:$/.test(new URL(origin).protocol)) {
      throw new TypeError('Strongroom: the vault origin must be http(s)');
    }
    const ctx = Object.freeze({ publishableKey, origin });
    return Object.freeze({
      elements: (opts) => createGroup(ctx, opts),
      tokenize: (card, opts) => directTokenize(ctx, card, opts),
    });
  }

  Object.defineProperty(window, 'Strongroom', { value: Object.freeze(Strongroom), enumerable: true });
})();
