#!/usr/bin/env bash
# The GPU checks of one session, as one prepared run on a lent GPU machine (the device tool):
# the CUDA tests, the engine benchmark and the streams benchmark with simswap-224 in fp16.
#
# The machine has Python 3.12 with CUDA torch, onnxruntime, opencv-python-headless and uvloop,
# but not livswap's camera, codec and WebRTC packages. Fetch those once, here, as wheels
# (`echo /.whl/ >> .git/info/exclude` first), for Python 3.12 on manylinux x86_64:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl mediapipe==0.10.21 av==18.1.0 aiortc==1.16.0 \
#     aioice pyee pylibsrtp google-crc32c dnspython ifaddr pyvirtualcam==0.15.0 \
#     opencv-contrib-python==4.11.0.86 numpy==1.26.4 sounddevice absl-py attrs flatbuffers \
#     jax jaxlib protobuf==4.25.8 sentencepiece cuda-python==13.4.4
# then call the device tool with carry [".whl"] and this command:
#   bash benchmarks/gpu_check.sh
# Everything it measures lands in $OUT (JSON, charts, the log).
set -uo pipefail
OUT=${OUT:-/tmp/livswap-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit 1
else
  export PYTHONPATH=$PWD
fi
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

# A short clip made here, from a public-domain photo, stands in for a camera.
python3 - <<'EOF'
from pathlib import Path
import cv2
from tests.media import grace_hopper, moving_frames, write_video
frames = moving_frames(grace_hopper(), 150, (640, 480))
write_video(Path("/tmp/clip.mp4"), frames, audio=None)
cv2.imwrite("/tmp/source.jpg", cv2.cvtColor(grace_hopper(), cv2.COLOR_RGB2BGR))
EOF

python3 -m pytest -q -m gpu tests/ 2>&1 | tee "$OUT/pytest-gpu.log" | tail -5

backends=eager,compile
python3 -c "import torch_tensorrt" 2>/dev/null && backends=$backends,tensorrt
timeout 240 python3 -m benchmarks.engine --engines simswap-224 --backends "$backends" \
  --precisions fp16 --sizes 720p,1080p --json "$OUT/engine.json" --plot "$OUT/engine.png" \
  2>&1 | tee "$OUT/engine.log" | grep -v Warning

mkdir -p /tmp/streams  # one summary comes back: the device returns at most 8 files
for backend in eager compile; do
  for n in 1 2 4 8 16 32; do
    extra="--no-independent"
    [ "$n" -le 4 ] && extra=""
    timeout 120 python3 -m benchmarks.streams --engine simswap-224 --random-weights \
      --backend "$backend" --precision fp16 --streams "$n" --seconds 8 --warmup 4 \
      --input /tmp/clip.mp4 --source /tmp/source.jpg $extra \
      --json "/tmp/streams/$backend-$n.json" 2>&1 | tail -4
  done
done | tee "$OUT/streams.log"
python3 - <<EOF
import json, pathlib
rows = []
for path in sorted(pathlib.Path("/tmp/streams").glob("*.json")):
    r = json.loads(path.read_text())
    rows.append({k: r.get(k) for k in ("backend", "streams", "aggregate_fps",
                 "unbatched_aggregate_fps", "independent_aggregate_fps", "batch_sizes")})
pathlib.Path("$OUT/streams-summary.json").write_text(json.dumps(rows, indent=1))
print(json.dumps(rows, indent=1))
EOF
