// A small chat on one room, using the roomcast SDK.
import { Client } from 'roomcast';

const params = new URLSearchParams(location.search);
const urls = (params.get('urls') || 'ws://127.0.0.1:8080/ws').split(',');
const room = params.get('room') || 'lobby';
const name = params.get('name') || `guest-${Math.floor(Math.random() * 1000)}`;
const saved = JSON.parse(sessionStorage.getItem(`roomcast:${room}`) || 'null');

const $ = (id) => document.getElementById(id);
const status = (text, cls = '') => {
  $('status').textContent = text;
  $('status').className = cls;
};
const line = (html, cls = '') => {
  const li = document.createElement('li');
  li.className = cls;
  li.innerHTML = html;
  $('log').append(li);
  li.scrollIntoView({ block: 'end' });
};
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);

$('where').textContent = `room ${room} as ${name}`;
const client = new Client({ urls });
client.on('connected', (w) => status(`connected to ${w.server}`, 'ok'));
client.on('disconnected', ({ code }) => status(`disconnected (${code})`, 'down'));
client.on('reconnecting', ({ attempt, delayMs, url }) => status(`reconnecting #${attempt} in ${delayMs} ms → ${url}`, 'down'));
client.on('closed', ({ reason }) => status(`stopped: ${reason}`, 'down'));

const sub = client.subscribe(room, {
  since: saved || undefined,
  onMessage: (m) => {
    sessionStorage.setItem(`roomcast:${room}`, JSON.stringify({ epoch: m.epoch, seq: m.seq }));
    line(`<span class="seq">#${m.seq}</span><b>${esc(m.data.from)}</b>: ${esc(m.data.text)}`);
  },
  onSubscribed: (s) => {
    if (!s.resumed) line(`joined ${esc(room)} at #${s.seq}`, 'note');
    else if (s.recovered) line(`resumed: ${s.replayed} missed message(s) replayed`, 'note');
  },
  onReset: (r) => line(`history lost (${r.reason}): some messages cannot be shown; continuing from #${r.seq}`, 'loss'),
  onError: (e) => line(`error: ${esc(e.message)}`, 'loss'),
});

$('send').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const text = $('text').value.trim();
  if (!text) return;
  $('text').value = '';
  try {
    // Acknowledged exactly once, even if the connection dies before the ack arrives.
    await sub.publish({ from: name, text });
  } catch (err) {
    line(`not sent: ${esc(err.message)}`, 'loss');
  }
});
