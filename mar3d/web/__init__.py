"""The web app (`mar3d serve`): ``service`` does a request's work, ``app`` is the gradio page around it."""
