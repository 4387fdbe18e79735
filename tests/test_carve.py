"""Carving by the input's outline (mar3d.pipeline.carve) and laying an outline over a silhouette
(silhouette.fit_outline): on real renders of `mar3d prepare`, a field carved by an object's outline has that
outline, and the pipeline's meshes stay inside it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from conftest import view_image
from mar3d.data import layout
from mar3d.mesh.extract import extract_meshes
from mar3d.pipeline.carve import outline_carver, outline_distance
from mar3d.pipeline.pipeline import MAR3DPipeline
from mar3d.pipeline.silhouette import fit_outline, foreground_mask, mask_iou, place_outline, silhouette

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def ball(radius: float = 1.0, slope: float = 20.0):
    """Logits of a ball that fills the camera's whole view cone: (B, Q, 3) -> (B, Q)."""
    return lambda points: slope * (radius - points.norm(dim=-1))


@pytest.mark.parametrize("item_id", ["011_banana", "003_cracker_box"])
def test_a_ball_carved_by_a_real_outline_has_that_outline(prepared, item_id):
    image = view_image(prepared, item_id)
    carve = outline_carver(image)
    [plain] = extract_meshes(ball(), 1, resolution=128)
    [carved] = extract_meshes(lambda p: carve(p, ball()(p)), 1, resolution=128)
    target = foreground_mask(image)
    # The splat of the cut's walls, which lie along the outline, spills into the next pixels.
    near = ndimage.binary_dilation(target, np.ones((3, 3), bool))
    beyond = lambda mesh: np.count_nonzero(silhouette(mesh) & ~near) / np.count_nonzero(target)
    assert beyond(plain.mesh) > 0.5  # the ball covers much more than the object
    assert beyond(carved.mesh) < 0.01
    assert np.count_nonzero(target & ~silhouette(carved.mesh)) < 0.01 * np.count_nonzero(target)
    assert carved.watertight  # the cut is closed: the field is clipped, not the mesh


def test_carving_leaves_the_field_inside_the_outline_alone(prepared):
    image = view_image(prepared, "011_banana")
    carve = outline_carver(image)
    points = torch.rand(1, 20_000, 3) * 2 - 1
    logits = ball(slope=2.0)(points)  # at most 2: below the clip (2 per pixel) 4 pixels inside the outline
    carved = carve(points, logits)
    assert torch.all(carved <= logits)
    # Points whose projection lies 4+ pixels inside the outline keep their value; those outside are negative.
    outline = torch.from_numpy(outline_distance(foreground_mask(image, 256)))
    from mar3d.data.cameras import camera_to_world, intrinsics, project

    pixels = project(points[0], intrinsics(256), camera_to_world()).floor().long().clamp(0, 255)
    depth = outline[pixels[:, 1], pixels[:, 0]]
    assert (depth >= 4).sum() > 1000 and (depth < -2).sum() > 1000
    torch.testing.assert_close(carved[0, depth >= 4], logits[0, depth >= 4])
    assert torch.all(carved[0, depth < -2] < 0)


def test_an_image_with_no_object_carves_nothing():
    assert outline_carver(Image.new("RGBA", (512, 512), (255, 255, 255, 0))) is None


def test_the_fit_lays_an_outline_over_a_larger_shifted_copy_of_itself(prepared):
    target = foreground_mask(view_image(prepared, "011_banana"))
    fit = fit_outline(target, target)
    assert fit.iou == 1.0 and fit.scale == 1.0
    # The same outline 1.2x larger and moved: found again, at any mask size.
    moved = place_outline(target, fit.__class__(1.0, 1.2, fit.target_centre, fit.target_centre + [0.05, -0.03]))
    found = fit_outline(moved, target)
    assert found.iou > 0.95 and found.scale == pytest.approx(1.2, rel=0.03)
    large = foreground_mask(view_image(prepared, "011_banana"), 256)
    assert mask_iou(place_outline(large, found), np.kron(moved, np.ones((2, 2), bool))) > 0.9
    empty = np.zeros_like(target)
    assert fit_outline(empty, target).iou == 0.0 and fit_outline(target, empty).iou == 0.0


@pytest.fixture(scope="module")
def pipeline(tiny_pipeline) -> MAR3DPipeline:
    return MAR3DPipeline.from_pretrained(tiny_pipeline)


def test_the_pipelines_carved_mesh_stays_inside_the_placed_outline(pipeline, prepared):
    image = layout.item_dir(prepared, "003_cracker_box") / "views" / "000.png"
    [plain] = pipeline(image, seed=1, carve=False)
    [carved] = pipeline(image, seed=1, carve=True)
    assert plain.outline is None and "carve" not in plain.timings
    assert carved.ok, carved.problem
    assert carved.timings["carve"] > 0 and 0 < carved.outline.iou <= 1
    # The placed outline, and the pixels that a 32^3 grid's cells (4 pixels across) can spill into.
    allowed = ndimage.binary_dilation(place_outline(foreground_mask(pipeline.preprocess(image).preview),
                                                    carved.outline), np.ones((3, 3), bool), iterations=4)
    outside = lambda mesh: np.count_nonzero(silhouette(mesh) & ~allowed) / np.count_nonzero(silhouette(mesh))
    assert outside(carved.mesh) < 0.01
    assert outside(carved.mesh) <= outside(plain.mesh)
    again = pipeline(image, seed=1, carve=True)[0]
    assert again.mesh.export(file_type="glb") == carved.mesh.export(file_type="glb")
