"""mar3d: single image -> high-resolution 3D mesh (MAR-3D, CVPR 2025), complete and runnable."""

__version__ = "0.1.0"
