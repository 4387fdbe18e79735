"""MAR-LR / MAR-HR training through the CLI on real latents of real scans, and `mar3d cache-latents`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from conftest import MAR_STEPS, WATERTIGHT_YCB, run_mar3d
from mar3d.data import latent_cache, layout
from mar3d.data.datasets import rotate_pyramid, draw_pyramid
from mar3d.data.prepare import item_rng
from mar3d.models.io import load_mar, load_vae
from mar3d.training.cache_latents import vae_fingerprint
from mar3d.training.logs import read_scalars
from mar3d.utils.precision import autocast_dtype, autocast_for


def test_cache_holds_each_views_rotated_latents(prepared, tiny_vae_run, tiny_latents):
    vae = load_vae(tiny_vae_run / "model")
    info = latent_cache.read_info(tiny_latents)
    assert info["objects"] == 4 and info["token_counts"] == [32, 128]
    assert info["vae_fingerprint"] == vae_fingerprint(vae)
    assert sorted(latent_cache.cached_ids(tiny_latents)) == sorted(WATERTIGHT_YCB)
    item = WATERTIGHT_YCB[1]
    cached = latent_cache.read_item(tiny_latents, item)
    views = layout.read_views(prepared, item)
    assert cached["tokens_32"].shape == (len(views), 32, 32) and cached["tokens_128"].shape == (len(views), 128, 32)
    # View 3 re-encoded by hand: the same pyramid (seeded by the id) rotated by that view's R.
    s = layout.read_samples(prepared, item)
    pyramid = draw_pyramid(s["surface_points"], s["surface_normals"], vae.config.pyramid_sizes(), item_rng(0, item))
    levels = [p[None] for p in rotate_pyramid(views[3]["rotation"], pyramid)]
    with torch.no_grad(), autocast_for(torch.device("cpu"), autocast_dtype("auto", "cpu")):  # as the cache does
        expected = vae.encode(levels, 128).mean.float()[0]
    assert torch.allclose(cached["tokens_128"][3], expected, atol=1e-5)
    # Different views of one object give different latents (view-aligned generation, docs/method.md §2).
    assert not torch.allclose(cached["tokens_128"][0], cached["tokens_128"][3], atol=1e-2)
    stds = info["latent_std"]
    assert 0.05 < stds["128"] < 20 and abs(stds["128"] - float(cached["tokens_128"].std())) < 0.5 * stds["128"]


def test_cache_resumes_and_refuses_another_vae(prepared, tiny_vae_run, tiny_latents, tmp_path):
    again = run_mar3d("cache-latents", prepared, "--vae", tiny_vae_run, "--out", tiny_latents,
                      "--only", *WATERTIGHT_YCB, "--no-progress")
    assert "cached 0 objects" in again.stdout and "4 already done" in again.stdout
    other = tmp_path / "other_vae"
    vae = load_vae(tiny_vae_run / "model")
    with torch.no_grad():
        vae.to_logit.bias += 1.0  # other weights
    from mar3d.models.io import save_vae

    save_vae(vae, other)
    refused = run_mar3d("cache-latents", prepared, "--vae", other, "--out", tiny_latents, check=2)
    assert "another VAE" in refused.stderr and "Traceback" not in refused.stderr


def test_cache_of_the_first_views_only_and_a_clear_error_past_them(prepared, tiny_vae_run, tiny_latents, tmp_path):
    from mar3d.data.datasets import MARDataset

    item, cache = WATERTIGHT_YCB[0], tmp_path / "cache"
    run_mar3d("cache-latents", prepared, "--vae", tiny_vae_run, "--out", cache, "--only", item, "--views", 3,
              "--no-progress")
    partial, full = latent_cache.read_item(cache, item), latent_cache.read_item(tiny_latents, item)
    for key, value in partial.items():
        assert value.shape[0] == 3 and torch.allclose(value, full[key][:3], atol=1e-5)
    dataset = MARDataset(prepared, [item], views=4, latents=cache, tokens=32)
    assert dataset[2]["latents"].shape == (32, 32)
    with pytest.raises(ValueError, match=r"holds 3 views, view 3 is needed.*views_per_object"):
        dataset[3]
    bad = run_mar3d("cache-latents", prepared, "--vae", tiny_vae_run, "--out", cache, "--views", -1, check=2)
    assert "--views must be >= 0" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("stage", ["lr", "hr"])
def test_mar_runs_train_and_export_ema_models(stage, tiny_mar_lr_run, tiny_mar_hr_run, tiny_latents):
    run = tiny_mar_lr_run if stage == "lr" else tiny_mar_hr_run
    model = load_mar(run / "model")
    assert model.config.stage == stage
    assert model.config.num_tokens == (32 if stage == "lr" else 128)
    meta = json.loads((run / "model" / "config.json").read_text())
    assert meta["trained_steps"] == MAR_STEPS
    # The latent scale is 1 / std of the training latents, measured from the cache.
    std = latent_cache.read_info(tiny_latents)["latent_std"][str(model.config.num_tokens)]
    assert model.config.latent_scale == pytest.approx(1 / std)
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["model"]["stage"] == stage and resolved["latents"] == str(tiny_latents.resolve())
    scalars = read_scalars(run)
    losses = [v for _, v in scalars["train/loss"]]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3]), losses  # it learned
    assert "val/loss" in scalars
    # The export holds the EMA weights: they differ from the last live weights in the checkpoint.
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    live = state["mar.token_proj.weight"]
    assert torch.equal(model.token_proj.weight.detach(), state["ema.shadow.token_proj.weight"])
    assert not torch.equal(live, state["ema.shadow.token_proj.weight"])


def test_mar_hr_trains_online_without_a_cache_and_resumes_summing_wall_time(prepared, tiny_vae_run, tmp_path):
    run = tmp_path / "hr"
    args = ["train", "mar-hr", "--config", "tiny", "--data", prepared, "--vae", tiny_vae_run, "--out", run,
            "--no-progress", "--only", *WATERTIGHT_YCB[:2]]
    run_mar3d(*args, "--max-steps", 20)
    first = json.loads((run / "model" / "config.json").read_text())["seconds"]
    run_mar3d(*args, "--max-steps", 30, "--resume")
    resumed = json.loads((run / "model" / "config.json").read_text())
    assert resumed["trained_steps"] == 30
    # The wall time sums the legs; resuming a finished run trains nothing and keeps the whole run's time.
    assert resumed["seconds"] > first > 0
    run_mar3d(*args, "--max-steps", 30, "--resume")
    again = json.loads((run / "model" / "config.json").read_text())
    assert again["trained_steps"] == 30 and resumed["seconds"] <= again["seconds"] < resumed["seconds"] + 30
    assert load_mar(run / "model").config.lr_latent_scale != 1.0  # measured by encoding


def test_mar_training_errors_are_one_line(prepared, tiny_vae_run, tiny_latents, tmp_path):
    no_vae = run_mar3d("train", "mar-lr", "--config", "tiny", "--data", prepared, "--out", tmp_path / "a", check=2)
    assert "needs --vae" in no_vae.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": {"token_channels": 16, "lr_tokens": 32, "hr_tokens": 128}}))
    wrong = run_mar3d("train", "mar-lr", "--config", bad, "--data", prepared, "--vae", tiny_vae_run,
                      "--out", tmp_path / "b", check=2)
    assert "latent channels" in wrong.stderr and "Traceback" not in wrong.stderr
    vae_flag = run_mar3d("train", "vae", "--config", "tiny", "--data", prepared, "--vae", tiny_vae_run,
                         "--out", tmp_path / "c", check=2)
    assert "mar-lr / mar-hr" in vae_flag.stderr


def test_seed_flag_sets_the_runs_seed_and_a_bad_one_is_one_line(prepared, tiny_vae_run, tiny_latents, tmp_path):
    """`--seed` overrides train.seed: another seed starts from other weights (what a multi-seed study needs)."""
    args = ["train", "mar-lr", "--config", "tiny", "--data", prepared, "--vae", tiny_vae_run, "--latents",
            tiny_latents, "--no-progress", "--max-steps", 1, "--only", *WATERTIGHT_YCB]
    weights = {}
    for seed in (None, 7):
        run = tmp_path / f"seed{seed}"
        run_mar3d(*args, "--out", run, *(["--seed", seed] if seed is not None else []))
        assert yaml.safe_load((run / "config.yaml").read_text())["train"]["seed"] == (seed or 0)
        weights[seed] = load_mar(run / "model").token_proj.weight.detach()
    assert not torch.allclose(weights[None], weights[7])
    bad = run_mar3d(*args, "--out", tmp_path / "bad", "--seed", -1, check=2)
    assert "train.seed must be in [0, 2**32)" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_exclude_holds_objects_out_of_training_and_validation(prepared):
    from mar3d.cli.main import build_parser
    from mar3d.cli.train import _load
    from mar3d.training.selection import select_objects

    args = build_parser().parse_args(["train", "vae", "--config", "tiny", "--data", str(prepared), "--out", "x",
                                      "--exclude", WATERTIGHT_YCB[0], "teapot"])
    config = _load(args)
    assert config.data.exclude_ids == sorted([WATERTIGHT_YCB[0], "teapot"])
    chosen = select_objects([prepared], config.data.include_ids, config.data.val_ids, config.data.exclude_ids)
    used = set(chosen.train_ids) | {i for ids in chosen.val.values() for i in ids}
    assert WATERTIGHT_YCB[0] not in used and "teapot" not in used and WATERTIGHT_YCB[1] in used


def test_data_repeats_weigh_a_folder_and_bad_ones_are_named(prepared, tiny_vae_run, tiny_latents, tmp_path):
    """`data.repeats` ({folder name: n}) puts a folder's training views n times into each pass (the same items,
    so one image cache); validation is not weighted. A name that is not a --data folder, a count below 1 or
    not a whole number is a one-line error naming it."""
    from mar3d.config import CONFIG_DIR, ConfigError, load_config
    from mar3d.training.config import MARRunConfig
    from mar3d.training.mar import run_datasets
    from mar3d.training.selection import select_objects

    scans = tmp_path / "scans"
    scans.symlink_to(prepared, target_is_directory=True)  # a second folder of the same objects, another name
    roots = [prepared, scans]
    selection = select_objects(roots, list(WATERTIGHT_YCB), [], [])

    def sets(repeats: dict):
        return run_datasets(load_config({"data": {"repeats": repeats}}, MARRunConfig, "mar"), roots, selection)

    once, weighted = sets({}), sets({"scans": 3})
    per_folder = len(once["train"]) // 2
    assert per_folder == sum(len(layout.read_views(prepared, i)) for i in WATERTIGHT_YCB)  # every rendered view
    assert len(weighted["train"]) == per_folder + 3 * per_folder and len(weighted["val"]) == len(once["val"])
    last = weighted["train"].datasets[-3:]
    assert all(d is last[0] for d in last) and str(last[0].root).endswith("scans")
    assert [item[0] for item in last[0].items] == [item[0] for item in weighted["train"].datasets[0].items]
    with pytest.raises(ConfigError, match=r"data.repeats names \['scan'\], not among the --data folders"):
        sets({"scan": 2})
    with pytest.raises(ConfigError, match="whole numbers >= 1"):
        sets({"scans": 0})
    with pytest.raises(ConfigError, match="expected an integer"):
        sets({"scans": 1.5})
    config = tmp_path / "repeats.yaml"
    tiny = yaml.safe_load((CONFIG_DIR / "mar" / "tiny.yaml").read_text())
    config.write_text(yaml.safe_dump({**tiny, "data": {**tiny.get("data", {}), "repeats": {"ycbb": 4}}}))
    bad = run_mar3d("train", "mar-lr", "--config", config, "--data", prepared, "--vae", tiny_vae_run, "--latents",
                    tiny_latents, "--out", tmp_path / "bad", "--no-progress", check=2)
    assert "data.repeats names ['ycbb']" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists()  # refused before the run folder is made


def test_mar_fine_tuning_keeps_the_source_latent_scale_and_weights(prepared, tiny_vae_run, tiny_latents,
                                                                   tiny_mar_lr_run, tmp_path):
    """--init-from a trained MAR-LR: the run keeps its source's latent scale (its weights expect latents
    normalized that way) and starts from its weights; a VAE folder is refused as a MAR source."""
    source = load_mar(tiny_mar_lr_run / "model")
    args = ["train", "mar-lr", "--config", "tiny", "--data", prepared, "--vae", tiny_vae_run, "--latents", tiny_latents,
            "--no-progress", "--max-steps", 5, "--only", *WATERTIGHT_YCB[2:]]
    run_mar3d(*args, "--out", tmp_path / "tuned", "--init-from", tiny_mar_lr_run)
    tuned = load_mar(tmp_path / "tuned" / "model")
    assert tuned.config.latent_scale == source.config.latent_scale
    torch.manual_seed(0)
    fresh = type(source)(source.config)
    weights = lambda m: torch.cat([p.detach().flatten() for p in m.parameters()])  # noqa: E731
    assert (weights(tuned) - weights(source)).abs().mean() < 0.1 * (weights(fresh) - weights(source)).abs().mean()
    wrong = run_mar3d(*args, "--out", tmp_path / "wrong", "--init-from", tiny_vae_run, check=2)
    assert "not a 'mar'" in wrong.stderr and "Traceback" not in wrong.stderr
