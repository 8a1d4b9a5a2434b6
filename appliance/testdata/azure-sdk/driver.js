// A stock Azure IoT SDK client (azure-iot-device + azure-iot-device-mqtt
// from npm) that a Go test drives line by line, to probe the hub as a
// device or module written with the SDK sees it.
//
// Start:  node driver.js   with the environment:
//   SDK_KIND=device|module       DeviceClient or ModuleClient
//   SDK_TRANSPORT=mqtt|mqttws    Mqtt or MqttWs
//   SDK_CS=<connection string>   as `ledge identity add` prints it; without
//                                it a module uses fromEnvironment (IOTEDGE_*)
//   SDK_CA=<path>                the hub's CA (setOptions {ca})
//   SDK_TOKEN_TTL=<s>            token lifetime (setOptions tokenRenewal)
//   SDK_METHODS=<name:status:delay,...>  direct methods to answer: status
//                                and the request payload echoed back after
//                                delay ms; status 0 never answers
//   SDK_NO_ACK=<input,...>       inputs whose messages are not completed
// stdin: one JSON command a line, {"id": n, "op": ..., ...}:
//   open, close, send {body, props, messageId, correlationId, contentType,
//   contentEncoding, output}, getTwin, report {patch}, invoke {device,
//   module, method, payload, timeout} (ModuleClient.invokeMethod)
// stdout: one JSON line per answer {"id": n, "ok": bool, "error", "result"}
// and per event {"event": "c2d"|"input"|"desired"|"method"|"connect"|
// "disconnect"|"error"|"ready", ...}.
'use strict';
const readline = require('readline');
const { Client, ModuleClient, Message } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');

const env = process.env;
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const errText = (e) => (e ? String(e.message || e) + (e.name ? ' [' + e.name + ']' : '') : undefined);
const transport = env.SDK_TRANSPORT === 'mqttws' ? MqttWs : Mqtt;
const isModule = env.SDK_KIND === 'module';

function messageProps(msg) {
  const props = {};
  for (let i = 0; i < msg.properties.count(); i++) {
    const p = msg.properties.getItem(i);
    props[p.key] = p.value;
  }
  return {
    body: msg.getBytes().toString(), props, messageId: msg.messageId, correlationId: msg.correlationId,
    contentType: msg.contentType, contentEncoding: msg.contentEncoding, to: msg.to, userId: msg.userId,
    expiryTimeUtc: msg.expiryTimeUtc,
  };
}

function setup(client) {
  let twin = null;
  const noAck = new Set((env.SDK_NO_ACK || '').split(',').filter(Boolean));
  client.on('error', (e) => say({ event: 'error', message: errText(e) }));
  client.on('disconnect', (e) => say({ event: 'disconnect', message: errText(e && (e.reason || e)) }));
  client.on('connect', () => say({ event: 'connect' }));
  if (isModule) {
    client.on('inputMessage', (input, msg) => {
      say(Object.assign({ event: 'input', input }, messageProps(msg)));
      if (!noAck.has(input)) client.complete(msg, (e) => e && say({ event: 'error', where: 'complete', message: errText(e) }));
    });
  } else {
    client.on('message', (msg) => {
      say(Object.assign({ event: 'c2d' }, messageProps(msg)));
      client.complete(msg, (e) => e && say({ event: 'error', where: 'complete', message: errText(e) }));
    });
  }
  const methods = (env.SDK_METHODS || '').split(',').filter(Boolean);
  const onMethod = (isModule ? client.onMethod : client.onDeviceMethod).bind(client);
  for (const m of methods) {
    const [name, status, delay] = m.split(':');
    onMethod(name, (req, res) => {
      say({ event: 'method', name: req.methodName, payload: req.payload, requestId: req.requestId });
      if (Number(status) === 0) return;
      setTimeout(() => res.send(Number(status), { echoed: req.payload, method: req.methodName }, (e) => {
        say({ event: 'method answered', name: req.methodName, error: errText(e) });
      }), Number(delay || 0));
    });
  }
  const ops = {
    open: (c, done) => client.open((e) => done(e)),
    close: (c, done) => client.close((e) => done(e)),
    send: (c, done) => {
      const m = new Message(c.body === undefined ? '' : c.body);
      for (const k of ['messageId', 'correlationId', 'contentType', 'contentEncoding', 'userId']) if (c[k] !== undefined) m[k] = c[k];
      for (const [k, v] of Object.entries(c.props || {})) m.properties.add(k, v);
      if (c.output) client.sendOutputEvent(c.output, m, (e) => done(e));
      else client.sendEvent(m, (e) => done(e));
    },
    getTwin: (c, done) => client.getTwin((e, t) => {
      if (e) return done(e);
      if (!twin) {
        twin = t;
        t.on('properties.desired', (patch) => say({ event: 'desired', patch }));
      }
      done(null, { desired: t.properties.desired, reported: t.properties.reported });
    }),
    invoke: (c, done) => {
      if (!isModule) return done(new Error('invoke: a module op'));
      const params = { methodName: c.method, payload: c.payload, responseTimeoutInSeconds: c.timeout || 10, connectTimeoutInSeconds: 5 };
      client.invokeMethod(c.device, c.module, params, (e, r) => done(e, r));
    },
    report: (c, done) => {
      if (!twin) return done(new Error('getTwin first'));
      twin.properties.reported.update(c.patch, (e) => done(e, { reported: twin.properties.reported }));
    },
  };
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    let c;
    try { c = JSON.parse(line); } catch (e) { return say({ event: 'error', where: 'command', message: errText(e) }); }
    const op = ops[c.op];
    if (!op) return say({ id: c.id, ok: false, error: 'unknown op ' + c.op });
    try {
      op(c, (e, result) => say({ id: c.id, ok: !e, error: errText(e), result }));
    } catch (e) {
      say({ id: c.id, ok: false, error: errText(e) });
    }
  });
  rl.on('close', () => client.close(() => process.exit(0)));
  say({ event: 'ready' });
}

function configure(client, done) {
  const opts = {};
  if (env.SDK_CA) opts.ca = require('fs').readFileSync(env.SDK_CA, 'utf8');
  if (env.SDK_TOKEN_TTL) opts.tokenRenewal = { tokenValidTimeInSeconds: Number(env.SDK_TOKEN_TTL), tokenRenewalMarginInSeconds: Math.max(1, Math.floor(Number(env.SDK_TOKEN_TTL) / 3)) };
  if (Object.keys(opts).length === 0) return done();
  client.setOptions(opts, (e) => done(e));
}

function start() {
  if (isModule && !env.SDK_CS) {
    return ModuleClient.fromEnvironment(transport, (e, client) => {
      if (e) return say({ event: 'fatal', message: errText(e) });
      configure(client, (e) => (e ? say({ event: 'fatal', message: errText(e) }) : setup(client)));
    });
  }
  let client;
  try {
    client = (isModule ? ModuleClient : Client).fromConnectionString(env.SDK_CS, transport);
  } catch (e) {
    return say({ event: 'fatal', message: errText(e) });
  }
  configure(client, (e) => (e ? say({ event: 'fatal', message: errText(e) }) : setup(client)));
}
start();
