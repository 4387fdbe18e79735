"""Candidate selection by silhouette (mar3d.pipeline.silhouette): the projection agrees with the real renders
of `mar3d prepare`, and the pipeline keeps the MAR-LR candidate whose outline matches the input best."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import mesh_in_view_frame, view_image
from mar3d.config import ConfigError
from mar3d.data import layout
from mar3d.pipeline.pipeline import MAR3DPipeline
from mar3d.pipeline.silhouette import foreground_mask, mask_iou, silhouette

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# (object, view, another object): the apple looks the same from every side, so only the others also check that
# another view of the same object matches worse.
@pytest.mark.parametrize("item_id, view, other_id", [("011_banana", 0, "013_apple"), ("013_apple", 3, "003_cracker_box"),
                                                   ("003_cracker_box", 11, "011_banana")])
def test_a_mesh_seen_by_the_training_camera_covers_its_own_render(prepared, item_id, view, other_id):
    outline = silhouette(mesh_in_view_frame(prepared, item_id, view))
    own = foreground_mask(view_image(prepared, item_id, view))
    assert own.any()
    assert mask_iou(outline, own) > 0.9  # splat vs rendered alpha: only pixels along the outline differ
    assert mask_iou(outline, foreground_mask(view_image(prepared, other_id, view))) < 0.7
    if item_id != "013_apple":
        assert mask_iou(outline, foreground_mask(view_image(prepared, item_id, view ^ 2))) < 0.8


def test_silhouettes_are_deterministic_and_an_empty_mesh_has_none(prepared):
    mesh = mesh_in_view_frame(prepared, "011_banana", 0)
    empty = mesh.copy()
    empty.faces = np.zeros((0, 3), dtype=np.int64)
    target = foreground_mask(view_image(prepared, "011_banana", 0))
    assert np.array_equal(silhouette(mesh), silhouette(mesh))
    assert not silhouette(empty).any() and mask_iou(silhouette(empty), target) == 0.0


@pytest.fixture(scope="module")
def pipeline(tiny_pipeline) -> MAR3DPipeline:
    return MAR3DPipeline.from_pretrained(tiny_pipeline)


def test_the_pipeline_keeps_the_best_matching_lr_candidate(pipeline, prepared):
    image = layout.item_dir(prepared, "011_banana") / "views" / "000.png"
    [result] = pipeline(image, seed=4, candidates=3, return_latents=True)
    assert result.ok, result.problem
    assert len(result.candidate_scores) == 3 and all(0 <= s <= 1 for s in result.candidate_scores)
    assert result.candidate == int(np.argmax(result.candidate_scores))
    assert result.timings["select"] > 0
    # The kept LR tokens are that row of the batch MAR-LR sampled with the image's seed.
    condition = pipeline.preprocess(image)
    generator = torch.Generator().manual_seed(4)
    candidates = pipeline.sample_stage("lr", condition, generator, pipeline.settings(candidates=3), {}, copies=3)
    torch.testing.assert_close(result.lr_latents, candidates[result.candidate])
    # Deterministic, and one candidate is the plain sampling (no scores, no selection time).
    again = pipeline(image, seed=4, candidates=3)[0]
    assert again.mesh.export(file_type="glb") == result.mesh.export(file_type="glb")
    [plain] = pipeline(image, seed=4, candidates=1)
    assert plain.candidate_scores is None and "select" not in plain.timings


def test_carving_and_filling_reuse_the_kept_candidates_coarse_mesh(pipeline, prepared):
    # Selection decodes every candidate on the coarse grid; the kept one's mesh is the one carving places the outline
    # over and filling borrows depths from, so neither decodes again: the same carve as a fresh coarse decode gives.
    condition = pipeline.preprocess(layout.item_dir(prepared, "011_banana") / "views" / "000.png")
    generator = torch.Generator().manual_seed(4)
    candidates = pipeline.sample_stage("lr", condition, generator, pipeline.settings(candidates=3), {}, copies=3)
    timings = {}
    kept, scores, fit, mesh = pipeline.select_candidate(candidates, condition, timings)
    assert fit.iou == scores[kept] == max(scores) and len(mesh.faces) > 0
    latents = candidates[kept:kept + 1]
    [own] = pipeline.coarse_meshes(latents)
    np.testing.assert_allclose(mesh.vertices, own.vertices, atol=1e-5)  # the batch's decode is the kept one's own
    reused = pipeline.carver(latents, condition, timings, (fit, mesh), fill=True)
    fresh = pipeline.carver(latents, condition, {}, None, fill=True)
    assert reused[1] is fit and reused[2] == fresh[2] > 0 and fresh[1].iou == fit.iou
    points = torch.rand(1, 4096, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    logits = torch.zeros(1, 4096)
    torch.testing.assert_close(reused[0](points, logits), fresh[0](points, logits))


def test_candidates_are_checked(pipeline, prepared):
    image = layout.item_dir(prepared, "011_banana") / "views" / "000.png"
    with pytest.raises(ConfigError, match="candidates must be >= 1"):
        pipeline(image, candidates=0)
    with pytest.raises(ConfigError, match="candidates must be at most 32"):
        pipeline(image, candidates=33)
