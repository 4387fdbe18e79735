"""The `mar3d serve` page (gradio): upload an image, set the sampling, see and download the mesh.

The work is ``mar3d.web.service``; this module is the layout, the events and how the server runs:
- one model, so generations are queued and run one at a time (``concurrency_id="model"``);
- uploads are limited in size (``max_file_size``), and the image file itself is checked by the
  pipeline's loader, so every bad input (corrupt, not an image, transparent, no foreground, ...)
  answers with its one-line message in an error box and the server goes on;
- every file the server writes lives in one folder (``serve``; `mar3d serve` removes it at exit).
"""
from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr

from mar3d.pipeline.images import IMAGE_SUFFIXES
from mar3d.pipeline.pipeline import MAX_RESOLUTION, MAR3DPipeline
from mar3d.web.service import DOWNLOAD_FORMATS, RequestError, RequestFolders, WebGenerator, on_white

log = logging.getLogger(__name__)

TITLE = "MAR-3D: image to mesh"
INTRO = ("Upload a picture of one object: a cut-out with transparency, or a photo on a plain background. "
         "It is cut out and framed as in training (shown below it); **Generate** samples a mesh, shown in 3D "
         "with normal maps from four sides, and offers it as GLB, OBJ and STL. Requests are queued.")


def _fail(error: Exception, action: str) -> gr.Error:
    """The error box for a failed request: the user's problem as is, anything else named and logged."""
    if isinstance(error, RequestError):
        return gr.Error(str(error), print_exception=False)
    log.exception("%s failed", action)
    return gr.Error(f"{action} failed ({type(error).__name__}: {error})", print_exception=False)


def build_app(generator: WebGenerator, keep_seconds: float = 1800.0) -> gr.Blocks:
    """The page for one pipeline. ``keep_seconds``: age at which gradio's cached uploads are removed."""
    defaults, pipeline = generator.pipeline.defaults, generator.pipeline
    downloads_off = [gr.DownloadButton(value=None, interactive=False) for _ in DOWNLOAD_FORMATS]

    def cleared():
        return None, None, None, *downloads_off, ""

    def show_input(upload):
        try:
            return on_white(generator.condition(upload)) if upload else None
        except Exception as error:
            raise _fail(error, "reading the image") from None

    def generate(upload, seed, lr_steps, hr_steps, cfg, resolution, skip_hr, progress=gr.Progress()):
        try:
            out = generator.generate(upload, seed, lr_steps, hr_steps, cfg, resolution, use_hr=not skip_hr,
                                     progress=lambda fraction, text: progress(fraction, desc=text))
        except Exception as error:
            raise _fail(error, "generation") from None
        buttons = [gr.DownloadButton(value=str(out.meshes[fmt]), interactive=True) for fmt in DOWNLOAD_FORMATS]
        return str(out.input_image), str(out.meshes["glb"]), str(out.preview), *buttons, out.summary

    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(300, int(keep_seconds))) as demo:
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Image", file_types=sorted(IMAGE_SUFFIXES), type="filepath",
                                 elem_id="upload")
                input_view = gr.Image(label="Model input (cut out and framed)", type="pil", interactive=False,
                                      height=320, elem_id="input-view")
                with gr.Accordion("Settings", open=True):
                    seed = gr.Number(label="Seed", value=0, precision=0, minimum=0, elem_id="seed")
                    lr_steps = gr.Slider(1, pipeline.mar_lr.config.num_tokens, value=defaults.lr_steps, step=1,
                                         label="MAR-LR steps")
                    hr_steps = gr.Slider(1, pipeline.mar_hr.config.num_tokens, value=defaults.hr_steps, step=1,
                                         label="MAR-HR steps")
                    cfg = gr.Slider(1.0, 10.0, value=defaults.cfg, step=0.1, label="Guidance scale (CFG)")
                    resolution = gr.Slider(16, MAX_RESOLUTION, value=defaults.resolution, step=8,
                                           label="Marching-cubes resolution")
                    skip_hr = gr.Checkbox(label="Skip MAR-HR (decode the MAR-LR tokens: faster, coarser)",
                                          value=not defaults.use_hr)
                run = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=2):
                mesh_view = gr.Model3D(label="Mesh", clear_color=(1.0, 1.0, 1.0, 1.0), height=420,
                                       elem_id="mesh-view")
                preview = gr.Image(label="Normal maps: input view, then turned 90°, 180°, 270°",
                                   interactive=False, elem_id="preview")
                with gr.Row():
                    buttons = [gr.DownloadButton(f"Download {fmt.upper()}", interactive=False,
                                                 elem_id=f"download-{fmt}") for fmt in DOWNLOAD_FORMATS]
                summary = gr.Markdown(elem_id="summary")

        outputs = [input_view, mesh_view, preview, *buttons, summary]
        # A new upload first clears the last result, then shows (or refuses) the new input.
        upload.change(cleared, outputs=outputs, queue=False).then(show_input, inputs=upload, outputs=input_view)
        run.click(generate, inputs=[upload, seed, lr_steps, hr_steps, cfg, resolution, skip_hr], outputs=outputs,
                  concurrency_limit=1, concurrency_id="model")
    return demo


def serve(pipeline: MAR3DPipeline, root: Path, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
          max_upload_mb: float = 20.0, keep_seconds: float = 1800.0, queue_size: int = 16) -> None:
    """Run the app until interrupted, writing its files under ``root``.

    ``root`` should also be gradio's GRADIO_TEMP_DIR (set before gradio is imported, as `mar3d serve`
    does): then gradio's uploads are there too, and it serves the request folders in place, uncopied.
    """
    generator = WebGenerator(pipeline, RequestFolders(Path(root) / "requests", keep_seconds=keep_seconds))
    demo = build_app(generator, keep_seconds)
    demo.queue(default_concurrency_limit=1, max_size=queue_size)
    demo.launch(server_name=host, server_port=port, share=share, max_file_size=int(max_upload_mb * 2**20),
                ssr_mode=False)
