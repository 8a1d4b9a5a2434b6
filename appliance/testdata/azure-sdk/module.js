// A stock Azure IoT SDK module, as a user would write it: no connection
// string, ModuleClient.fromEnvironment in edge mode (IOTEDGE_* from the
// agent, tokens signed by the workload API). It prints one JSON line per
// event for appliance/azure_sdk_test.go:
//   {"event":"opened"}, {"event":"twin","desired":{...}},
//   {"event":"sent","n":N}, {"event":"input","input":"...","body":"..."},
//   {"event":"desired","patch":{...}}, {"event":"method","name":"...","payload":...},
//   {"event":"error","message":"..."}
'use strict';
const { ModuleClient, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const fail = (where, err) => { say({ event: 'error', where, message: String(err && (err.message || err)) }); process.exit(1); };

ModuleClient.fromEnvironment(Mqtt, (err, client) => {
  if (err) return fail('fromEnvironment', err);
  client.on('error', (e) => say({ event: 'error', where: 'client', message: String(e.message || e) }));
  client.open((err) => {
    if (err) return fail('open', err);
    say({ event: 'opened' });
    client.on('inputMessage', (input, msg) => {
      say({ event: 'input', input, body: msg.getBytes().toString() });
      client.complete(msg, () => {});
    });
    client.onMethod('echo', (req, res) => {
      say({ event: 'method', name: req.methodName, payload: req.payload });
      res.send(200, { echoed: req.payload }, () => {});
    });
    client.getTwin((err, twin) => {
      if (err) return fail('getTwin', err);
      say({ event: 'twin', desired: twin.properties.desired });
      twin.on('properties.desired', (patch) => say({ event: 'desired', patch }));
      twin.properties.reported.update({ sdk: 'azure-iot-device' }, (err) => {
        if (err) say({ event: 'error', where: 'reported', message: String(err.message || err) });
      });
      let n = 0;
      const send = () => {
        n++;
        const m = new Message(JSON.stringify({ n, label: 'person' }));
        m.contentType = 'application/json';
        m.contentEncoding = 'utf-8';
        client.sendOutputEvent('out', m, (err) => {
          if (err) say({ event: 'error', where: 'send', message: String(err.message || err) });
          else say({ event: 'sent', n });
        });
      };
      send();
      setInterval(send, 500);
    });
  });
});
