// A test OpenID provider built on oidc-provider, set up as a production one would be (its own
// login page, no development interactions, PKCE for every client), for Gatehouse's end-to-end
// tests.
//
// Protocol, one JSON line each way:
//   1. listens on 127.0.0.1 (ephemeral port) and prints {"issuer":"http://127.0.0.1:PORT"};
//   2. reads {"clients":[client metadata...],"accounts":{"alice":{"email":...,"name":...,
//      "groups":[...]}}} from stdin, builds the provider for that issuer and prints "ready".
// Until then every request gets 503. The process ends when stdin closes (so a test that dies
// leaves no provider behind) or on SIGTERM. Errors go to stderr; stdout carries only the two
// protocol lines.

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import * as readline from 'node:readline';

import Provider from 'oidc-provider';

// oidc-provider prints its notices with console.info; stdout belongs to the protocol.
console.info = console.error;
console.log = console.error;

/** The request handler, once the provider is configured. */
let handle = null;

const server = http.createServer((req, res) => {
  if (handle === null) {
    res.statusCode = 503;
    res.setHeader('content-type', 'text/plain');
    res.end('the provider is not configured yet\n');
    return;
  }
  handle(req, res);
});

// The provider's signing key, also handed to the tests (with its kid) so they can sign
// logout tokens exactly as the provider would: replays, expired and malformed ones.
const key = signingKey();

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const announced = {
    issuer: `http://127.0.0.1:${port}`,
    signing_key: { kid: key.jwk.kid, pem: key.pem },
  };
  process.stdout.write(`${JSON.stringify(announced)}\n`);
});

const input = readline.createInterface({ input: process.stdin });
let configured = false;
input.on('line', (line) => {
  if (configured) {
    return;
  }
  configured = true;
  try {
    const { port } = server.address();
    const { clients, accounts } = JSON.parse(line);
    handle = configure(`http://127.0.0.1:${port}`, clients, accounts);
    process.stdout.write('ready\n');
  } catch (error) {
    console.error('provider: bad configuration:', error);
    process.exit(1);
  }
});
input.on('close', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));

function configure(issuer, clients, accounts) {
  const provider = new Provider(issuer, {
    clients,
    findAccount: (_ctx, id) => findAccount(accounts, id),
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      groups: ['groups'],
    },
    scopes: ['openid', 'profile', 'email', 'groups'],
    features: {
      devInteractions: { enabled: false },
      backchannelLogout: { enabled: true },
      rpInitiatedLogout: { enabled: true, logoutSource, postLogoutSuccessSource },
      revocation: { enabled: true },
    },
    pkce: { required: () => true },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    // Fixed keys: a test provider's cookies need not survive anything.
    cookies: { keys: ['gatehouse-test-provider-cookie-key-0001'] },
    jwks: { keys: [key.jwk] },
    ttl: {
      AccessToken: 600,
      AuthorizationCode: 60,
      IdToken: 600,
      Interaction: 600,
      Session: 3600,
      Grant: 3600,
    },
    // oidc-provider refuses to call special-use addresses (its SSRF protection), but the
    // relying parties of these tests listen on 127.0.0.1: back-channel logout must reach them.
    fetch: (url, { dispatcher: _dispatcher, ...options }) => globalThis.fetch(url, options),
    renderError: (ctx, out) => {
      ctx.type = 'html';
      ctx.body = `<!DOCTYPE html><title>${htmlEscape(out.error)}</title><p>${htmlEscape(out.error)}: ${htmlEscape(out.error_description ?? '')}</p>`;
    },
  });

  for (const event of [
    'server_error',
    'authorization.error',
    'backchannel.error',
    'end_session.error',
    'grant.error',
    'introspection.error',
    'jwks.error',
    'revocation.error',
    'userinfo.error',
  ]) {
    provider.on(event, (_ctx, error) => console.error(`provider ${event}: ${describe(error)}`));
  }

  const callback = provider.callback();
  return (req, res) => {
    const url = new URL(req.url, issuer);
    const match = url.pathname.match(/^\/interaction\/([^/]+)(\/login)?$/);
    if (match === null) {
      callback(req, res);
      return;
    }
    interaction(provider, accounts, req, res, match[1], match[2] !== undefined).catch((error) => {
      console.error('provider interaction:', error);
      if (!res.headersSent) {
        res.statusCode = error.statusCode ?? 500;
        res.setHeader('content-type', 'text/plain');
        res.end(`${error.error ?? 'server_error'}\n`);
      }
    });
  };
}

/** The login page (GET) and its form's target (POST .../login). */
async function interaction(provider, accounts, req, res, uid, isLogin) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) {
    res.statusCode = 400;
    res.end('interaction mismatch\n');
    return;
  }
  if (!isLogin && req.method === 'GET') {
    res.setHeader('content-type', 'text/html; charset=utf-8');
    res.setHeader('cache-control', 'no-store');
    res.end(`<!DOCTYPE html><html><head><title>Sign in</title></head><body>
<form method="post" action="/interaction/${htmlEscape(uid)}/login"><input name="login" autofocus><button type="submit">Sign in</button></form>
</body></html>`);
    return;
  }
  if (!isLogin || req.method !== 'POST') {
    res.statusCode = 405;
    res.end();
    return;
  }

  const form = new URLSearchParams(await body(req));
  const login = form.get('login') ?? '';
  if (!Object.hasOwn(accounts, login)) {
    await provider.interactionFinished(
      req,
      res,
      { error: 'access_denied', error_description: 'unknown user' },
      { mergeWithLastSubmission: false },
    );
    return;
  }

  // The login doubles as consent: the client gets what it asked for, so there is no consent
  // page.
  const { params, prompt } = details;
  let grant;
  if (details.grantId) {
    grant = await provider.Grant.find(details.grantId);
  }
  if (grant === undefined || grant.accountId !== login) {
    grant = new provider.Grant({ accountId: login, clientId: params.client_id });
  }
  if (params.scope) {
    grant.addOIDCScope(params.scope);
  }
  if (params.claims) {
    const requested = JSON.parse(params.claims);
    const claims = [
      ...Object.keys(requested.id_token ?? {}),
      ...Object.keys(requested.userinfo ?? {}),
    ];
    if (claims.length > 0) {
      grant.addOIDCClaims(claims);
    }
  }
  for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const grantId = await grant.save();
  await provider.interactionFinished(
    req,
    res,
    { login: { accountId: login }, consent: { grantId } },
    { mergeWithLastSubmission: false },
  );
}

function findAccount(accounts, id) {
  if (!Object.hasOwn(accounts, id)) {
    return undefined;
  }
  const account = accounts[id];
  return {
    accountId: id,
    async claims() {
      return {
        sub: id,
        email: account.email,
        email_verified: account.email !== undefined,
        name: account.name,
        groups: account.groups ?? [],
      };
    },
  };
}

/** A fresh RS256 signing key: the private JWK the provider uses, and its PKCS#1 PEM. */
function signingKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return {
    jwk: { ...jwk, kid: crypto.randomUUID(), alg: 'RS256', use: 'sig' },
    pem: privateKey.export({ type: 'pkcs1', format: 'pem' }),
  };
}

/** The end-session confirmation: the provider's form (with its xsrf input), sent with
 * logout=yes. */
async function logoutSource(ctx, form) {
  ctx.type = 'html';
  ctx.body = `<!DOCTYPE html><html><head><title>Sign out</title></head><body>
${form}
<button type="submit" form="op.logoutForm" name="logout" value="yes">Sign out</button>
</body></html>`;
}

async function postLogoutSuccessSource(ctx) {
  ctx.type = 'html';
  ctx.body = '<!DOCTYPE html><html><head><title>Signed out</title></head><body><p>Signed out.</p></body></html>';
}

function body(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > 64 * 1024) {
        reject(new Error('form too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** An error in one line: the OAuth error, its description and the detail only the log gets
 * (e.g. why a grant was invalid); the stack of anything else. */
function describe(error) {
  if (error?.error === undefined) {
    return error?.stack ?? String(error);
  }
  const parts = [error.error, error.error_description, error.error_detail].filter(Boolean);
  return parts.join(': ');
}

function htmlEscape(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
