"""The GPU frame path: one upload, crop, generator, mask and paste-back on the device, one
download, with upload and compute on separate CUDA streams (:mod:`livswap.cuda.frame_path`);
device and driver facts for ``livswap doctor`` (:mod:`livswap.cuda.device`).

The warp and paste code is plain PyTorch and runs on the CPU too, which is how it is tested
against OpenCV's CPU paste-back on machines without a GPU.
"""

from livswap.cuda.device import GpuInfo, describe_gpus
from livswap.cuda.frame_path import DeviceCompositor, DeviceFramePath, FaceJob, PendingFrame
from livswap.cuda.warp import crop_face, paste_face

__all__ = [
    "DeviceCompositor",
    "DeviceFramePath",
    "FaceJob",
    "GpuInfo",
    "PendingFrame",
    "crop_face",
    "describe_gpus",
    "paste_face",
]
