// Stock MQTT.js against a broker: node conformance.js PORT SCENARIO.
// Each scenario prints one line "RESULT <json>" with what the client saw;
// hub/mqttjs_test.go runs them against ledge's hub and checks the result
// (the same script runs against mosquitto, for comparison by hand).
'use strict';
const mqtt = require('mqtt');

const port = +process.argv[2];
const scenario = process.argv[3];
const url = `mqtt://127.0.0.1:${port}`;
const uniq = process.env.UNIQ || Math.random().toString(36).slice(2, 8);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// conn connects and collects every message in c.got.
function conn(opts) {
  return new Promise((resolve, reject) => {
    const auth = process.env.MQTT_USER ? { username: process.env.MQTT_USER, password: process.env.MQTT_PASS } : {};
    const c = mqtt.connect(url, Object.assign({ reconnectPeriod: 0, connectTimeout: 5000, protocolVersion: 5 }, auth, opts));
    c.got = [];
    c.errors = [];
    c.on('message', (topic, payload, pk) => {
      c.got.push({ topic, payload: payload.toString(), qos: pk.qos, retain: pk.retain, props: pk.properties || {} });
    });
    c.on('disconnect', (pk) => { c.disc = { reasonCode: pk.reasonCode, reason: (pk.properties || {}).reasonString || '' }; });
    c.on('error', (e) => c.errors.push(e.message));
    c.once('connect', (ack) => { c.connack = ack; resolve(c); });
    c.once('error', reject);
  });
}
const subscribe = (c, filter, opts) => new Promise((resolve, reject) =>
  c.subscribe(filter, opts || { qos: 1 }, (e, granted) => (e ? reject(e) : resolve(granted))));
const publish = (c, topic, msg, opts) => new Promise((resolve) =>
  c.publish(topic, msg, opts || { qos: 1 }, (e) => resolve(e ? e.message : 'ok')));
const end = (c) => new Promise((r) => c.end(false, {}, r));
// until waits for cond, at most ms.
async function until(cond, ms) {
  for (let t = 0; t < ms && !cond(); t += 20) await sleep(20);
  return cond();
}
// withTimeout gives up on a promise (an ack that never comes) after ms.
const withTimeout = (p, ms, what) => Promise.race([p, sleep(ms).then(() => what)]);

const scenarios = {
  // One client publishes to a topic it subscribes to, many publishes
  // outstanding: its packet ids and the hub's overlap all the time.
  async bidi() {
    const qos = +process.env.QOS;
    const n = 300;
    const topic = `bidi/${uniq}`;
    const c = await conn({ clientId: `bidi-${uniq}`, properties: { receiveMaximum: 10 } });
    await subscribe(c, topic, { qos });
    const errors = [];
    const pending = [];
    for (let i = 0; i < n; i++) {
      pending.push(publish(c, topic, `m${i}`, { qos }).then((r) => { if (r !== 'ok') errors.push(r); }));
      if (pending.length % 20 === 0) await withTimeout(Promise.all(pending.slice(-20)), 5000, 'timeout');
      // a SUBSCRIBE now and then, with ids from the same space
      if (i % 50 === 25) await withTimeout(subscribe(c, `${topic}/other${i}`, { qos: 1 }).catch((e) => errors.push('subscribe: ' + e.message)), 5000, 'timeout');
    }
    await withTimeout(Promise.all(pending), 5000, 'timeout');
    await until(() => c.got.length >= n, 5000);
    const distinct = new Set(c.got.map((m) => m.payload)).size;
    return { sent: n, received: c.got.length, distinct, errors: errors.slice(0, 3), connected: c.connected };
  },

  // A persistent subscriber with a Maximum Packet Size: a message over it
  // is skipped (never sent), the ones after it arrive, and the session
  // still works after a reconnect.
  async maxPacketSize() {
    const topic = `mps/${uniq}`;
    const opts = { clientId: `mps-${uniq}`, clean: false, properties: { maximumPacketSize: 200, sessionExpiryInterval: 60 } };
    let s = await conn(opts);
    await subscribe(s, topic, { qos: 1 });
    const p = await conn({ clientId: `mps-pub-${uniq}` });
    await publish(p, topic, 'small1');
    await publish(p, topic, 'B'.repeat(500));
    await publish(p, topic, 'small2');
    await until(() => s.got.length >= 2, 3000);
    const live = s.got.map((m) => m.payload.slice(0, 10));
    await end(s);
    await publish(p, topic, 'C'.repeat(500)); // queued while away
    await publish(p, topic, 'small3');
    s = await conn(opts);
    await until(() => s.got.length >= 1, 3000);
    await sleep(200);
    const back = s.got.map((m) => m.payload.slice(0, 10));
    const r = { live, back, connectedAfterReconnect: s.connected, sessionPresent: s.connack.sessionPresent };
    await end(s);
    await end(p);
    return r;
  },

  // A persistent subscriber that accepts topic aliases: messages queued
  // while it is away arrive with their topics when it comes back.
  async aliasPersistent() {
    const topic = `alias/${uniq}`;
    const opts = { clientId: `alias-${uniq}`, clean: false, properties: { topicAliasMaximum: 5, sessionExpiryInterval: 60 } };
    let s = await conn(opts);
    await subscribe(s, `${topic}/#`, { qos: 1 });
    const p = await conn({ clientId: `alias-pub-${uniq}` });
    await publish(p, `${topic}/x`, 'live1');
    await publish(p, `${topic}/x`, 'live2');
    await until(() => s.got.length >= 2, 3000);
    const live = s.got.map((m) => [m.topic, m.payload]);
    await end(s);
    for (const t of ['x', 'x', 'y']) await publish(p, `${topic}/${t}`, `away-${t}`);
    s = await conn(opts);
    await until(() => s.got.length >= 3, 3000);
    const back = s.got.map((m) => [m.topic, m.payload]);
    const r = { live, back, connected: s.connected, errors: s.errors };
    await end(s);
    await end(p);
    return r;
  },

  // What CONNACK announces, and a publisher using topic aliases.
  async connack() {
    const c = await conn({ clientId: `connack-${uniq}` });
    const props = c.connack.properties || {};
    const topic = `alias-in/${uniq}/a/long/topic`;
    await subscribe(c, topic, { qos: 1 });
    const first = await withTimeout(publish(c, topic, 'a1', { qos: 1, properties: { topicAlias: 1 } }), 3000, 'no PUBACK');
    const second = await withTimeout(publish(c, '', 'a2', { qos: 1, properties: { topicAlias: 1 } }), 3000, 'no PUBACK');
    await until(() => c.got.length >= 2, 3000);
    const r = { props, first, second, got: c.got.map((m) => [m.topic, m.payload]) };
    await end(c);
    return r;
  },

  // A subscriber with Receive Maximum 2 and a burst of QoS 1 messages: the
  // hub never has more than 2 unacknowledged at once, and all arrive.
  async receiveMaximum() {
    const topic = `rm/${uniq}`;
    const n = 50;
    const s = await conn({ clientId: `rm-${uniq}`, properties: { receiveMaximum: 2 } });
    let outstanding = 0;
    let most = 0;
    s.on('packetreceive', (pk) => { if (pk.cmd === 'publish' && pk.qos > 0) { outstanding++; most = Math.max(most, outstanding); } });
    s.on('packetsend', (pk) => { if (pk.cmd === 'puback' || pk.cmd === 'pubcomp') outstanding--; });
    await subscribe(s, topic, { qos: 2 });
    const p = await conn({ clientId: `rm-pub-${uniq}` });
    const qos = +(process.env.QOS || 1);
    await Promise.all(Array.from({ length: n }, (_, i) => publish(p, topic, `m${i}`, { qos })));
    await until(() => s.got.length >= n, 5000);
    const r = { sent: n, received: s.got.length, mostUnacked: most, inOrder: s.got.every((m, i) => m.payload === `m${i}`) };
    await end(s);
    await end(p);
    return r;
  },

  // A persistent subscriber drops its connection (no DISCONNECT) and comes
  // back, eight times, while a publisher streams QoS 1 messages: every
  // message arrives, and the first copies in publish order (what the
  // session held is sent again before anything newer).
  async reconnectUnderLoad() {
    const topic = `rul/${uniq}`;
    const v = +(process.env.V || 5);
    const opts = { clientId: `rul-${uniq}`, protocolVersion: v, clean: false };
    if (v === 5) opts.properties = { sessionExpiryInterval: 300 };
    let s = await conn(opts);
    await subscribe(s, topic, { qos: 1 });
    const clients = [s];
    const p = await conn({ clientId: `rul-pub-${uniq}` });
    const n = 2000;
    let sent = 0;
    const pubber = (async () => {
      while (sent < n) {
        await publish(p, topic, String(++sent), { qos: 1 });
        if (sent % 20 === 0) await sleep(5);
      }
    })();
    for (let k = 0; k < 8; k++) {
      await sleep(100);
      s.stream.destroy();
      await sleep(150); // away: the session queues what comes meanwhile
      s = await conn(opts);
      clients.push(s);
    }
    await pubber;
    const count = () => new Set([].concat(...clients.map((c) => c.got.map((m) => m.payload)))).size;
    await until(() => count() >= n, 5000);
    const all = [].concat(...clients.map((c) => c.got.map((m) => +m.payload)));
    const seen = new Set();
    let missing = 0;
    let outOfOrder = 0;
    let highest = 0;
    for (const x of all) {
      if (seen.has(x)) continue;
      seen.add(x);
      if (x < highest) outOfOrder++;
      highest = Math.max(highest, x);
    }
    for (let i = 1; i <= n; i++) if (!seen.has(i)) missing++;
    await end(s);
    await end(p);
    return { sent: n, missing, outOfOrder, duplicates: all.length - seen.size };
  },

  // A Will carries its properties; with a session that ends at the
  // disconnect (expiry 0), a Will Delay does not hold it back.
  async will() {
    const base = `will/${uniq}`;
    const w = await conn({ clientId: `will-watch-${uniq}` });
    await subscribe(w, `${base}/#`, { qos: 1 });
    const willProps = { contentType: 'text/x', responseTopic: 'reply/here', correlationData: Buffer.from('cd'),
      payloadFormatIndicator: true, messageExpiryInterval: 50, userProperties: { u: 'v' } };
    const a = await conn({ clientId: `will-a-${uniq}`, will: { topic: `${base}/props`, payload: Buffer.from('bye'), qos: 1, properties: willProps } });
    a.stream.destroy();
    const b = await conn({ clientId: `will-b-${uniq}`, will: { topic: `${base}/delay-no-session`, payload: Buffer.from('bye'), qos: 1, properties: { willDelayInterval: 30 } } });
    b.stream.destroy();
    await until(() => w.got.length >= 2, 3000);
    const got = {};
    for (const m of w.got) {
      const p = Object.assign({}, m.props);
      if (p.correlationData) p.correlationData = p.correlationData.toString();
      got[m.topic.slice(base.length + 1)] = p;
    }
    await end(w);
    return { got };
  },

  // Message expiry: a message without one is delivered without one; one
  // with an expiry has it counted down.
  async expiry() {
    const topic = `exp/${uniq}`;
    let s = await conn({ clientId: `exp-${uniq}`, properties: { sessionExpiryInterval: 60 } });
    await subscribe(s, topic, { qos: 1 });
    await end(s);
    const p = await conn({ clientId: `exp-pub-${uniq}` });
    await publish(p, topic, 'short', { qos: 1, properties: { messageExpiryInterval: 1 } });
    await publish(p, topic, 'long', { qos: 1, properties: { messageExpiryInterval: 100 } });
    await publish(p, topic, 'none', { qos: 1 });
    await sleep(2500);
    s = await conn({ clientId: `exp-${uniq}`, clean: false, properties: { sessionExpiryInterval: 60 } });
    await until(() => s.got.length >= 2, 3000);
    await sleep(200);
    const r = { got: s.got.map((m) => [m.payload, m.props.messageExpiryInterval === undefined ? null : m.props.messageExpiryInterval]) };
    await end(s);
    await end(p);
    return r;
  },

  // A QoS 1 publish to $SYS is answered, not left without an ack.
  async sysPublish() {
    const v5 = await conn({ clientId: `sys5-${uniq}` });
    const r5 = await withTimeout(publish(v5, `$SYS/x/${uniq}`, 'x', { qos: 1 }), 3000, 'no PUBACK');
    const v3 = await conn({ clientId: `sys3-${uniq}`, protocolVersion: 4 });
    const r3 = await withTimeout(publish(v3, `$SYS/x/${uniq}`, 'x', { qos: 1 }), 3000, 'no PUBACK');
    await sleep(200);
    return { v5: r5, v5Connected: v5.connected, v3: r3, v3Connected: v3.connected };
  },

  // Retained messages and wildcards: r/# has r itself; + and # never
  // match a topic that starts with $.
  async retainedWildcards() {
    const r = `rw${uniq}`;
    const p = await conn({ clientId: `rw-pub-${uniq}` });
    const topics = [r, `${r}/a`, `${r}/a/b`, `$x${r}`];
    for (const t of topics) await publish(p, t, t, { qos: 1, retain: true });
    const out = {};
    for (const f of [`${r}/#`, `${r}/a/#`, '+', '#']) {
      const s = await conn({ clientId: `rw-sub-${uniq}` });
      await subscribe(s, f, { qos: 0 });
      await sleep(300);
      out[f.replace(r, 'R')] = s.got.map((m) => m.topic.replace(r, 'R')).filter((t) => t.includes('R')).sort();
      await end(s);
    }
    for (const t of topics) await publish(p, t, '', { qos: 1, retain: true });
    await end(p);
    return out;
  },

  // The Subscription Identifier comes with every message the subscription
  // brings, retained ones sent at the SUBSCRIBE included [MQTT-3.3.4-3].
  async subscriptionIdentifier() {
    const topic = `sid/${uniq}`;
    const p = await conn({ clientId: `sid-pub-${uniq}` });
    await publish(p, topic, 'retained', { qos: 1, retain: true });
    const s = await conn({ clientId: `sid-${uniq}` });
    await subscribe(s, topic, { qos: 1, properties: { subscriptionIdentifier: 7 } });
    await publish(p, topic, 'live', { qos: 1 });
    await until(() => s.got.length >= 2, 3000);
    const r = { got: s.got.map((m) => [m.payload, m.props.subscriptionIdentifier === undefined ? null : m.props.subscriptionIdentifier]) };
    await publish(p, topic, '', { qos: 1, retain: true });
    await end(s);
    await end(p);
    return r;
  },

  // No Local on a shared subscription is a protocol error [MQTT-3.8.3-4]:
  // DISCONNECT 0x82, not a SUBACK with a reason code SUBACK cannot carry.
  async sharedNoLocal() {
    const c = await conn({ clientId: `snl-${uniq}` });
    let suback = null;
    c.subscribe(`$share/g/snl/${uniq}`, { qos: 1, nl: true }, (e, g) => { suback = e ? 'error: ' + e.message : g; });
    await until(() => c.disc || suback, 3000);
    await sleep(100);
    return { disconnect: c.disc || null, suback, connected: c.connected };
  },
};

scenarios[scenario]().then(
  (r) => { console.log('RESULT ' + JSON.stringify(r)); process.exit(0); },
  (e) => { console.log('RESULT ' + JSON.stringify({ fail: e.message })); process.exit(1); },
);
