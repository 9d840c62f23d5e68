// A real, OpenID-Certified OpenID Provider (panva/oidc-provider v9) for the
// flask-ccsso interop suite.  Driven by tests/interop/op_harness.py.
//
// Configuration arrives as JSON in the OP_CONFIG environment variable:
//   {
//     "port": 4711,                                   (required)
//     "jwks": {"keys": [<private RSA JWKs>]},         (first key signs)
//     "redirectUris": [...], "postLogoutRedirectUris": [...],
//     "backchannelLogoutUri": "http://..." | null,
//     "backchannelDeliver": false,   (true: really POST logout tokens; always recorded)
//     "jwtAccessTokens": true,       (false: plain code exchange yields an opaque, userinfo-capable AT)
//     "clockSkewSeconds": 0,         (offsets the OP clock)
//     "stateFile": "/tmp/...json"    (in-memory store is dumped here on SIGTERM and reloaded on start)
//   }
// Prints exactly one line "READY <port>" on stdout once listening.

import fs from 'node:fs';
import http from 'node:http';
import crypto from 'node:crypto';
import { parse as parseQuery } from 'node:querystring';

import Provider, { errors, interactionPolicy } from 'oidc-provider';

const CONFIG = JSON.parse(process.env.OP_CONFIG || '{}');
const PORT = Number(CONFIG.port);
if (!Number.isInteger(PORT) || PORT <= 0) {
  console.error('OP_CONFIG.port is required');
  process.exit(2);
}
const ISSUER = `http://127.0.0.1:${PORT}`;
const RESOURCE = 'api://portal';

// ---------------------------------------------------------------- clock ---
const SKEW_MS = Math.round(Number(CONFIG.clockSkewSeconds || 0) * 1000);
if (SKEW_MS) {
  const realNow = Date.now;
  Date.now = () => realNow() + SKEW_MS;
}

// ---------------------------------------------------------------- users ---
const USERS = new Map(Object.entries({
  alice: { email: 'alice@example.com', name: 'Alice Admin', groups: ['database-admins', 'senior-developers'] },
  bob: { email: 'bob@example.com', name: 'Bob Security', groups: ['security-team'] },
  carol: { email: 'carol@example.com', name: 'Carol Devops', groups: ['devops-engineers'] },
  dave: { email: 'dave@example.com', name: 'Dave Contractor', groups: ['contractors'] },
  erin: { email: 'erin@example.com', name: 'Erin Developer', groups: ['senior-developers'] },
}).map(([username, u]) => [username, { ...u, username, sub: `u-${username}`, password: 'password' }]));

const bySub = (sub) => [...USERS.values()].find((u) => u.sub === sub);

// ------------------------------------------------------- scope policy ---
const OIDC_SCOPES = ['openid', 'offline_access', 'email', 'profile', 'groups'];
const SCOPE_POLICY = { // custom scope -> group that allows it
  'migration:write': 'database-admins',
  'security:read': 'security-team',
  'infra:deploy': 'devops-engineers',
};
const CUSTOM_SCOPES = Object.keys(SCOPE_POLICY);

function allowedCustomScopes(user) {
  return CUSTOM_SCOPES.filter((s) => user.groups.includes(SCOPE_POLICY[s]));
}

function requestedClaimNames(claimsParam) {
  if (!claimsParam) return [];
  try {
    const parsed = typeof claimsParam === 'string' ? JSON.parse(claimsParam) : claimsParam;
    return [...new Set([
      ...Object.keys(parsed.id_token || {}),
      ...Object.keys(parsed.userinfo || {}),
    ])];
  } catch {
    return [];
  }
}

// Builds (and saves) a Grant reflecting what the IdP policy allows *right now*
// for this user: every OIDC scope, every custom scope the groups allow, and the
// denied custom scopes explicitly rejected so oidc-provider never prompts for
// them (they are silently dropped, as real IdP policies do).
async function policyGrant(provider, accountId, clientId, params) {
  const user = bySub(accountId);
  const grant = new provider.Grant({ accountId, clientId });
  const allowed = user ? allowedCustomScopes(user) : [];
  const denied = CUSTOM_SCOPES.filter((s) => !allowed.includes(s));
  grant.addOIDCScope(OIDC_SCOPES.join(' '));
  grant.addResourceScope(RESOURCE, [...OIDC_SCOPES, ...allowed].join(' '));
  if (denied.length) grant.rejectResourceScope(RESOURCE, denied.join(' '));
  const claims = requestedClaimNames(params?.claims);
  if (claims.length) grant.addOIDCClaims(claims);
  await grant.save();
  return grant;
}

// -------------------------------------------------------------- adapter ---
// Plain Map store (no LRU eviction) that survives restarts via stateFile.
const STORE = new Map(); // key -> { p: payload, e: expiresAtMs|null }
const GRANT_INDEX = new Map(); // grantId -> Set(keys)

function loadState() {
  if (!CONFIG.stateFile || !fs.existsSync(CONFIG.stateFile)) return;
  try {
    const data = JSON.parse(fs.readFileSync(CONFIG.stateFile, 'utf8'));
    for (const [k, v] of data.store || []) STORE.set(k, v);
    for (const [g, keys] of data.grants || []) GRANT_INDEX.set(g, new Set(keys));
  } catch (err) {
    console.error(`ignoring unreadable stateFile: ${err.message}`);
  }
}

function saveState() {
  if (!CONFIG.stateFile) return;
  const data = {
    store: [...STORE.entries()],
    grants: [...GRANT_INDEX.entries()].map(([g, s]) => [g, [...s]]),
  };
  fs.writeFileSync(CONFIG.stateFile, JSON.stringify(data));
}

function getLive(key) {
  const entry = STORE.get(key);
  if (!entry) return undefined;
  if (entry.e !== null && entry.e <= Date.now()) {
    STORE.delete(key);
    return undefined;
  }
  return entry.p;
}

const GRANTABLE = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest', 'PreAuthorizedCode']);

class StoreAdapter {
  constructor(model) { this.model = model; }

  key(id) { return `${this.model}:${id}`; }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    const e = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : null;
    STORE.set(key, { p: payload, e });
    if (this.model === 'Session' && payload.uid) STORE.set(`sessionUid:${payload.uid}`, { p: id, e });
    if (payload.userCode) STORE.set(`userCode:${payload.userCode}`, { p: id, e });
    if (GRANTABLE.has(this.model) && payload.grantId) {
      if (!GRANT_INDEX.has(payload.grantId)) GRANT_INDEX.set(payload.grantId, new Set());
      GRANT_INDEX.get(payload.grantId).add(key);
    }
  }

  async find(id) { return getLive(this.key(id)); }

  async findByUid(uid) {
    const id = getLive(`sessionUid:${uid}`);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const id = getLive(`userCode:${userCode}`);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const payload = getLive(this.key(id));
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) { STORE.delete(this.key(id)); }

  async revokeByGrantId(grantId) {
    for (const key of GRANT_INDEX.get(grantId) || []) STORE.delete(key);
    GRANT_INDEX.delete(grantId);
  }
}

// ----------------------------------------------------------------- keys ---
function signingKeys() {
  if (CONFIG.jwks?.keys?.length) return CONFIG.jwks;
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { keys: [{ ...jwk, kid: `gen-${crypto.randomBytes(4).toString('hex')}`, use: 'sig', alg: 'RS256' }] };
}

// ------------------------------------------------- back-channel logout ---
const BACKCHANNEL_LOG = [];

async function opFetch(url, options) {
  const body = options.body instanceof URLSearchParams ? options.body : new URLSearchParams(String(options.body || ''));
  const logoutToken = body.get('logout_token');
  if (logoutToken) {
    const record = { uri: String(url), logout_token: logoutToken, at: Date.now() / 1000, delivered: null, error: null };
    BACKCHANNEL_LOG.push(record);
    if (!CONFIG.backchannelDeliver) {
      record.delivered = false;
      return new Response(null, { status: 204 });
    }
    const { dispatcher, ...rest } = options; // drop SSRF guard: tests target loopback
    try {
      const response = await globalThis.fetch(url, rest);
      record.delivered = response.status;
      return response;
    } catch (err) {
      record.error = String(err?.cause?.message || err.message);
      throw err;
    }
  }
  const { dispatcher, ...rest } = options;
  return globalThis.fetch(url, rest);
}

// ------------------------------------------------------------- policy ---
const { base: basePolicy, Check } = interactionPolicy;
const policy = basePolicy();
// Step-up: if acr_values were requested and the session's acr is not among
// them, demand a fresh login (oidc-provider treats acr_values as voluntary).
policy.get('login').checks.add(new Check(
  'acr_values_unmet',
  'requested authentication context class not satisfied by the session',
  'login_required',
  (ctx) => {
    const requested = ctx.oidc.params.acr_values?.split(' ').filter(Boolean);
    if (requested?.length && !requested.includes(ctx.oidc.session.acr)) {
      return Check.REQUEST_PROMPT;
    }
    return Check.NO_NEED_TO_PROMPT;
  },
));

// ------------------------------------------------------------ clients ---
const redirectUris = CONFIG.redirectUris || [];
const postLogoutRedirectUris = CONFIG.postLogoutRedirectUris || [];
function clientFor(id, secret) {
  const client = {
    client_id: id,
    client_secret: secret,
    client_name: id,
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: redirectUris,
    post_logout_redirect_uris: postLogoutRedirectUris,
    require_auth_time: true,
    id_token_signed_response_alg: 'RS256',
  };
  if (CONFIG.backchannelLogoutUri) {
    client.backchannel_logout_uri = CONFIG.backchannelLogoutUri;
    client.backchannel_logout_session_required = true;
  }
  return client;
}

const html = (s) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));

function page(title, body) {
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${html(title)}</title></head><body>${body}</body></html>`;
}

const configuration = {
  adapter: StoreAdapter,
  clients: [
    clientFor('portal', 'portal-secret-0123456789abcdef0123456789'),
    clientFor('other', 'other-secret-0123456789abcdef0123456789'),
  ],
  jwks: signingKeys(),
  cookies: { keys: ['ccsso-interop-cookie-key-0123456789'] },
  scopes: OIDC_SCOPES,
  claims: {
    acr: null,
    amr: null,
    auth_time: null,
    sid: null,
    iss: null,
    // acr/amr are only emitted by oidc-provider when requested (acr_values /
    // claims parameter) unless a granted scope maps them: openid does.
    openid: ['sub', 'groups', 'acr', 'amr'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  acrValues: ['urn:ccsso:loa1', 'urn:ccsso:mfa'],
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  fetch: opFetch,
  interactions: {
    policy,
    url: (ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  async findAccount(ctx, sub) {
    const user = bySub(sub);
    if (!user) return undefined;
    return {
      accountId: sub,
      async claims() {
        const current = bySub(sub); // re-read: groups may change at runtime
        return {
          sub,
          email: current.email,
          email_verified: true,
          name: current.name,
          preferred_username: current.username,
          groups: [...current.groups],
        };
      },
    };
  },
  async loadExistingGrant(ctx) {
    // First-party IdP behaviour: consent is implied, scopes follow group policy.
    return policyGrant(ctx.oidc.provider, ctx.oidc.account.accountId, ctx.oidc.client.clientId, ctx.oidc.params);
  },
  async issueRefreshToken(ctx, client) {
    return client.grantTypeAllowed('refresh_token');
  },
  rotateRefreshToken: true,
  async extraTokenClaims(ctx, token) {
    if (token.kind !== 'AccessToken' || !token.accountId) return undefined;
    const user = bySub(token.accountId);
    return user ? { groups: [...user.groups], email: user.email } : undefined;
  },
  features: {
    devInteractions: { enabled: false },
    claimsParameter: { enabled: true },
    introspection: { enabled: true, allowedPolicy: async () => true },
    revocation: {
      enabled: true,
      allowedPolicy: async (ctx, client, token) => token.clientId === client.clientId,
    },
    rpInitiatedLogout: {
      enabled: true,
      async logoutSource(ctx, form) {
        ctx.body = page('Logout Request', `<h1>Sign out from ${html(ctx.host)}?</h1>${form}
<button type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
<button type="submit" form="op.logoutForm">No, stay signed in</button>`);
      },
      async postLogoutSuccessSource(ctx) {
        ctx.body = page('Signed out', '<h1 id="op-logged-out">Sign-out Success</h1>');
      },
    },
    backchannelLogout: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => RESOURCE,
      useGrantedResource: async () => CONFIG.jwtAccessTokens !== false,
      getResourceServerInfo: async (ctx, resourceIndicator) => {
        if (resourceIndicator !== RESOURCE) throw new errors.InvalidTarget();
        return {
          scope: [...OIDC_SCOPES, ...CUSTOM_SCOPES].join(' '),
          audience: RESOURCE,
          accessTokenTTL: 3600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  ttl: {
    AccessToken: (ctx, token) => token.resourceServer?.accessTokenTTL || 3600,
    AuthorizationCode: 60,
    IdToken: 3600,
    Interaction: 3600,
    Session: 14 * 24 * 3600,
    Grant: 14 * 24 * 3600,
    RefreshToken: 14 * 24 * 3600,
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('OP error', `<h1 id="op-error">${html(out.error)}</h1><p id="op-error-description">${html(out.error_description || '')}</p>`);
  },
};

loadState();
const provider = new Provider(ISSUER, configuration);
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.on('backchannel.error', (ctx, err, client) => {
  if (CONFIG.backchannelDeliver) console.error(`backchannel.error ${client.clientId}: ${err.message}`);
});

// ------------------------------------------------------ interactions ---
function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function send(res, status, body, type = 'text/html; charset=utf-8') {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

const json = (res, status, obj) => send(res, status, JSON.stringify(obj), 'application/json');

function loginPage(uid, details, error) {
  const p = details.params;
  return page('Sign in', `<h1>Sign in to ${html(p.client_id)}</h1>
${error ? `<p id="login-error" class="error">${html(error)}</p>` : ''}
<form id="login" method="post" action="/interaction/${html(uid)}/login" autocomplete="off">
  <input type="hidden" name="uid" value="${html(uid)}">
  <label>Username <input name="username" value="" autofocus></label>
  <label>Password <input type="password" name="password" value=""></label>
  <label><input type="checkbox" name="mfa" value="1"> I completed the one-time-password step</label>
  <button type="submit">Sign in</button>
</form>
<form id="abort" method="post" action="/interaction/${html(uid)}/abort"><button type="submit">Cancel</button></form>`);
}

async function handleInteraction(req, res, url) {
  const m = url.pathname.match(/^\/interaction\/([^/]+)(?:\/(login|abort|consent))?$/);
  if (!m) return false;
  const [, uid, action] = m;
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    send(res, 400, page('OP error', `<h1 id="op-error">${html(err.name || 'error')}</h1><p id="op-error-description">${html(err.message)}</p>`));
    return true;
  }
  if (details.uid !== uid) {
    send(res, 400, page('OP error', '<h1 id="op-error">interaction mismatch</h1>'));
    return true;
  }
  const { prompt, params, session } = details;

  if (req.method === 'GET' && !action) {
    if (prompt.name === 'login') {
      send(res, 200, loginPage(uid, details));
      return true;
    }
    // consent (normally never reached: loadExistingGrant grants up front)
    const grant = await policyGrant(provider, session.accountId, params.client_id, params);
    await provider.interactionFinished(req, res, { consent: { grantId: grant.jti } }, { mergeWithLastSubmission: true });
    return true;
  }

  if (req.method === 'POST' && action === 'abort') {
    await provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
    return true;
  }

  if (req.method === 'POST' && action === 'login') {
    const form = parseQuery(await readBody(req));
    const username = String(form.username || '');
    const user = USERS.get(username);
    if (!user || form.password !== user.password) {
      send(res, 200, loginPage(uid, details, 'Invalid username or password.'));
      return true;
    }
    const mfa = !!form.mfa && form.mfa !== '0' && form.mfa !== 'false';
    const acr = mfa ? 'urn:ccsso:mfa' : 'urn:ccsso:loa1';
    const requestedAcr = params.acr_values ? String(params.acr_values).split(' ').filter(Boolean) : [];
    if (requestedAcr.length && !requestedAcr.includes(acr)) {
      send(res, 200, loginPage(uid, details, `Multi-factor authentication is required (acr_values=${requestedAcr.join(' ')}).`));
      return true;
    }
    const grant = await policyGrant(provider, user.sub, params.client_id, params);
    await provider.interactionFinished(req, res, {
      login: { accountId: user.sub, acr, amr: mfa ? ['pwd', 'otp'] : ['pwd'], remember: true },
      consent: { grantId: grant.jti },
    }, { mergeWithLastSubmission: false });
    return true;
  }

  send(res, 405, page('OP error', '<h1 id="op-error">method not allowed</h1>'));
  return true;
}

// ------------------------------------------------------------- admin ---
async function handleAdmin(req, res, url) {
  if (!url.pathname.startsWith('/__admin/')) return false;
  const path = url.pathname.slice('/__admin'.length);
  if (req.method === 'GET' && path === '/health') {
    json(res, 200, {
      ok: true,
      issuer: ISSUER,
      kids: configuration.jwks.keys.map((k) => k.kid),
      now: Math.floor(Date.now() / 1000),
    });
    return true;
  }
  const g = path.match(/^\/users\/([^/]+)\/groups$/);
  if (g) {
    const user = USERS.get(decodeURIComponent(g[1]));
    if (!user) { json(res, 404, { error: 'no such user' }); return true; }
    if (req.method === 'POST' || req.method === 'PUT') {
      let groups;
      try { groups = JSON.parse(await readBody(req)); } catch { groups = null; }
      if (!Array.isArray(groups) || !groups.every((x) => typeof x === 'string')) {
        json(res, 400, { error: 'body must be a JSON list of strings' });
        return true;
      }
      user.groups = [...groups];
    }
    json(res, 200, { username: user.username, sub: user.sub, groups: user.groups });
    return true;
  }
  if (path === '/users' && req.method === 'GET') {
    json(res, 200, [...USERS.values()].map(({ password, ...u }) => u));
    return true;
  }
  if (path === '/backchannel-logouts') {
    if (req.method === 'DELETE') BACKCHANNEL_LOG.length = 0;
    json(res, 200, BACKCHANNEL_LOG);
    return true;
  }
  json(res, 404, { error: 'unknown admin endpoint' });
  return true;
}

// ------------------------------------------------------------ server ---
const callback = provider.callback();
const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, ISSUER);
  try {
    if (await handleAdmin(req, res, url)) return;
    if (await handleInteraction(req, res, url)) return;
  } catch (err) {
    console.error(err);
    if (!res.headersSent) send(res, 500, page('OP error', `<h1 id="op-error">server_error</h1><p>${html(err.message)}</p>`));
    return;
  }
  callback(req, res);
});

function shutdown() {
  try { saveState(); } catch (err) { console.error(`stateFile write failed: ${err.message}`); }
  server.close();
  server.closeAllConnections?.();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

server.listen(PORT, '127.0.0.1', () => {
  process.stdout.write(`READY ${PORT}\n`);
});
