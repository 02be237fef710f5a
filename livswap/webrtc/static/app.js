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

// --- bench mode: stamp performance.now() into outgoing frames, read it back on return -------
const STAMP_BITS = 20, STAMP_BLOCK = 16;

function stampedStream(cameraStream) {
  const video = document.createElement("video");
  video.srcObject = cameraStream;
  video.muted = true;
  video.play();
  const canvas = document.createElement("canvas");
  canvas.width = 640; canvas.height = 480;
  const ctx = canvas.getContext("2d", { willReadFrequently: false });
  const draw = () => {
    ctx.drawImage(video, 0, 0, canvas.width, canvas.height);
    const t = Math.floor(performance.now()) % (1 << STAMP_BITS);
    for (let i = 0; i < STAMP_BITS; i++) {
      ctx.fillStyle = (t >> i) & 1 ? "#fff" : "#000";
      ctx.fillRect(i * STAMP_BLOCK, 0, STAMP_BLOCK, STAMP_BLOCK);
    }
    video.requestVideoFrameCallback(draw);
  };
  video.requestVideoFrameCallback(draw);
  return canvas.captureStream(30);
}

function watchStamps(remote) {
  const canvas = document.createElement("canvas");
  canvas.width = STAMP_BITS * STAMP_BLOCK; canvas.height = STAMP_BLOCK;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const read = () => {
    if (remote.videoWidth) {
      const sx = remote.videoWidth / 640;
      ctx.drawImage(remote, 0, 0, canvas.width * sx, canvas.height * sx, 0, 0, canvas.width, canvas.height);
      const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
      let t = 0;
      for (let i = 0; i < STAMP_BITS; i++) {
        const x = i * STAMP_BLOCK + STAMP_BLOCK / 2, y = STAMP_BLOCK / 2;
        if (pixels[(y * canvas.width + x) * 4] > 128) t |= 1 << i;
      }
      const now = Math.floor(performance.now()) % (1 << STAMP_BITS);
      const latency = (now - t + (1 << STAMP_BITS)) % (1 << STAMP_BITS);
      if (latency < 5000) window.livswap.measuredLatencyMs.push(latency);
    }
    remote.requestVideoFrameCallback(read);
  };
  remote.requestVideoFrameCallback(read);
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
  const videoTrack = benchMode ? stampedStream(localStream).getVideoTracks()[0] : localStream.getVideoTracks()[0];
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
      $("remote").srcObject = new MediaStream([event.track]);
      if (benchMode) watchStamps($("remote"));
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
  const shown = measured.length ? `${measured[measured.length >> 1]} ms measured`
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
