"""The web app (`mar3d serve`): the request work on its own (bad inputs, files, folder sweeping), then the
whole app end to end in headless Chromium on the tiny trained models and real rendered views."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import trimesh
from PIL import Image

from conftest import FAST_PIPELINE_SETTINGS
from mar3d.cli.main import main
from mar3d.pipeline.pipeline import MAR3DPipeline
from mar3d.web.service import DOWNLOAD_FORMATS, RequestError, RequestFolders, WebGenerator

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FAST = dict(seed=0, cfg=3.0, **{k: FAST_PIPELINE_SETTINGS[k] for k in ("lr_steps", "hr_steps", "resolution")})
CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
# Limits for what may hang (a server that never answers, a page that never updates), generous so that a busy
# machine does not trip them: they only decide how long a real hang takes to be reported.
SERVER_START_S, SERVER_STOP_S = 600, 120
PAGE_ACTION_MS, PAGE_EXPECT_MS = 300_000, 600_000  # a page action; an expected change (a generation)


@pytest.fixture(scope="module")
def views(prepared, tmp_path_factory):
    """Two real rendered views and bad uploads, named as a user's files would be."""
    folder = tmp_path_factory.mktemp("uploads")
    banana, apple = folder / "banana.png", folder / "apple.png"
    shutil.copyfile(prepared / "011_banana" / "views" / "000.png", banana)
    shutil.copyfile(prepared / "013_apple" / "views" / "003.png", apple)
    corrupt = folder / "corrupt.png"
    corrupt.write_bytes(banana.read_bytes()[:300])
    text = folder / "notes.png"
    text.write_text("not a picture\n")
    transparent = folder / "clear.png"
    Image.new("RGBA", (64, 64), (255, 0, 0, 0)).save(transparent)
    blank = folder / "blank.png"
    Image.new("RGB", (64, 64), (200, 200, 200)).save(blank)
    large = folder / "large.png"  # noise does not compress: over the server's 1 MB upload limit
    Image.frombytes("RGB", (700, 700), np.random.default_rng(0).bytes(700 * 700 * 3)).save(large)
    return dict(banana=banana, apple=apple, corrupt=corrupt, text=text, transparent=transparent, blank=blank,
                large=large)


@pytest.fixture(scope="module")
def generator(tiny_pipeline, tmp_path_factory):
    folders = RequestFolders(tmp_path_factory.mktemp("requests"), keep_last=2)
    return WebGenerator(MAR3DPipeline.from_pretrained(tiny_pipeline), folders)


# ----------------------------------------------------------------------------- service
def test_generate_writes_every_download_and_the_previews(generator, views):
    out = generator.generate(views["banana"], **FAST)
    assert out.folder.parent == generator.folders.root
    assert sorted(p.name for p in out.folder.iterdir()) == sorted(
        [f"banana.{fmt}" for fmt in DOWNLOAD_FORMATS] + ["banana.input.png", "banana.preview.png"])
    for fmt in DOWNLOAD_FORMATS:
        mesh = trimesh.load(out.meshes[fmt], force="mesh")
        assert len(mesh.faces) > 0, fmt
    assert Image.open(out.preview).size == (1024, 256)
    assert Image.open(out.input_image).mode == "RGB"
    assert out.summary.startswith("banana.png: ") and "seed 0" in out.summary
    # the LR-only mode, and progress by stage
    seen = []
    out = generator.generate(views["apple"], **FAST, use_hr=False, progress=lambda f, text: seen.append((f, text)))
    assert [text for _, text in seen] == ["preprocessed", "MAR-LR sampled", "mesh extracted"]
    assert [f for f, _ in seen] == sorted(f for f, _ in seen) and seen[-1][0] < 1
    assert "MAR-HR" not in out.summary


@pytest.mark.parametrize("name, problem", [
    ("corrupt", "corrupt.png: corrupt or truncated image"),
    ("text", "notes.png: not an image file"),
    ("transparent", "clear.png: the image is fully transparent"),
    ("blank", "blank.png: no foreground"),
])
def test_bad_uploads_name_the_file_not_the_servers_copy(generator, views, name, problem):
    before = set(generator.folders.root.iterdir())
    with pytest.raises(RequestError) as error:
        generator.generate(views[name], **FAST)
    assert str(error.value).startswith(problem)
    assert str(views[name].parent) not in str(error.value)
    assert set(generator.folders.root.iterdir()) == before  # a failed request leaves no folder


def test_missing_upload_and_bad_settings_are_request_errors(generator, views):
    with pytest.raises(RequestError, match="upload an image first"):
        generator.generate(None, **FAST)
    with pytest.raises(RequestError, match="resolution must be between"):
        generator.generate(views["banana"], **{**FAST, "resolution": 4})
    with pytest.raises(RequestError, match="lr_steps must be at most"):
        generator.generate(views["banana"], **{**FAST, "lr_steps": 10_000})
    with pytest.raises(RequestError, match="seed must be a whole number"):
        generator.generate(views["banana"], **{**FAST, "seed": None})


def test_request_folders_keep_the_newest_and_the_young(tmp_path):
    folders = RequestFolders(tmp_path, keep_seconds=60, keep_last=3)
    made = []
    for _ in range(5):
        made.append(folders.new())
        (made[-1] / "mesh.glb").write_bytes(b"x")
        time.sleep(0.01)  # distinct modification times
    assert sorted(tmp_path.iterdir()) == sorted(made[-3:])
    old = made[-3]
    os.utime(old, (time.time() - 120, time.time() - 120))
    assert folders.sweep() == [old]
    assert sorted(tmp_path.iterdir()) == sorted(made[-2:])


def test_serve_needs_a_model_folder(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "missing")]) == 2
    assert f"--model {tmp_path / 'missing'}: {tmp_path / 'missing'}: no such model folder" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path)]) == 2
    assert "not a pipeline model folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------- browser
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_pipeline, tmp_path_factory):
    """`mar3d serve` in a subprocess on a free port; its TMPDIR is a test folder, checked empty at the end."""
    tmp = tmp_path_factory.mktemp("serve")
    port = _free_port()
    log_path = tmp / "server.log"
    env = dict(os.environ, TMPDIR=str(tmp / "tmp"), GRADIO_ANALYTICS_ENABLED="False")
    (tmp / "tmp").mkdir()
    with open(log_path, "w") as log:
        command = ["serve", "--model", tiny_pipeline, "--port", port, "--max-upload-mb", 1]
        process = subprocess.Popen([sys.executable, "-m", "mar3d", *map(str, command)], stdout=log,
                                   stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + SERVER_START_S
    while True:
        if process.poll() is not None:
            pytest.fail(f"mar3d serve exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"mar3d serve did not answer at {url} in {SERVER_START_S} s (hung, or the machine is "
                            f"very busy); its log:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
    yield url, tmp / "tmp", log_path
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=SERVER_STOP_S)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"mar3d serve did not stop in {SERVER_STOP_S} s after SIGTERM")
    assert list((tmp / "tmp").iterdir()) == [], "the server left temporary files behind"


def _upload(page, path) -> None:
    """Choose a file in the upload box, first clearing the one it holds (a held file hides the file input)."""
    chooser = page.locator("#upload input[type=file]")
    page.locator("#upload input[type=file], #upload button[aria-label=Clear]").first.wait_for(state="attached")
    if not chooser.count():
        page.locator("#upload button[aria-label=Clear]").click()
    chooser.set_input_files(str(path))


def _download(page, fmt: str, folder):
    button = page.locator(f"#download-{fmt}")
    with page.expect_download() as download:
        button.click()
    target = folder / download.value.suggested_filename
    download.value.save_as(target)
    return target


def _expect_error(page, text: str) -> None:
    """An error box with this text appears; then every error box is closed, so that the next is seen afresh."""
    from playwright.sync_api import expect

    expect(page.get_by_test_id("toast-text").filter(has_text=text).first).to_be_visible()
    page.evaluate("document.querySelectorAll('[data-testid=toast-close]').forEach(button => button.click())")
    expect(page.get_by_test_id("toast-text")).to_have_count(0)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (scripts/setup.sh installs Debian's)")
def test_page_generates_downloads_and_survives_a_bad_upload(server, views, tmp_path):
    pytest.importorskip("playwright", reason="the dev extra installs playwright")
    from playwright.sync_api import expect, sync_playwright

    url, _, log_path = server
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(accept_downloads=True)
            page.set_default_timeout(PAGE_ACTION_MS)
            expect.set_options(timeout=PAGE_EXPECT_MS)  # a generation on a shared CPU
            page.goto(url)
            summary = page.locator("#summary")

            _upload(page, views["banana"])
            expect(page.locator("#input-view img")).to_be_visible()
            page.locator("#generate").click()
            expect(summary).to_contain_text("banana.png:")
            glb = _download(page, "glb", tmp_path)
            assert glb.name == "banana.glb"
            assert len(trimesh.load(glb, force="mesh").faces) > 0
            expect(page.locator("#preview img")).to_be_visible()

            _upload(page, views["corrupt"])  # refused on upload, and again on Generate
            _expect_error(page, "corrupt.png: corrupt or truncated image")
            expect(summary).not_to_contain_text("banana.png:")  # the last result was cleared
            page.locator("#generate").click()
            _expect_error(page, "corrupt.png: corrupt or truncated image")

            _upload(page, views["large"])
            _expect_error(page, "exceed the maximum allowed size")
            expect(page.locator("#upload input[type=file]")).to_be_attached()  # the refused file is not kept

            _upload(page, views["apple"])
            expect(page.locator("#input-view img")).to_be_visible()
            page.locator("#generate").click()
            expect(summary).to_contain_text("apple.png:")
            stl = _download(page, "stl", tmp_path)
            assert len(trimesh.load(stl, force="mesh").faces) > 0
        except Exception:
            print(log_path.read_text()[-3000:])
            raise
        finally:
            browser.close()
