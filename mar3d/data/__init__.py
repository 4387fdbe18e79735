"""Data preparation (meshes -> samples and views) and the datasets that read its output."""
