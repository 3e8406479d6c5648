// A real OpenID provider (node-oidc-provider) for the identity tests, on loopback.
// Usage: node provider.js PORT STATE.json. The test owns STATE.json and may rewrite it at any
// time; it is read on every use: {"client_id", "users": {"NAME": {"password", "groups",
// "otp"}}, "bad_jwks": false}. A user who types the right "otp" signs in with amr ["pwd", "otp"].
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';

import Provider from 'oidc-provider';

const [port, stateFile] = process.argv.slice(2);
const state = () => JSON.parse(fs.readFileSync(stateFile, 'utf8'));
const issuer = `http://127.0.0.1:${port}`;

function rsaJwk(kid) {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid, use: 'sig', alg: 'RS256' };
}
const signing = rsaJwk('test-key');
// Published instead of the real key when "bad_jwks" is set: same kid, another key.
const { d, p, q, dp, dq, qi, ...impostor } = rsaJwk('test-key');

const provider = new Provider(issuer, {
  clients: [{
    client_id: state().client_id,
    token_endpoint_auth_method: 'none',
    grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
    response_types: [],
    redirect_uris: [],
  }],
  jwks: { keys: [signing] },
  features: { deviceFlow: { enabled: true }, devInteractions: { enabled: false } },
  claims: { openid: ['sub', 'amr', 'acr'], profile: ['preferred_username', 'groups'] },
  conformIdTokenClaims: false,
  ttl: { AccessToken: 120, IdToken: 120, DeviceCode: 300, RefreshToken: 3600, Grant: 3600,
    Interaction: 300, Session: 3600 },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const user = state().users[id];
    if (!user) return undefined;
    return { accountId: id,
      async claims() { return { sub: id, preferred_username: user.username || id, groups: user.groups }; } };
  },
  // Consent is the device confirmation page; the grant is given with it.
  async loadExistingGrant(ctx) {
    const { Grant } = ctx.oidc.provider;
    const found = ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (found) return Grant.find(found);
    const grant = new Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid profile offline_access');
    grant.addOIDCClaims(['preferred_username', 'groups', 'amr', 'acr']);
    await grant.save();
    return grant;
  },
});
provider.proxy = false;
// Every secret the provider hands out, one a line, so that tests can grep the bastion's audit
// trail and log for them (opaque tokens are their jti; ID tokens are JWTs, found by "eyJ").
for (const kind of ['device_code', 'access_token', 'refresh_token']) {
  provider.on(`${kind}.saved`, (token) => fs.appendFileSync(`${stateFile}.secrets`, `${token.jti}\n`));
}
// Poll every second (RFC 8628 lets the provider say so), so a test's sign-in takes a second.
provider.on('device_authorization.success', (ctx, body) => { Object.assign(body, { interval: 1 }); });

const page = (body) => `<!DOCTYPE html><html><head><title>Test IdP</title></head><body>${body}</body></html>`;

async function form(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return new URLSearchParams(body);
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.prompt.name !== 'login') {
    return provider.interactionFinished(req, res, {}, { mergeWithLastSubmission: true });
  }
  if (req.method === 'GET') {
    res.setHeader('content-type', 'text/html');
    return res.end(page(`<form method="post" action="/interaction/${uid}/login">
      <input name="login"><input name="password" type="password"><input name="otp">
      <button type="submit">Sign-in</button></form>`));
  }
  if (action !== 'login') { res.statusCode = 404; return res.end(); }
  const params = await form(req);
  const user = state().users[params.get('login')];
  if (!user || user.password !== params.get('password')) {
    res.statusCode = 403;
    res.setHeader('content-type', 'text/html');
    return res.end(page('wrong login or password'));
  }
  const mfa = Boolean(user.otp) && params.get('otp') === user.otp;
  return provider.interactionFinished(req, res, {
    login: { accountId: params.get('login'), amr: mfa ? ['pwd', 'otp'] : ['pwd'],
      acr: mfa ? 'mfa' : 'pwd' },
  }, { mergeWithLastSubmission: false });
}

const callback = provider.callback();
http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, issuer);
    const match = url.pathname.match(/^\/interaction\/([^/]+)(?:\/(login))?$/);
    if (match) return await interaction(req, res, match[1], match[2]);
    if (url.pathname === '/jwks' && state().bad_jwks) {
      res.setHeader('content-type', 'application/json');
      return res.end(JSON.stringify({ keys: [impostor] }));
    }
    return callback(req, res);
  } catch (err) {
    res.statusCode = 500;
    res.end(String(err));
  }
}).listen(Number(port), '127.0.0.1', () => console.log(`oidc provider listening on ${issuer}`));
