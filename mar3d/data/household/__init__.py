"""Procedural household objects (boxes, cans, bottles, cups, mugs, fruit, tools, toys) as training data.

``make_object(family, seed, lying)`` returns a watertight trimesh with per-vertex colours, a function of its
arguments only; ``to_glb`` writes it with its colours. ``mar3d household`` writes many (docs/household.md).
"""
from mar3d.data.household.families import CAN_LIE, FAMILIES, make_object, to_glb

__all__ = ["CAN_LIE", "FAMILIES", "make_object", "to_glb"]
