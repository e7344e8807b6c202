// Strongroom hosted card fields: the script of the page at /elements/v1/{field}.
//
// Card data typed here stays in this frame. It leaves only in the POST to the vault's card
// route, or, between the frames of one split group, over a same-origin BroadcastChannel. The
// parent page sees events without values and, after a tokenize, the token.
(() => {
  'use strict';

  const config = JSON.parse(document.getElementById('sr-config').textContent);
  // The SDK names frames `<group>-<field>`; a dot is accepted as well so both spellings agree.
  const group = config.frame.replace(/[.-](card|number|expiry|cvc|name)$/, '');
  const split = config.field !== 'card';

  const GENERIC = 'Something went wrong; please try again.';
  const MESSAGES = {
    card_number_incomplete: 'Your card number is incomplete.',
    card_number_invalid: 'Your card number is invalid.',
    card_number_luhn: 'Your card number is invalid.',
    card_brand_unknown: 'This card brand is not accepted.',
    expiry_incomplete: "Your card's expiry date is incomplete.",
    expiry_invalid: "Your card's expiry date is invalid.",
    card_expired: 'Your card has expired.',
    cvc_incomplete: "Your card's security code is incomplete.",
    cvc_invalid: "Your card's security code is invalid.",
    live_card_in_test_mode: 'This is a live card, but this payment form is in test mode. Use a test card.',
    test_card_in_live_mode: 'This is a test card, but this payment form takes real payments.',
    client_session_expired: 'This payment form has expired. Please reload the page to start again.',
    client_session_used: 'This payment form has already been used.',
    client_session_invalid: 'This payment form is not valid. Please reload the page to start again.',
    rate_limited: 'Too many attempts. Please wait a moment and try again.',
    element_unavailable: 'Part of the payment form is unavailable. Please reload the page.',
    tokenize_in_progress: 'Your card is already being processed.',
    api_connection_error: 'We could not reach the payment service. Please check your connection and try again.',
  };
  // Server codes that belong to one input: the error is shown under it as well.
  const FIELD_OF_CODE = {
    card_number_invalid: 'number', card_number_luhn: 'number', card_brand_unknown: 'number',
    live_card_in_test_mode: 'number', test_card_in_live_mode: 'number',
    expiry_invalid: 'expiry', card_expired: 'expiry', cvc_invalid: 'cvc',
  };
  const STATE_CODE = { expired: 'client_session_expired', complete: 'client_session_used' };
  const CODE_STATE = { client_session_expired: 'expired', client_session_used: 'complete' };
  const PLACEHOLDERS = { number: '1234 1234 1234 1234', expiry: 'MM / YY', cvc: 'CVC', name: '' };
  const STYLE_KEYS = ['base', 'invalid', 'focus'];
  const STYLE_PROPS = ['color', 'backgroundColor', 'fontFamily', 'fontSize', 'fontWeight',
    'fontStyle', 'letterSpacing', 'lineHeight', 'textAlign', 'textTransform', 'padding',
    'borderColor', 'borderRadius', 'caretColor'];
  // Inherited text properties also go on the body so that labels and messages match.
  const BODY_PROPS = ['color', 'fontFamily', 'fontSize', 'fontWeight', 'fontStyle', 'letterSpacing'];
  const SIBLING_TIMEOUT_MS = 1500;

  const error = (code, message) => ({ code, message: message || MESSAGES[code] || GENERIC });
  const digitsOf = (s) => s.replace(/\D/g, '');

  // ---- card rules -------------------------------------------------------------------------

  function brandOf(digits) {
    for (const [n, lo, hi, brand] of config.brands.iins || []) {
      if (digits.length < n) continue;
      const prefix = Number(digits.slice(0, n));
      if (prefix >= lo && prefix <= hi) return brand;
    }
    return null;
  }
  const lengthsOf = (brand) => (brand && config.brands.lengths && config.brands.lengths[brand]) || [16, 19];
  const cvcLengthOf = (brand) => (brand && config.brands.cvc && config.brands.cvc[brand]) || 3;

  function luhn(digits) {
    let sum = 0;
    for (let i = 0; i < digits.length; i++) {
      let d = digits.charCodeAt(digits.length - 1 - i) - 48;
      if (i % 2 === 1) { d *= 2; if (d > 9) d -= 9; }
      sum += d;
    }
    return sum % 10 === 0;
  }

  function formatNumber(raw) {
    const digits = digitsOf(raw);
    const brand = brandOf(digits);
    const max = brand ? lengthsOf(brand)[1] : 19;
    const groups = brand === 'amex' ? [4, 6, 5] : [4, 4, 4, 4, 3];
    const kept = digits.slice(0, max);
    const parts = [];
    let at = 0;
    for (const size of groups) {
      if (at >= kept.length) break;
      parts.push(kept.slice(at, at + size));
      at += size;
    }
    return parts.join(' ');
  }

  function formatExpiry(raw, deleting) {
    // Autofill may hand over "12/2034" or "1/34"; typing gives digits one at a time.
    const whole = /^\s*(\d{1,2})\s*[/.-]\s*(\d{2}|\d{4})\s*$/.exec(raw);
    let d = whole ? whole[1].padStart(2, '0') + whole[2].slice(-2) : digitsOf(raw);
    if (!deleting && (/^\d\s*\/\s*$/.test(raw) || (d.length === 1 && d > '1'))) d = d.padStart(2, '0');
    d = d.slice(0, 4);
    if (d.length < 2) return d;
    if (d.length === 2) return deleting ? d : d + ' / ';
    return d.slice(0, 2) + ' / ' + d.slice(2);
  }

  const formatCvc = (raw) => digitsOf(raw).slice(0, 4);

  // Each check returns {empty, complete, full, error}; `full` means nothing more can be typed,
  // so an error may show while the customer is still in the field.
  function checkNumber(value) {
    const digits = digitsOf(value);
    const brand = brandOf(digits);
    const [min, max] = lengthsOf(brand);
    const res = { empty: digits === '', complete: false, full: digits.length >= max, brand, error: null };
    if (res.empty || (!brand && digits.length < 6)) {
      res.error = error('card_number_incomplete');
    } else if (!brand) {
      res.error = error('card_brand_unknown');
    } else if (digits.length < min) {
      res.error = error('card_number_incomplete');
    } else if (digits.length > max) {
      res.error = error('card_number_invalid');
    } else if (!luhn(digits)) {
      res.error = error('card_number_luhn');
    } else {
      res.complete = true;
    }
    if (res.error) res.error.incomplete = res.error.code === 'card_number_incomplete';
    return res;
  }

  function checkExpiry(value, now = new Date()) {
    const d = digitsOf(value);
    const res = { empty: d === '', complete: false, full: d.length >= 4, error: null };
    const month = Number(d.slice(0, 2));
    const year = 2000 + Number(d.slice(2, 4));
    const thisYear = now.getFullYear();
    const thisMonth = now.getMonth() + 1;
    if (d.length >= 2 && (month < 1 || month > 12)) {
      res.error = error('expiry_invalid');
      res.full = true;
    } else if (d.length < 4) {
      res.error = Object.assign(error('expiry_incomplete'), { incomplete: true });
    } else if (year < thisYear || (year === thisYear && month < thisMonth)) {
      res.error = error('card_expired');
    } else if (year > thisYear + 20) {
      res.error = error('expiry_invalid', "Your card's expiry year is invalid.");
    } else {
      Object.assign(res, { complete: true, month, year });
    }
    return res;
  }

  function checkCvc(value, brand) {
    const d = digitsOf(value);
    const [min, max] = brand ? [cvcLengthOf(brand), cvcLengthOf(brand)] : [3, 4];
    const res = { empty: d === '', complete: false, full: d.length >= max, error: null };
    if (d.length < min) res.error = Object.assign(error('cvc_incomplete'), { incomplete: true });
    else if (d.length > max) res.error = error('cvc_invalid');
    else res.complete = true;
    return res;
  }

  const checkName = (value) => ({ empty: value.trim() === '', complete: true, full: false, error: null });

  // ---- fields on this page ----------------------------------------------------------------

  const form = document.getElementById('sr-form');
  const stateBox = document.getElementById('sr-state');
  const fields = {};
  for (const name of ['number', 'expiry', 'cvc', 'name']) {
    fields[name] = {
      name,
      row: document.getElementById('sr-row-' + name),
      input: document.getElementById('sr-' + name),
      message: document.getElementById('sr-' + name + '-error'),
      active: false,
      touched: false, // blurred at least once
      forced: false, // a submit asked for every error to show
      serverError: null,
      previous: '',
    };
  }
  let state = config.state;
  let initialized = false;
  let publishableKey = '';
  let clientSecret = '';
  let style = {};
  let siblingBrand = null; // split cvc frame: the brand the number frame last announced
  let inFlight = false;

  const activeFields = () => Object.values(fields).filter((f) => f.active);
  const currentBrand = () => (fields.number.active ? brandOf(digitsOf(fields.number.input.value)) : siblingBrand);

  function check(f) {
    const value = f.input.value;
    switch (f.name) {
      case 'number': return checkNumber(value);
      case 'expiry': return checkExpiry(value);
      case 'cvc': return checkCvc(value, currentBrand());
      default: return checkName(value);
    }
  }

  // The error a field shows now: incomplete values only once the customer has left the field,
  // wrong ones as soon as nothing more can be typed.
  function visibleError(f, res) {
    if (f.serverError) return f.serverError;
    if (!res.error || (res.empty && !f.forced)) return null;
    if (f.forced) return res.error;
    const focused = document.activeElement === f.input;
    if (!focused) return f.touched ? res.error : null;
    return !res.error.incomplete && res.full ? res.error : null;
  }

  function render(f) {
    const res = check(f);
    const err = visibleError(f, res);
    f.message.textContent = err ? err.message : '';
    if (err) f.input.setAttribute('aria-invalid', 'true');
    else f.input.removeAttribute('aria-invalid');
    applyStyle(f);
    return { res, err };
  }

  function renderAll(notify = true) {
    let complete = true;
    let empty = true;
    let shown = null;
    for (const f of activeFields()) {
      const { res, err } = render(f);
      if (f.name !== 'name' && !res.complete) complete = false;
      if (!res.empty) empty = false;
      if (err && !shown) shown = { code: err.code, message: err.message };
    }
    if (notify) {
      const brand = fields.number.active ? currentBrand() : null;
      post({ type: 'change', complete, empty, brand, error: shown });
    }
  }

  // Reformat in place and keep the caret after the same number of digits it followed.
  function reformat(f, inputType) {
    const input = f.input;
    let raw = input.value;
    let caret = input.selectionStart == null ? raw.length : input.selectionStart;
    const deleting = /^delete/.test(inputType || '');
    // Backspace over a separator would otherwise change nothing: take the digit before it.
    if (inputType === 'deleteContentBackward' && digitsOf(raw) === digitsOf(f.previous) && caret > 0) {
      const before = raw.slice(0, caret).replace(/\d(\D*)$/, '$1');
      raw = before + raw.slice(caret);
      caret = before.length;
    }
    const atEnd = caret >= raw.length;
    const wanted = digitsOf(raw.slice(0, caret)).length;
    let next;
    if (f.name === 'number') next = formatNumber(raw);
    else if (f.name === 'expiry') next = formatExpiry(raw, deleting);
    else if (f.name === 'cvc') next = formatCvc(raw).slice(0, currentBrand() ? cvcLengthOf(currentBrand()) : 4);
    else next = raw;
    if (next !== input.value) {
      input.value = next;
      let pos = 0;
      for (let seen = 0; pos < next.length && seen < wanted; pos++) if (/\d/.test(next[pos])) seen++;
      if (atEnd) pos = next.length;
      if (document.activeElement === input) input.setSelectionRange(pos, pos);
    }
    f.previous = input.value;
  }

  // ---- styles from the parent -------------------------------------------------------------

  const SAFE_VALUE = /^[A-Za-z0-9#%.,()\s+-]*$/;
  const SAFE_FONT = /^[A-Za-z0-9#%.,()\s+\-'"]*$/;

  function sanitizeStyle(input) {
    const out = {};
    if (!input || typeof input !== 'object') return out;
    for (const key of STYLE_KEYS) {
      const rules = input[key];
      if (!rules || typeof rules !== 'object') continue;
      out[key] = {};
      for (const prop of STYLE_PROPS) {
        const v = rules[prop];
        if (typeof v !== 'string' || v.length > 100) continue;
        if (/url\(|expression|var\(/i.test(v)) continue;
        if (!(prop === 'fontFamily' ? SAFE_FONT : SAFE_VALUE).test(v)) continue;
        out[key][prop] = v;
      }
    }
    return out;
  }

  function applyStyle(f) {
    const invalid = f.input.getAttribute('aria-invalid') === 'true';
    const focused = document.activeElement === f.input;
    const merged = Object.assign({}, style.base, invalid ? style.invalid : null, focused ? style.focus : null);
    for (const prop of STYLE_PROPS) f.input.style[prop] = merged[prop] || '';
  }

  function applyBodyStyle() {
    for (const prop of BODY_PROPS) document.body.style[prop] = (style.base && style.base[prop]) || '';
    for (const f of activeFields()) applyStyle(f);
  }

  // ---- talking to the parent --------------------------------------------------------------

  function post(msg) {
    if (!initialized) return;
    window.parent.postMessage(Object.assign({ sr: 1, frame: config.frame }, msg), config.origin);
  }

  let lastHeight = 0;
  function reportHeight() {
    const height = Math.ceil(document.documentElement.getBoundingClientRect().height);
    if (height !== lastHeight) {
      lastHeight = height;
      post({ type: 'resize', height });
    }
  }

  function showState(next) {
    state = next;
    form.hidden = true;
    stateBox.textContent = MESSAGES[STATE_CODE[next]] || MESSAGES.client_session_invalid;
    stateBox.hidden = false;
    for (const f of Object.values(fields)) f.input.value = '';
    reportHeight();
  }

  function onInit(msg) {
    if (initialized) return;
    if (typeof msg.publishableKey !== 'string' || !/^pk_(test|live)_[A-Za-z0-9_]+$/.test(msg.publishableKey)) return;
    if (typeof msg.clientSecret !== 'string' || !msg.clientSecret.startsWith(config.session + '_secret_')) return;
    publishableKey = msg.publishableKey;
    clientSecret = msg.clientSecret;
    style = sanitizeStyle(msg.style);
    initialized = true;

    const wantName = !!(msg.fields && msg.fields.name === true);
    const shown = split ? [config.field]
      : ['number', 'expiry'].concat(config.collect_cvc ? ['cvc'] : [], wantName ? ['name'] : []);
    for (const name of shown) {
      const f = fields[name];
      f.active = true;
      f.row.hidden = false;
      const text = msg.placeholders && msg.placeholders[name];
      f.input.placeholder = typeof text === 'string' ? text.slice(0, 64) : PLACEHOLDERS[name];
    }
    applyBodyStyle();
    if (state === 'open') {
      form.hidden = false;
      if (split) openChannel();
    } else {
      showState(state);
    }
    new ResizeObserver(reportHeight).observe(document.documentElement);
    post({ type: 'ready', state });
    if (state !== 'open') post({ type: 'error', error: error(STATE_CODE[state] || 'client_session_invalid') });
    reportHeight();
  }

  window.addEventListener('message', (event) => {
    if (event.origin !== config.origin || event.source !== window.parent) return;
    const msg = event.data;
    if (!msg || typeof msg !== 'object' || msg.sr !== 1 || msg.frame !== config.frame) return;
    if (msg.type === 'init') return onInit(msg);
    if (!initialized) return;
    switch (msg.type) {
      case 'tokenize':
        tokenize().then((res) => post(Object.assign({ type: 'result', request: msg.request }, res)));
        break;
      case 'focus': {
        const first = activeFields()[0];
        if (first && state === 'open') first.input.focus();
        break;
      }
      case 'clear':
        clearFields();
        break;
      case 'update':
        style = sanitizeStyle(msg.style);
        applyBodyStyle();
        break;
    }
  });

  function clearFields() {
    for (const f of activeFields()) {
      f.input.value = '';
      f.previous = '';
      f.touched = f.forced = false;
      f.serverError = null;
    }
    renderAll();
  }

  // ---- split fields: the frames of one group talk over a same-origin channel ------------------

  let channel = null;
  const members = new Set();
  const waiting = new Map(); // request id -> {replies, done}

  function openChannel() {
    channel = new BroadcastChannel('strongroom:' + group);
    channel.onmessage = (event) => {
      const m = event.data;
      if (!m || m.g !== group || m.s !== config.session || !initialized) return;
      onSibling(m);
    };
    say({ t: 'hello', field: config.field });
    if (config.field === 'number') say({ t: 'who' });
  }

  const say = (m) => channel && channel.postMessage(Object.assign({ g: group, s: config.session }, m));

  function onSibling(m) {
    const field = fields[config.field];
    switch (m.t) {
      case 'who':
        say({ t: 'hello', field: config.field });
        break;
      case 'hello':
        members.add(m.field);
        if (config.field === 'number') say({ t: 'brand', brand: currentBrand() });
        break;
      case 'brand':
        if (config.field === 'cvc' && m.brand !== siblingBrand) {
          siblingBrand = typeof m.brand === 'string' ? m.brand : null;
          reformat(field);
          renderAll();
        }
        break;
      case 'collect': {
        if (config.field === 'number' || state !== 'open') return;
        field.forced = true;
        const { res } = render(field);
        const reply = { t: 'value', req: m.req, field: config.field };
        if (res.error && !(config.field === 'name' && res.empty)) reply.error = { code: res.error.code, message: res.error.message };
        else reply.value = field.input.value;
        say(reply);
        renderAll();
        break;
      }
      case 'value': {
        const w = waiting.get(m.req);
        if (w) { w.replies[m.field] = m; w.check(); }
        break;
      }
      case 'state':
        if (STATE_CODE[m.state]) showState(m.state);
        break;
      case 'server_error':
        if (m.field === config.field) { field.serverError = m.error; renderAll(); }
        break;
      case 'clear':
        clearFields();
        break;
    }
  }

  // Asks the sibling frames for their values; resolves {values} or {error}.
  function collectSiblings() {
    const needed = ['expiry'].concat(config.collect_cvc ? ['cvc'] : [], members.has('name') ? ['name'] : []);
    const req = Math.random().toString(36).slice(2);
    return new Promise((resolve) => {
      const w = { replies: {} };
      const finish = (res) => { waiting.delete(req); clearTimeout(w.timer); resolve(res); };
      w.check = () => {
        if (!needed.every((n) => w.replies[n])) return;
        for (const n of needed) if (w.replies[n].error) return finish({ error: w.replies[n].error });
        const values = {};
        for (const n of needed) values[n] = String(w.replies[n].value || '');
        finish({ values });
      };
      w.timer = setTimeout(() => finish({ error: error('element_unavailable') }), SIBLING_TIMEOUT_MS);
      waiting.set(req, w);
      say({ t: 'collect', req });
    });
  }

  // ---- tokenize -----------------------------------------------------------------------------

  async function tokenize() {
    if (state !== 'open') return { error: error(STATE_CODE[state] || 'client_session_invalid') };
    if (split && config.field !== 'number') return { error: error('element_unavailable', 'Tokenize through the card number field.') };
    if (inFlight) return { error: error('tokenize_in_progress') };
    inFlight = true;
    try {
      return await collectAndSend();
    } finally {
      inFlight = false;
    }
  }

  async function collectAndSend() {
    let firstError = null;
    for (const f of activeFields()) {
      f.forced = true;
      f.serverError = null;
      const { res } = render(f);
      if (res.error && !firstError) firstError = res.error;
    }
    let values = {};
    if (split) {
      const got = await collectSiblings();
      if (got.error && !firstError) firstError = got.error;
      values = got.values || {};
    }
    renderAll();
    if (firstError) return { error: { code: firstError.code, message: firstError.message } };

    const read = (name) => (fields[name].active ? fields[name].input.value : values[name] || '');
    const expiry = checkExpiry(read('expiry'));
    const body = {
      client_secret: clientSecret,
      number: digitsOf(read('number')),
      exp_month: expiry.month,
      exp_year: expiry.year,
    };
    if (config.collect_cvc) body.cvc = digitsOf(read('cvc'));
    const name = read('name').trim();
    if (name) body.cardholder_name = name;

    let response;
    let payload = null;
    try {
      response = await fetch(config.api, {
        method: 'POST',
        headers: { Authorization: 'Bearer ' + publishableKey, 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
        credentials: 'omit',
        cache: 'no-store',
        referrerPolicy: 'no-referrer',
      });
      payload = await response.json().catch(() => null);
    } catch (_) {
      return { error: error('api_connection_error') };
    }
    if (response.status === 201 && payload && typeof payload.id === 'string') {
      clearFields();
      say({ t: 'clear' });
      return { token: pickToken(payload) };
    }
    return { error: serverError(response, payload) };
  }

  function pickToken(p) {
    const token = {};
    for (const k of ['id', 'object', 'brand', 'last4', 'masked_number', 'exp_month', 'exp_year',
      'mode', 'created', 'expires_at', 'cvc_available']) {
      if (p[k] !== undefined) token[k] = p[k];
    }
    return token;
  }

  function serverError(response, payload) {
    const code = payload && payload.error && typeof payload.error.code === 'string' ? payload.error.code : 'api_error';
    let err = error(code, MESSAGES[code] || GENERIC);
    if (code === 'rate_limited') {
      const wait = parseInt(response.headers.get('Retry-After') || '', 10);
      if (wait > 0) err = error(code, `Too many attempts. Please wait ${wait} seconds and try again.`);
    }
    const field = FIELD_OF_CODE[code];
    if (field && fields[field].active) {
      fields[field].serverError = err;
    } else if (field) {
      say({ t: 'server_error', field, error: err });
    }
    if (CODE_STATE[code]) {
      showState(CODE_STATE[code]);
      say({ t: 'state', state: CODE_STATE[code] });
      post({ type: 'error', error: err });
    }
    renderAll();
    return err;
  }

  // ---- input events -------------------------------------------------------------------------

  for (const f of Object.values(fields)) {
    f.input.addEventListener('input', (event) => {
      f.forced = false;
      f.serverError = null;
      reformat(f, event.inputType);
      if (f.name === 'number') {
        // The cvc length depends on the brand.
        if (fields.cvc.active) reformat(fields.cvc);
        if (split) say({ t: 'brand', brand: currentBrand() });
      }
      renderAll();
    });
    f.input.addEventListener('focus', () => { applyStyle(f); renderAll(false); });
    f.input.addEventListener('blur', () => {
      f.touched = true;
      renderAll();
    });
    f.input.addEventListener('keydown', (event) => {
      if (event.key !== 'Enter' || event.isComposing) return;
      event.preventDefault();
      const list = activeFields();
      const i = list.indexOf(f);
      if (i >= 0 && i < list.length - 1) list[i + 1].input.focus();
      else post({ type: 'submit' });
    });
  }

  // Focus and blur of the frame as a whole, not of each input inside it.
  form.addEventListener('focusin', (event) => {
    if (!form.contains(event.relatedTarget)) post({ type: 'focus' });
  });
  form.addEventListener('focusout', (event) => {
    if (!form.contains(event.relatedTarget)) post({ type: 'blur' });
  });
  // form-action 'none' blocks a real submission; an implicit one is turned into a request.
  form.addEventListener('submit', (event) => event.preventDefault());

  if (state !== 'open') showState(state);
})();
