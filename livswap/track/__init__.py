"""Face tracking with MediaPipe FaceMesh: landmarks, ids, smoothing, keypoints, head pose."""

from livswap.track.tracker import Face, FaceTracker, HeadPose, StillFaceDetector, detect_faces

__all__ = ["Face", "FaceTracker", "HeadPose", "StillFaceDetector", "detect_faces"]
