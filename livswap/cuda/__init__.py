"""The device frame path: per stream, one upload, crop and paste-back on the device and one
download, on a CUDA stream of its own (:mod:`livswap.cuda.frame_path`); device and driver facts
for ``livswap doctor`` (:mod:`livswap.cuda.device`).

The warp and paste code is plain PyTorch and runs on the CPU too, which is how the device path
(and its per-stream fading) is tested on machines without a GPU.
"""

from livswap.cuda.device import GpuInfo, describe_gpus
from livswap.cuda.frame_path import DeviceFramePath, DeviceImage
from livswap.cuda.warp import crop_face, paste_face

__all__ = [
    "DeviceFramePath",
    "DeviceImage",
    "GpuInfo",
    "crop_face",
    "describe_gpus",
    "paste_face",
]
