"""Mesh extraction from an occupancy field: hierarchical grid decoding, marching cubes, post-processing."""
from mar3d.mesh.extract import ExtractionResult, extract_meshes
from mar3d.mesh.grid import DecodedGrids, decode_grid, grid_coordinates
from mar3d.mesh.marching import grid_status, grid_to_mesh
from mar3d.mesh.postprocess import PostprocessOptions, PostprocessReport, postprocess

__all__ = [
    "DecodedGrids", "ExtractionResult", "PostprocessOptions", "PostprocessReport", "decode_grid",
    "extract_meshes", "grid_coordinates", "grid_status", "grid_to_mesh", "postprocess",
]
