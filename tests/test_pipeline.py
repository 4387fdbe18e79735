"""MAR3DPipeline on the tiny trained models and real rendered views: a valid mesh per image, determinism
per seed (also inside a batch), the LR-only mode, decimation, and images whose occupancy has no surface.

The tiny models are barely trained: these tests check behaviour, not shape quality."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from mar3d.config import ConfigError
from mar3d.data.normalize import DECODE_BOX
from mar3d.utils import precision as precision_module
from mar3d.pipeline.pipeline import MAR3DPipeline, stage_dtypes, stage_names
from mar3d.pipeline.settings import SamplingDefaults

# carve: the default carves (and fills) by the outline (one candidate: its own coarse decode for the placement)
TIMINGS = {"preprocess", "encoder", "lr", "hr", "carve", "decode", "marching_cubes", "postprocess", "total"}
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipeline(tiny_pipeline) -> MAR3DPipeline:
    return MAR3DPipeline.from_pretrained(tiny_pipeline)


@pytest.fixture(scope="module")
def banana(prepared):
    return prepared / "011_banana" / "views" / "000.png"


@pytest.fixture(scope="module")
def apple(prepared):
    return prepared / "013_apple" / "views" / "003.png"


def mesh_bytes(mesh: trimesh.Trimesh) -> bytes:
    return mesh.export(file_type="glb")


def test_generates_a_valid_mesh_in_the_decoding_box(pipeline, banana):
    (result,) = pipeline(banana, seed=0, return_latents=True)
    assert result.ok, result.problem
    assert result.name == str(banana)
    assert len(result.mesh.faces) > 0 and result.queries > 0
    assert np.abs(result.mesh.vertices).max() <= DECODE_BOX + 1e-6
    assert set(result.timings) == TIMINGS and all(v >= 0 for v in result.timings.values())
    assert isinstance(result.preview, Image.Image) and result.preview.mode == "RGBA"
    c = pipeline.mar_hr.config
    assert result.latents.shape == (c.hr_tokens, c.token_channels)
    assert result.lr_latents.shape == (c.lr_tokens, c.token_channels)


def test_same_seed_same_mesh_other_seed_other_mesh(pipeline, banana):
    first, second = pipeline(banana, seed=7)[0], pipeline(banana, seed=7)[0]
    assert mesh_bytes(first.mesh) == mesh_bytes(second.mesh)
    other = pipeline(banana, seed=8)[0]
    assert mesh_bytes(other.mesh) != mesh_bytes(first.mesh)


def test_an_images_mesh_does_not_depend_on_its_batch(pipeline, banana, apple):
    alone = pipeline(apple, seed=3)[0]
    batch = pipeline([banana, apple], seed=3)
    assert [r.name for r in batch] == [str(banana), str(apple)]
    assert mesh_bytes(batch[1].mesh) == mesh_bytes(alone.mesh)
    # Per-image seeds: the apple's seed decides its mesh wherever it stands in the batch.
    reordered = pipeline([apple, banana], seed=[3, 5])
    assert mesh_bytes(reordered[0].mesh) == mesh_bytes(alone.mesh)


def test_no_hr_decodes_the_lr_tokens_and_samples_fewer_steps(pipeline, banana, monkeypatch):
    calls = {"lr": 0, "hr": 0}
    for stage, mar in (("lr", pipeline.mar_lr), ("hr", pipeline.mar_hr)):
        original = mar.forward_mae

        def counted(*args, _stage=stage, _original=original, **kwargs):
            calls[_stage] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(mar, "forward_mae", counted)
    stages = []
    (full,) = pipeline(banana, seed=0, return_latents=True, callback=lambda stage, i: stages.append(stage))
    assert calls == {"lr": pipeline.defaults.lr_steps, "hr": pipeline.defaults.hr_steps}
    assert stages == list(stage_names(True))
    calls.update(lr=0, hr=0)
    stages.clear()
    (lr_only,) = pipeline(banana, seed=0, use_hr=False, return_latents=True,
                          callback=lambda stage, i: stages.append(stage))
    assert calls == {"lr": pipeline.defaults.lr_steps, "hr": 0}
    assert stages == list(stage_names(False)) and "hr" not in lr_only.timings
    assert lr_only.ok and len(lr_only.mesh.faces) > 0
    assert lr_only.latents.shape[0] == pipeline.mar_lr.config.lr_tokens
    # The seed's generator draws the LR tokens first, so they are those of the full run.
    assert torch.equal(lr_only.latents, full.lr_latents)


def test_faces_decimates_and_options_override_the_defaults(pipeline, banana):
    (full,) = pipeline(banana, seed=0)
    budget = len(full.mesh.faces) // 4
    (small,) = pipeline(banana, seed=0, faces=budget)
    assert 0 < len(small.mesh.faces) <= budget
    (fine,) = pipeline(banana, seed=0, resolution=64)
    assert fine.queries > full.queries


def test_faces_zero_keeps_every_face_and_the_default_budget_is_50k(pipeline, banana):
    assert SamplingDefaults().faces == 50_000
    (kept,) = pipeline(banana, seed=0, faces=0, resolution=64)
    (budget,) = pipeline(banana, seed=0, faces=len(kept.mesh.faces) // 2, resolution=64)
    assert len(budget.mesh.faces) <= len(kept.mesh.faces) // 2 < len(kept.mesh.faces)
    with pytest.raises(ConfigError, match="faces must be at least 4"):
        pipeline(banana, faces=2)


def test_generate_yields_each_image_before_starting_the_next(pipeline, banana, apple):
    events = []
    results = pipeline.generate([banana, apple], seed=0, callback=lambda stage, i: events.append((stage, i)))
    first = next(results)
    assert first.name == str(banana) and first.ok
    assert events == [(stage, 0) for stage in stage_names(True)]  # nothing of the apple has run yet
    second = next(results)
    assert second.name == str(apple) and events[-1] == ("mesh", 1)
    assert next(results, None) is None


def test_auto_dtype_picks_per_stage_by_device_and_cpu(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(precision_module, "cpu_has_fast_bf16", lambda: False)
    assert stage_dtypes("auto", cpu) == (torch.float32, torch.float32)  # emulated bf16 is slower
    monkeypatch.setattr(precision_module, "cpu_has_fast_bf16", lambda: True)
    assert stage_dtypes("auto", cpu) == (torch.float32, torch.bfloat16)  # small MARs gain nothing from bf16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert stage_dtypes("auto", cuda) == (torch.bfloat16, torch.bfloat16)
    assert stage_dtypes("fp32", cuda) == (torch.float32, torch.float32)
    assert stage_dtypes("bf16", cpu) == (torch.bfloat16, torch.bfloat16)
    with pytest.raises(ValueError, match="dtype must be one of auto, fp32, bf16"):
        stage_dtypes("fp8", cpu)


def test_settings_are_checked_against_the_models(pipeline, banana):
    tokens = pipeline.mar_lr.config.num_tokens
    with pytest.raises(ConfigError, match=f"lr_steps must be at most {tokens}"):
        pipeline(banana, lr_steps=tokens + 1)
    with pytest.raises(ConfigError, match="resolution must be between"):
        pipeline(banana, resolution=4)
    with pytest.raises(ConfigError, match="sampler must be one of"):
        pipeline(banana, sampler="euler")
    with pytest.raises(ConfigError, match="use_hr must be true or false, got 'yes'"):
        pipeline(banana, use_hr="yes")
    with pytest.raises(ValueError, match="2 seeds for 1 images"):
        pipeline(banana, seed=[1, 2])


def test_no_surface_is_a_status_not_a_crash(pipeline, banana, monkeypatch):
    # A decoder that answers "outside" everywhere: the extraction finds no surface.
    monkeypatch.setattr(pipeline.vae.to_logit.bias, "data", torch.full_like(pipeline.vae.to_logit.bias, -1e4))
    (result,) = pipeline(banana, seed=0)
    assert result.status == "empty" and not result.ok
    assert len(result.mesh.faces) == 0
    assert "no surface" in result.problem


def test_bf16_generates_too(tiny_pipeline, banana):
    bf16 = MAR3DPipeline.from_pretrained(tiny_pipeline, dtype="bf16")
    (result,) = bf16(banana, seed=0)
    assert result.ok and len(result.mesh.faces) > 0
    with pytest.raises(ValueError, match="dtype must be one of"):
        MAR3DPipeline.from_pretrained(tiny_pipeline, dtype="fp8")


def test_clip_dinov2_pipeline_loads_and_generates(tiny_vae_run, banana, tmp_path):
    """The paper's image encoders (tiny random CLIP + DINOv2 saved with transformers, loaded offline) in a
    pipeline folder: the backbones load with the pipeline and generation runs through them."""
    transformers = pytest.importorskip("transformers")
    import yaml

    from mar3d.config import CONFIG_DIR, from_dict
    from mar3d.models.io import save_mar
    from mar3d.models.mar import MAR, MARConfig
    from mar3d.pipeline.export import assemble_pipeline

    torch.manual_seed(0)
    transformers.CLIPVisionModel(transformers.CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, image_size=224,
        patch_size=32)).save_pretrained(tmp_path / "clip")
    transformers.Dinov2Model(transformers.Dinov2Config(
        hidden_size=48, mlp_ratio=2, num_hidden_layers=1, num_attention_heads=4, image_size=224,
        patch_size=14)).save_pretrained(tmp_path / "dinov2")
    model = yaml.safe_load((CONFIG_DIR / "mar" / "tiny.yaml").read_text())["model"]
    model["image_encoder"] = {"kind": "clip_dinov2", "image_size": 224, "patch_size": 14, "width": 32,
                              "dinov2_width": 48, "clip_path": str(tmp_path / "clip"),
                              "dinov2_path": str(tmp_path / "dinov2")}
    for stage in ("lr", "hr"):
        save_mar(MAR(from_dict(MARConfig, {**model, "stage": stage})), tmp_path / stage)
    folder, notes = assemble_pipeline(tiny_vae_run, tmp_path / "lr", tmp_path / "hr", tmp_path / "model",
                                      {"lr_steps": 2, "hr_steps": 2, "diffusion_steps": 5, "resolution": 16})
    pipeline = MAR3DPipeline.from_pretrained(folder)
    assert pipeline.mar_lr.image_encoder._backbones is not None  # loaded with the pipeline
    (result,) = pipeline(banana, seed=0)
    assert result.status in ("ok", "empty", "full") and result.timings["encoder"] > 0
