"""Conditioning-view geometry: which rotation each view applies to the mesh, and the one camera.

Convention (docs/method.md §2). A view is a rotation R that takes the normalized mesh into the *view frame*.
In the view frame a single fixed pinhole camera sits on the +z axis at distance ``CAMERA_DISTANCE``,
looking down -z with +y up (OpenGL). So ``camera_to_world`` is a pure translation, the same for all
views, and ``R @ p`` are the training targets for that view: generation is view-aligned.

Views are ``n_azimuth`` base azimuths (8 by default, paper) x mesh rotations: rotation 0 is the
identity (the upright orbit); the others are uniformly random rotations of the mesh, drawn per mesh.
View j uses azimuth ``j % n_azimuth`` and rotation ``j // n_azimuth``.
"""
from __future__ import annotations

import numpy as np

from mar3d.data.normalize import TARGET_RADIUS

FOV_DEG = 30.0  # vertical and horizontal (square images)
# Far enough that the sphere of radius 0.95 holding every normalized mesh fits the view cone.
CAMERA_DISTANCE = 1.01 * TARGET_RADIUS / np.sin(np.deg2rad(FOV_DEG / 2))
ELEVATION_DEG = 20.0
BASE_AZIMUTHS = 8
# Rotation that brings the file's "up" axis to +y before the orbit (glTF files are y-up; scans often z-up).
UP_AXIS_ROTATIONS = {
    "y": np.eye(3),
    "z": np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]]),
}


def orbit_rotation(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """(3, 3) world-to-camera rotation of a camera orbiting the origin around +y.

    Azimuth 0 at elevation 0 is the identity (camera on +z looking at the origin).
    """
    a, e = np.deg2rad(azimuth_deg), np.deg2rad(elevation_deg)
    back = np.array([np.sin(a) * np.cos(e), np.sin(e), np.cos(a) * np.cos(e)])  # camera +z axis
    right = np.cross([0.0, 1.0, 0.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    return np.stack([right, up, back])


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """(3, 3) rotation drawn uniformly from SO(3) (QR of a Gaussian matrix, sign-corrected)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def intrinsics(resolution: int, fov_deg: float = FOV_DEG) -> np.ndarray:
    """(3, 3) pixel intrinsics K in OpenCV convention (x right, y down, z forward; pixel centres at +0.5)."""
    f = resolution / 2 / np.tan(np.deg2rad(fov_deg) / 2)
    return np.array([[f, 0, resolution / 2], [0, f, resolution / 2], [0, 0, 1.0]])


def camera_to_world(distance: float = CAMERA_DISTANCE) -> np.ndarray:
    """(4, 4) OpenGL camera-to-view-frame transform: the camera on +z, looking down -z."""
    m = np.eye(4)
    m[2, 3] = distance
    return m


def view_rotations(count: int, rng: np.random.Generator, up_axis: str = "y") -> list[dict]:
    """Per view: its rotation R (3, 3) and how it was made (azimuth, elevation, mesh-rotation index)."""
    if count == 0:
        return []
    n_az = min(BASE_AZIMUTHS, count)
    n_rot = -(-count // n_az)
    mesh_rotations = [np.eye(3)] + [random_rotation(rng) for _ in range(n_rot - 1)]
    up = UP_AXIS_ROTATIONS[up_axis]
    views = []
    for j in range(count):
        azimuth = 360.0 * (j % n_az) / n_az
        rotation = orbit_rotation(azimuth, ELEVATION_DEG) @ up @ mesh_rotations[j // n_az]
        views.append({"rotation": rotation, "azimuth_deg": azimuth, "elevation_deg": ELEVATION_DEG,
                      "mesh_rotation": j // n_az})
    return views


def project_with_depth(points_view, K: np.ndarray, cam_to_world: np.ndarray):
    """Pixel coordinates (..., 2) (x right, y down) of view-frame points (..., 3) seen by the camera, and their
    depths (...,) along its viewing direction (larger is farther); a numpy array or a torch tensor (computed in
    its dtype, on its device)."""
    world_to_cam = np.linalg.inv(cam_to_world)
    flip = np.diag([1.0, -1.0, -1.0])  # OpenGL camera -> OpenCV camera
    rotation, translation = K @ flip @ world_to_cam[:3, :3], K @ flip @ world_to_cam[:3, 3]
    if not isinstance(points_view, np.ndarray):  # a torch tensor
        rotation, translation = (points_view.new_tensor(m) for m in (rotation, translation))
    uvw = points_view @ rotation.T + translation  # K's last row is (0, 0, 1): w is the depth
    return uvw[..., :2] / uvw[..., 2:3], uvw[..., 2]


def project(points_view, K: np.ndarray, cam_to_world: np.ndarray):
    """Pixel coordinates (..., 2) (x right, y down) of view-frame points (..., 3) seen by the camera; a numpy
    array or a torch tensor (computed in its dtype, on its device)."""
    return project_with_depth(points_view, K, cam_to_world)[0]
