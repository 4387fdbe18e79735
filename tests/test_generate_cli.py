"""`mar3d export` and `mar3d generate` on the tiny trained runs and real rendered views: the pipeline folder,
compatibility errors, every output format, previews, bad inputs in a batch, determinism and --overwrite."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
import trimesh
from PIL import Image
from safetensors.torch import load_file, save_file

from conftest import FAST_PIPELINE_SETTINGS, run_mar3d
from mar3d.cli.main import main
from mar3d.models.io import RUN_EXPORT_DIR
from mar3d.pipeline.pipeline import PIPELINE_FILE
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cli(capsys, *args) -> tuple[int, str]:
    """Run `mar3d ARGS` in this process; its exit status and everything it printed."""
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out + captured.err


@pytest.fixture(scope="module")
def inputs(prepared, tmp_path_factory):
    """Two real views, and three bad files: corrupt, text, fully transparent."""
    folder = tmp_path_factory.mktemp("inputs")
    good = []
    for item, view in (("011_banana", "000"), ("013_apple", "003")):
        good.append(folder / f"{item}.png")
        shutil.copyfile(prepared / item / "views" / f"{view}.png", good[-1])
    corrupt = folder / "corrupt.png"
    corrupt.write_bytes(good[0].read_bytes()[:200])
    text = folder / "notes.png"
    text.write_text("not a picture\n")
    transparent = folder / "transparent.png"
    Image.new("RGBA", (64, 64), (255, 0, 0, 0)).save(transparent)
    return {"good": good, "bad": [corrupt, text, transparent]}


# ----------------------------------------------------------------------------- export
def test_pipeline_folder_has_the_models_and_the_settings(tiny_pipeline):
    document = json.loads((tiny_pipeline / PIPELINE_FILE).read_text())
    assert document["format"] == "mar3d-pipeline" and document["version"] == 1
    for key, value in FAST_PIPELINE_SETTINGS.items():
        assert document["defaults"][key] == value
    assert document["defaults"]["image_size"] == 224  # from the MAR runs' config
    for part in ("vae", "mar_lr", "mar_hr"):
        assert {p.name for p in (tiny_pipeline / part).iterdir()} == {"config.json", "model.safetensors"}


def test_export_copies_a_runs_model(tiny_vae_run, tmp_path, capsys):
    out = tmp_path / "vae"
    assert cli(capsys, "export", tiny_vae_run, "--out", out)[0] == 0
    for name in ("config.json", "model.safetensors"):
        assert (out / name).read_bytes() == (tiny_vae_run / RUN_EXPORT_DIR / name).read_bytes()
    status, text = cli(capsys, "export", tiny_vae_run, "--out", out)
    assert status == 2 and "already exists; pass --overwrite" in text
    assert cli(capsys, "export", tiny_vae_run, "--out", out, "--overwrite")[0] == 0
    unfinished = tmp_path / "run"
    (unfinished / "checkpoints").mkdir(parents=True)
    status, text = cli(capsys, "export", unfinished, "--out", tmp_path / "x")
    assert status == 2 and "has no exported model" in text and not (tmp_path / "x").exists()


def test_export_in_bfloat16_halves_the_weights_and_generates_nearly_the_same(
        tiny_vae_run, tiny_mar_lr_run, tiny_mar_hr_run, tiny_pipeline, inputs, tmp_path, capsys):
    out = tmp_path / "bf16"
    settings = [f"--set={k}={v}" for k, v in FAST_PIPELINE_SETTINGS.items()]
    status, text = cli(capsys, "export", "--vae", tiny_vae_run, "--mar-lr", tiny_mar_lr_run, "--mar-hr",
                       tiny_mar_hr_run, "--out", out, "--dtype", "bfloat16", *settings)
    assert status == 0, text
    for part in ("vae", "mar_lr", "mar_hr"):
        full, half = (folder / part / "model.safetensors" for folder in (tiny_pipeline, out))
        weights = load_file(str(half))
        assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.bfloat16}
        assert half.stat().st_size < 0.55 * full.stat().st_size
        reference = load_file(str(full))
        for key, value in weights.items():  # the same weights, rounded to bf16's 8 bits of mantissa
            assert torch.allclose(value.float(), reference[key].float(), rtol=1e-2, atol=1e-6), key
    meshes = {}
    for name, model in (("fp32", tiny_pipeline), ("bf16", out)):
        status, text = cli(capsys, "generate", inputs["good"][0], "--model", model, "--out", tmp_path / name,
                           "--seed", 3, "--no-progress")
        assert status == 0, text
        meshes[name] = trimesh.load(next((tmp_path / name).glob("*.glb")), force="mesh")
    extent = meshes["fp32"].extents
    assert abs(meshes["bf16"].extents - extent).max() < 0.1 * extent.max()
    refused = run_mar3d("export", tiny_vae_run, "--out", tmp_path / "x", "--dtype", "int8", check=2)
    assert "invalid choice: 'int8'" in refused.stderr and not (tmp_path / "x").exists()


def test_export_refuses_models_that_do_not_fit(tiny_vae_run, tiny_mar_lr_run, tiny_mar_hr_run, tmp_path, capsys):
    out = tmp_path / "model"
    swapped = cli(capsys, "export", "--vae", tiny_vae_run, "--mar-lr", tiny_mar_hr_run, "--mar-hr", tiny_mar_lr_run,
                  "--out", out)
    assert swapped[0] == 2 and "the MAR-LR model is a MAR-HR" in swapped[1]
    # A VAE with other latent channels.
    narrow = tmp_path / "narrow_vae"
    shutil.copytree(tiny_vae_run / RUN_EXPORT_DIR, narrow)
    document = json.loads((narrow / "config.json").read_text())
    document["config"]["latent_channels"] = 16
    (narrow / "config.json").write_text(json.dumps(document))
    status, text = cli(capsys, "export", "--vae", narrow, "--mar-lr", tiny_mar_lr_run, "--mar-hr", tiny_mar_hr_run,
                       "--out", out)
    assert status == 2 and "tokens of 32 channels, the VAE decodes 16" in text
    # The same architecture with other weights than the VAE the MARs were trained on.
    other = tmp_path / "other_vae"
    shutil.copytree(tiny_vae_run / RUN_EXPORT_DIR, other)
    weights = load_file(str(other / "model.safetensors"))
    decoder_moved = {k: v + 0.01 if k.startswith("to_logit") else v for k, v in weights.items()}
    save_file(decoder_moved, str(other / "model.safetensors"))
    # Other decoder weights, the same encoder (train.decoder_only): the latents the MARs learnt are unchanged.
    status, text = cli(capsys, "export", "--vae", other, "--mar-lr", tiny_mar_lr_run, "--mar-hr", tiny_mar_hr_run,
                       "--out", tmp_path / "decoder_tuned")
    assert status == 0, text
    weights = {k: v + 0.01 if v.is_floating_point() else v for k, v in weights.items()}
    save_file(weights, str(other / "model.safetensors"))
    status, text = cli(capsys, "export", "--vae", other, "--mar-lr", tiny_mar_lr_run, "--mar-hr", tiny_mar_hr_run,
                       "--out", out)
    assert status == 2 and "has other encoder weights" in text
    status, text = cli(capsys, "export", "--vae", tiny_vae_run, "--mar-lr", tiny_mar_lr_run, "--out", out)
    assert status == 2 and "missing --mar-hr" in text
    status, text = cli(capsys, "export", "--vae", tiny_vae_run, "--mar-lr", tiny_mar_lr_run, "--mar-hr",
                       tiny_mar_hr_run, "--out", out, "--set", "lr_steps=1000")
    assert status == 2 and "lr_steps must be at most" in text
    status, text = cli(capsys, "export", "--vae", tiny_vae_run, "--mar-lr", tiny_mar_lr_run, "--mar-hr",
                       tiny_mar_hr_run, "--out", out, "--set", "steps=3")
    assert status == 2 and "unknown setting" in text
    assert not out.exists() and not list(tmp_path.glob("model.tmp-*"))  # nothing half-built left behind


# ----------------------------------------------------------------------------- generate
def test_generate_every_format_with_previews_past_bad_inputs(tiny_pipeline, inputs, tmp_path):
    out = tmp_path / "out"
    files = inputs["good"][:1] + inputs["bad"] + inputs["good"][1:]
    result = run_mar3d("generate", *files, "--model", tiny_pipeline, "--out", out, "--format", "glb", "obj",
                       "--format", "ply", "stl", "--preview", "--verbose", "--no-progress", check=1)
    lines = result.stdout.splitlines()
    for bad in inputs["bad"]:
        (line,) = [x for x in lines if str(bad) in x]
        assert line.startswith(f"failed: {bad}: ")
    assert any("corrupt or truncated" in x for x in lines) and any("fully transparent" in x for x in lines)
    assert "generated 2, skipped 0, failed 3" in lines[-1]
    assert sum("MAR-HR" in x and "marching cubes" in x for x in lines) == 2  # --verbose timing lines
    for good in inputs["good"]:
        for fmt in ("glb", "obj", "ply", "stl"):
            mesh = trimesh.load(out / f"{good.stem}.{fmt}", force="mesh")
            assert len(mesh.faces) > 0, fmt
        with Image.open(out / f"{good.stem}.preview.png") as preview:
            assert preview.size == (1024, 256)
    assert {p.stem.split(".")[0] for p in out.iterdir()} == {g.stem for g in inputs["good"]}
    assert not list(out.glob("*.tmp-*"))


def test_same_seed_same_file_and_overwrite(tiny_pipeline, inputs, tmp_path, capsys):
    image = inputs["good"][0]
    first, again, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    run_mar3d("generate", image, "--model", tiny_pipeline, "--out", first, "--seed", 4, "--no-progress")
    run_mar3d("generate", image, "--model", tiny_pipeline, "--out", again, "--seed", 4, "--no-progress")
    name = f"{image.stem}.glb"
    assert (first / name).read_bytes() == (again / name).read_bytes()  # across processes
    assert cli(capsys, "generate", image, "--model", tiny_pipeline, "--out", other, "--seed", 5, "--no-progress")[0] == 0
    seed5 = (other / name).read_bytes()
    assert seed5 != (first / name).read_bytes()
    # Existing outputs are kept without --overwrite ...
    status, text = cli(capsys, "generate", image, "--model", tiny_pipeline, "--out", first, "--seed", 5, "--no-progress")
    assert status == 0 and f"skipped: {image}" in text and "--overwrite" in text
    assert (first / name).read_bytes() != seed5
    # ... a missing format is added beside them, the existing one kept ...
    status, text = cli(capsys, "generate", image, "--model", tiny_pipeline, "--out", first, "--seed", 5,
                       "--format", "glb", "stl", "--no-progress")
    assert status == 0 and "kept existing" in text and (first / f"{image.stem}.stl").exists()
    assert (first / name).read_bytes() != seed5
    # ... and replaced with it.
    assert cli(capsys, "generate", image, "--model", tiny_pipeline, "--out", first, "--seed", 5, "--overwrite",
               "--no-progress")[0] == 0
    assert (first / name).read_bytes() == seed5


def test_no_hr_faces_folders_and_globs(tiny_pipeline, inputs, tmp_path, capsys):
    folder = inputs["good"][0].parent
    status, text = cli(capsys, "generate", folder / "*_banana.png", "--model", tiny_pipeline, "--out", tmp_path / "g",
                       "--no-hr", "--faces", 100, "--format", "ply", "--no-progress")
    assert status == 0, text
    mesh = trimesh.load(tmp_path / "g" / "011_banana.ply", force="mesh")
    assert 0 < len(mesh.faces) <= 100
    # A folder: its image files, the bad ones reported.
    status, text = cli(capsys, "generate", folder, "--model", tiny_pipeline, "--out", tmp_path / "f",
                       "--no-hr", "--no-progress")
    assert status == 1 and "generated 2, skipped 0, failed 3" in text
    status, text = cli(capsys, "generate", tmp_path / "none*.png", "--model", tiny_pipeline, "--out", tmp_path / "n",
                       "--no-progress")
    assert status == 1 and "none*.png: no files match" in text


def test_a_models_use_hr_default_and_the_hr_flags(tiny_vae_run, tiny_mar_lr_run, tiny_mar_hr_run, inputs, tmp_path,
                                                 capsys):
    """A model whose pipeline.json says use_hr false (as the bundled demo's does) decodes the MAR-LR tokens
    unless --hr asks for the whole cascade; --no-hr and --quality high (the release's cascade) override it too."""
    runs = ("--vae", tiny_vae_run, "--mar-lr", tiny_mar_lr_run, "--mar-hr", tiny_mar_hr_run)
    model = tmp_path / "lr_default"
    status, text = cli(capsys, "export", *runs, "--out", model, "--set", "use_hr=false")
    assert status == 0, text
    assert json.loads((model / PIPELINE_FILE).read_text())["defaults"]["use_hr"] is False
    image = inputs["good"][0]
    for flags, runs_hr in (((), False), (("--hr",), True), (("--no-hr",), False), (("--quality", "high"), True)):
        status, text = cli(capsys, "generate", image, "--model", model, "--out", tmp_path / "-".join(flags or ["d"]),
                           "--resolution", 48, "--verbose", "--no-progress", *flags)
        assert status == 0 and "generated 1" in text, text
        assert ("MAR-HR" in text) == runs_hr, (flags, text)  # the --verbose timing line names the stages run
    status, text = cli(capsys, "export", *runs, "--out", tmp_path / "bad", "--set", "use_hr=maybe")
    assert status == 2 and "use_hr: expected bool, got 'maybe'" in text
    assert not (tmp_path / "bad").exists()


def test_a_models_candidates_carve_and_fill_defaults_and_their_flags(tiny_vae_run, tiny_mar_lr_run, tiny_mar_hr_run,
                                                                     inputs, tmp_path, capsys):
    """pipeline.json's candidates (as the bundled demo's) selects among MAR-LR samples and its carve clips the mesh
    to the outline; --candidates, --carve / --no-carve and --fill / --no-fill override them, --verbose says what was
    done, and a bad count is a one-line error."""
    model = tmp_path / "two_candidates"
    status, text = cli(capsys, "export", "--vae", tiny_vae_run, "--mar-lr", tiny_mar_lr_run, "--mar-hr",
                       tiny_mar_hr_run, "--out", model, "--set", "candidates=2", "--set", "resolution=32",
                       "--set", "carve=false")
    assert status == 0, text
    defaults = json.loads((model / PIPELINE_FILE).read_text())["defaults"]
    assert defaults["candidates"] == 2 and defaults["carve"] is False and defaults["fill"] is True  # export's default
    image = inputs["good"][0]
    for flags, kept, carved in (((), "of 2 kept", False), (("--candidates", 3, "--carve"), "of 3 kept", True),
                                (("--candidates", 1, "--no-carve"), None, False),
                                (("--candidates", 1, "--carve", "--no-fill"), None, True)):
        status, text = cli(capsys, "generate", image, "--model", model, "--out", tmp_path / f"c{len(flags)}{kept}",
                           "--no-hr", "--verbose", "--no-progress", *flags)
        assert status == 0 and "generated 1" in text, text
        selected = "candidate selection" in text and "kept (silhouette IoU" in text  # the --verbose timing line
        assert (selected and kept in text) if kept else not selected, (flags, text)
        assert ("outline fit" in text and "carved by the outline (IoU" in text) == carved, (flags, text)
        assert "filled" not in text or "--no-fill" not in flags and carved, (flags, text)  # filling is part of carving
    status, text = cli(capsys, "generate", image, "--model", model, "--out", tmp_path / "bad", "--candidates", 0)
    assert status == 2 and "candidates must be >= 1" in text


def test_generate_needs_a_model_and_valid_settings(tiny_pipeline, inputs, tmp_path, capsys, monkeypatch):
    image = inputs["good"][0]
    # An installation without the bundled model (e.g. a slimmed package) says what to do.
    monkeypatch.setattr("mar3d.pipeline.settings.DEMO_MODEL_DIR", tmp_path / "no_demo_model")
    status, text = cli(capsys, "generate", image, "--out", tmp_path)
    assert status == 2 and "demo model" in text and "mar3d export" in text
    monkeypatch.undo()
    status, text = cli(capsys, "generate", image, "--model", tmp_path, "--out", tmp_path)
    assert status == 2 and "not a pipeline model folder" in text
    status, text = cli(capsys, "generate", image, "--model", tiny_pipeline, "--out", tmp_path, "--resolution", 2)
    assert status == 2 and "resolution must be between" in text
    if not torch.cuda.is_available():
        status, text = cli(capsys, "generate", image, "--model", tiny_pipeline, "--out", tmp_path, "--device", "cuda")
        assert status == 2 and "CUDA is not available" in text


def test_an_image_without_surface_fails_alone(tiny_pipeline, inputs, tmp_path, capsys, monkeypatch):
    from mar3d.models.vae import PyramidVAE

    query = PyramidVAE.query
    monkeypatch.setattr(PyramidVAE, "query", lambda self, cache, points: query(self, cache, points) - 1e4)
    status, text = cli(capsys, "generate", *inputs["good"], "--model", tiny_pipeline, "--out", tmp_path,
                       "--no-progress")
    assert status == 1 and "generated 0, skipped 0, failed 2" in text
    assert f"failed: {inputs['good'][0]}: no surface: the decoded occupancy is empty everywhere" in text
    assert not list(tmp_path.iterdir())


def test_each_images_files_are_written_when_it_is_done_and_a_rerun_resumes(tiny_pipeline, inputs, tmp_path,
                                                                            capsys, monkeypatch):
    from mar3d.pipeline.pipeline import MAR3DPipeline

    first, second = inputs["good"]
    out = tmp_path / "out"
    sample_stage = MAR3DPipeline.sample_stage

    def interrupted_on_the_second_image(self, stage, condition, *args, **kwargs):
        if condition.name == str(second):
            assert (out / f"{first.stem}.glb").exists()  # the first image's file exists before the second starts
            raise KeyboardInterrupt
        return sample_stage(self, stage, condition, *args, **kwargs)

    monkeypatch.setattr(MAR3DPipeline, "sample_stage", interrupted_on_the_second_image)
    status, text = cli(capsys, "generate", first, second, "--model", tiny_pipeline, "--out", out, "--no-progress")
    assert status == 130 and "run the same command to resume" in text
    assert sorted(p.name for p in out.iterdir()) == [f"{first.stem}.glb"]  # nothing half-written
    finished = (out / f"{first.stem}.glb").read_bytes()
    monkeypatch.undo()
    status, text = cli(capsys, "generate", first, second, "--model", tiny_pipeline, "--out", out, "--no-progress")
    assert status == 0 and f"skipped: {first}" in text and "generated 1, skipped 1, failed 0" in text
    assert (out / f"{first.stem}.glb").read_bytes() == finished


def test_quality_presets_and_the_pipeline_folder_holds_no_absolute_paths(tiny_pipeline, inputs, tmp_path, capsys):
    from mar3d.pipeline.settings import DEMO_MODEL_DIR

    image = inputs["good"][0]
    status, text = cli(capsys, "generate", image, "--model", tiny_pipeline, "--out", tmp_path / "high",
                       "--quality", "high", "--resolution", 48, "--verbose", "--no-progress")
    assert status == 0 and "generated 1" in text and "decode" in text
    for folder in (tiny_pipeline, DEMO_MODEL_DIR):
        document = json.loads((folder / PIPELINE_FILE).read_text())
        assert all(not source["path"].startswith("/") for source in document["sources"].values()), folder
        for part in ("mar_lr", "mar_hr"):
            assert json.loads((folder / part / "config.json").read_text())["vae"] == "../vae", folder
