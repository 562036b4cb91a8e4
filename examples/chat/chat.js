// The chat example: rooms are topics chat.room.<room> of the gateway that serves this page.
// Listening: the browser's own EventSource on /v1/topics/<topic>/events, first with
// ?after=0 (the room's retained history, then live); when the connection drops,
// EventSource comes back by itself with Last-Event-ID (which the gateway prefers to
// ?after=), so nothing is missed and nothing is shown twice. Saying: fetch POST of
// {"from", "text"} to /v1/topics/<topic>; a 422 (against schemas/topics/chat.room.json)
// shows its details under the message box. Message text only ever goes in as textContent.
'use strict';

(() => {
  const API = '/v1/topics/';
  const ROOM = /^[A-Za-z0-9_-]+$/;
  const KEPT_MESSAGES = 500; // older ones leave the page (not the room)
  const REOPEN_SECONDS = 3; // after the gateway refused the stream (e.g. an expired token)

  const $ = (id) => document.getElementById(id);
  const join = $('join');
  const roomInput = $('room');
  const nameInput = $('name');
  const tokenInput = $('token');
  const say = $('say');
  const textInput = $('text');
  const sendButton = $('send');
  const list = $('messages');
  const status = $('status');
  const errorBox = $('error');

  /** The room we are in: its topic, its EventSource, the last seq shown. */
  let current = null;

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  function showError(summary, details = []) {
    errorBox.replaceChildren();
    const line = document.createElement('p');
    line.textContent = summary;
    errorBox.append(line);
    if (details.length) {
      const items = document.createElement('ul');
      for (const { path, message } of details) {
        const item = document.createElement('li');
        item.textContent = `${path || '(message)'}: ${message}`;
        items.append(item);
      }
      errorBox.append(items);
    }
    errorBox.hidden = false;
    textInput.setAttribute('aria-invalid', 'true');
  }

  function clearError() {
    errorBox.hidden = true;
    errorBox.replaceChildren();
    textInput.removeAttribute('aria-invalid');
  }

  function authHeaders() {
    const key = tokenInput.value.trim();
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  /** The error body's summary line and details, whatever the answer was. */
  async function describeFailure(response) {
    let error = {};
    try {
      error = (await response.json()).error ?? {};
    } catch {
      // not JSON (a proxy's page): the status says enough
    }
    const summary = `${response.status} ${error.code ?? response.statusText}: ${error.message ?? 'refused'}`;
    return { summary, details: Array.isArray(error.details) ? error.details : [] };
  }

  // --- listening ---------------------------------------------------------------------

  function enterRoom(room) {
    if (!ROOM.test(room)) {
      setStatus('error', `"${room}" is not a room name: letters, digits, _ and - only.`);
      return;
    }
    leaveRoom();
    roomInput.value = room;
    $('room-title').textContent = `Room ${room}`;
    document.title = `${room} · chat`;
    list.replaceChildren();
    clearError();
    current = { room, topic: `chat.room.${room}`, source: null, lastSeq: null, timer: null };
    listen(current);
  }

  function leaveRoom() {
    if (!current) return;
    current.source?.close();
    clearTimeout(current.timer);
    current = null;
  }

  /** The events URL: after the last message shown (or from the start of the history),
   * with a subscribe token when the user gave an API key. */
  async function eventsUrl(room) {
    let url = new URL(`${API}${room.topic}/events`, location.href);
    if (tokenInput.value.trim()) {
      const response = await fetch(`${API}${room.topic}/tokens`, {
        method: 'POST',
        headers: authHeaders(),
      });
      if (!response.ok) throw new Error((await describeFailure(response)).summary);
      url = new URL((await response.json()).events, location.href);
    }
    url.searchParams.set('after', String(room.lastSeq ?? 0));
    return url;
  }

  async function listen(room) {
    setStatus('connecting', `Connecting to ${room.topic}…`);
    let url;
    try {
      url = await eventsUrl(room);
    } catch (error) {
      if (room !== current) return;
      setStatus('error', `Cannot listen: ${error.message}. Trying again…`);
      room.timer = setTimeout(() => listen(room), REOPEN_SECONDS * 1000);
      return;
    }
    if (room !== current) return; // left while the token was minted
    const source = new EventSource(url);
    room.source = source;
    source.addEventListener('open', () => setStatus('live', `In ${room.topic}.`));
    source.addEventListener('message', (event) => {
      const seq = Number(event.lastEventId);
      if (room.lastSeq !== null && seq <= room.lastSeq) return; // never twice
      room.lastSeq = seq;
      try {
        show(JSON.parse(event.data), seq);
      } catch {
        // not JSON: the gateway never sends that, so nothing to show
      }
    });
    source.addEventListener('error', () => {
      if (source.readyState === EventSource.CONNECTING) {
        // EventSource retries by itself, sending Last-Event-ID.
        setStatus('reconnecting', 'Connection lost; reconnecting…');
        return;
      }
      // CLOSED: the gateway answered with an error (401 for an expired token, 404,
      // 503...), which EventSource does not retry. Open it again, after the last seq.
      source.close();
      if (room !== current) return;
      setStatus('error', 'The gateway refused the stream; trying again…');
      room.timer = setTimeout(() => listen(room), REOPEN_SECONDS * 1000);
    });
  }

  function show(message, seq) {
    if (!message || typeof message !== 'object') return;
    const from = String(message.from ?? '');
    const item = document.createElement('li');
    item.dataset.seq = String(seq);
    if (from === nameInput.value.trim()) item.classList.add('mine');
    if (from === 'upper-bot') item.classList.add('bot');
    const who = document.createElement('span');
    who.className = 'from';
    who.textContent = from;
    const text = document.createElement('span');
    text.className = 'text';
    text.textContent = String(message.text ?? '');
    item.append(who, text);
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.append(item);
    while (list.childElementCount > KEPT_MESSAGES) list.firstElementChild.remove();
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  // --- saying ------------------------------------------------------------------------

  async function send() {
    if (!current) return;
    const message = { from: nameInput.value.trim(), text: textInput.value };
    sendButton.disabled = true;
    try {
      const response = await fetch(`${API}${current.topic}`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', ...authHeaders() },
        body: JSON.stringify(message),
      });
      if (response.status === 202) {
        clearError();
        if (textInput.value === message.text) textInput.value = ''; // unless typing on
      } else {
        const { summary, details } = await describeFailure(response);
        showError(`Not sent: ${summary}`, details);
      }
    } catch (error) {
      showError(`Not sent: the gateway is unreachable (${error.message}).`);
    } finally {
      sendButton.disabled = false;
      textInput.focus();
    }
  }

  // --- wiring ------------------------------------------------------------------------

  function roomFromHash() {
    return decodeURIComponent(location.hash.slice(1)) || 'lobby';
  }

  nameInput.value = localStorage.getItem('chat-name') || `guest-${Math.floor(Math.random() * 9000 + 1000)}`;
  nameInput.addEventListener('change', () => localStorage.setItem('chat-name', nameInput.value.trim()));
  tokenInput.value = sessionStorage.getItem('chat-token') || '';
  if (tokenInput.value) $('auth').open = true;

  join.addEventListener('submit', (event) => {
    event.preventDefault();
    sessionStorage.setItem('chat-token', tokenInput.value.trim());
    localStorage.setItem('chat-name', nameInput.value.trim());
    const room = roomInput.value.trim();
    if (room === roomFromHash()) enterRoom(room); // again: e.g. with a new token
    else location.hash = encodeURIComponent(room); // hashchange enters it
  });
  say.addEventListener('submit', (event) => {
    event.preventDefault();
    send();
  });
  window.addEventListener('hashchange', () => enterRoom(roomFromHash()));
  enterRoom(roomFromHash());
})();
