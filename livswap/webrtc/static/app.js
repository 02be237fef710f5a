// livswap browser demo: upload a source photo, send the camera, show the swapped video back.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token");
const benchMode = params.get("bench") === "1";
const authHeaders = token ? { Authorization: `Bearer ${token}` } : {};
const $ = (id) => document.getElementById(id);

// What tests and benchmarks read (counters only; no control surface).
window.livswap = { sourceId: null, state: "idle", fps: 0, latencyMs: null, measuredLatencyMs: [],
                   framesDecoded: 0, dropped: 0, serverLatencyMs: null, error: null };

function showError(message) {
  window.livswap.error = message || null;
  $("error").textContent = message || "";
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...authHeaders, ...(options.headers || {}) } });
  let body = {};
  try { body = await response.json(); } catch (e) { body = { error: response.statusText }; }
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

async function loadEngines() {
  const health = await api("/health");
  const select = $("engine");
  for (const name of health.engines) {
    const option = document.createElement("option");
    option.value = option.textContent = name;
    if (name === health.default_engine) option.selected = true;
    select.appendChild(option);
  }
  // Engines this server cannot run yet: listed, not selectable, with what they need.
  for (const [name, needs] of Object.entries(health.unavailable || {})) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = `${name} (not installed)`;
    option.title = `needs ${needs}`;
    option.disabled = true;
    select.appendChild(option);
  }
}

$("photo").addEventListener("change", async () => {
  const file = $("photo").files[0];
  if (!file) return;
  showError("");
  $("start").disabled = true;
  const form = new FormData();
  form.append("file", file);
  try {
    const { id } = await api("/sources", { method: "POST", body: form });
    window.livswap.sourceId = id;
    $("thumb").src = URL.createObjectURL(file);
    $("thumb").style.display = "block";
    $("start").disabled = false;
  } catch (e) {
    showError(`Source photo: ${e.message}`);
  }
});

let pc = null;
let localStream = null;
let statsTimer = null;

// --- bench mode: the camera clip carries its frame index as black/white blocks in the top-left
// corner (rendered into the clip by benchmarks/browser.py). The page notes when each index is
// shown in the local preview and when it comes back swapped: the difference is the latency from
// local display to returned display, with nothing added to the media path.
const STAMP_BITS = 10, STAMP_BLOCK = 16;

function readStamp(video, ctx) {
  const sx = video.videoWidth / 640;
  const w = STAMP_BITS * STAMP_BLOCK;
  ctx.drawImage(video, 0, 0, w * sx, STAMP_BLOCK * sx, 0, 0, w, STAMP_BLOCK);
  const pixels = ctx.getImageData(0, 0, w, STAMP_BLOCK).data;
  let index = 0;
  for (let i = 0; i < STAMP_BITS; i++) {
    const p = ((STAMP_BLOCK >> 1) * w + i * STAMP_BLOCK + (STAMP_BLOCK >> 1)) * 4;
    if (pixels[p] > 128) index |= 1 << i;
  }
  return index;
}

function watchStamps(local, remote) {
  const shownLocally = new Map();
  const make = () => {
    const c = document.createElement("canvas");
    c.width = STAMP_BITS * STAMP_BLOCK; c.height = STAMP_BLOCK;
    return c.getContext("2d", { willReadFrequently: true });
  };
  const localCtx = make(), remoteCtx = make();
  const onLocal = (now) => {
    if (local.videoWidth) shownLocally.set(readStamp(local, localCtx), now);
    local.requestVideoFrameCallback(onLocal);
  };
  const onRemote = (now) => {
    if (remote.videoWidth) {
      const t = shownLocally.get(readStamp(remote, remoteCtx));
      if (t !== undefined && now - t >= 0 && now - t < 3000) window.livswap.measuredLatencyMs.push(now - t);
    }
    remote.requestVideoFrameCallback(onRemote);
  };
  local.requestVideoFrameCallback(onLocal);
  remote.requestVideoFrameCallback(onRemote);
}

async function start() {
  showError("");
  $("start").disabled = true;
  try {
    localStream = await navigator.mediaDevices.getUserMedia({
      video: { width: 640, height: 480, frameRate: 30 }, audio: $("audio").checked });
  } catch (e) {
    showError(`Camera: ${e.name === "NotAllowedError" ? "access was denied; allow the camera and try again" : e.message}`);
    $("start").disabled = false;
    return;
  }
  $("local").srcObject = localStream;
  const videoTrack = localStream.getVideoTracks()[0];
  pc = new RTCPeerConnection({ iceServers: [] });
  pc.addTrack(videoTrack, localStream);
  for (const track of localStream.getAudioTracks()) pc.addTrack(track, localStream);
  const channel = pc.createDataChannel("stats");
  channel.onmessage = (event) => {
    const s = JSON.parse(event.data);
    window.livswap.serverLatencyMs = s.server_latency_ms;
    window.livswap.dropped = s.dropped;
  };
  pc.ontrack = (event) => {
    if (event.track.kind === "video") {
      // A live mirror: show each frame as soon as it is decoded rather than buffering for
      // smoothness (video only; audio keeps its jitter buffer).
      if ("jitterBufferTarget" in event.receiver) event.receiver.jitterBufferTarget = 0;
      if ("playoutDelayHint" in event.receiver) event.receiver.playoutDelayHint = 0;
      $("remote").srcObject = new MediaStream([event.track]);
      if (benchMode) watchStamps($("local"), $("remote"));
    }
  };
  pc.onconnectionstatechange = () => {
    window.livswap.state = pc.connectionState;
    if (pc.connectionState === "failed") showError("Connection failed: the server could not be reached over WebRTC");
  };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && resolve());
  });
  try {
    const answer = await api("/offer", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type,
                             source: window.livswap.sourceId, engine: $("engine").value }) });
    await pc.setRemoteDescription(answer);
  } catch (e) {
    showError(`Server: ${e.message}`);
    stop();
    return;
  }
  $("stop").disabled = false;
  statsTimer = setInterval(updateStats, 1000);
}

let lastDecoded = 0, lastTime = 0;
async function updateStats() {
  if (!pc) return;
  const report = await pc.getStats();
  let rtt = 0, jitterMs = 0, decoded = 0;
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") {
      decoded = s.framesDecoded || 0;
      if (s.jitterBufferEmittedCount) jitterMs = 1000 * s.jitterBufferDelay / s.jitterBufferEmittedCount;
    }
    if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined) rtt = 1000 * s.currentRoundTripTime;
  });
  const now = performance.now();
  if (lastTime) window.livswap.fps = (decoded - lastDecoded) / ((now - lastTime) / 1000);
  lastDecoded = decoded; lastTime = now;
  window.livswap.framesDecoded = decoded;
  const server = window.livswap.serverLatencyMs;
  // Estimate: processing + network both ways + the receiver's jitter buffer (+ ~1 frame capture).
  window.livswap.latencyMs = server === null ? null : server + rtt + jitterMs + 33;
  const measured = window.livswap.measuredLatencyMs.slice(-30).sort((a, b) => a - b);
  const shown = measured.length ? `${measured[measured.length >> 1].toFixed(0)} ms measured`
                                : (window.livswap.latencyMs === null ? "…" : `~${window.livswap.latencyMs.toFixed(0)} ms`);
  $("stats").textContent = `${window.livswap.fps.toFixed(1)} fps · latency ${shown} ` +
    `(server ${server === null ? "…" : server.toFixed(0)} ms, rtt ${rtt.toFixed(0)} ms, jitter buffer ${jitterMs.toFixed(0)} ms)` +
    ` · dropped ${window.livswap.dropped}`;
}

function stop() {
  clearInterval(statsTimer);
  if (pc) pc.close();
  pc = null;
  if (localStream) localStream.getTracks().forEach((t) => t.stop());
  localStream = null;
  window.livswap.state = "closed";
  $("start").disabled = !window.livswap.sourceId;
  $("stop").disabled = true;
  $("stats").textContent = "not connected";
}

$("start").addEventListener("click", start);
$("stop").addEventListener("click", stop);
loadEngines().catch((e) => showError(`Server: ${e.message}`));
