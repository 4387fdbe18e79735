"""Comparison pictures for docs and reports: rows of normal maps (``mar3d.data.render_normals``) under headers."""
from __future__ import annotations

import numpy as np


def comparison_sheet(headers: list[str], rows: list[tuple[str, list[np.ndarray | None]]], cell: int):
    """A PIL picture: one column per header, one row per (label, images), each image (cell, cell, 3) uint8;
    a None image reads "no surface". Save it with ``.quantize(256)`` to keep a docs picture small."""
    from PIL import Image, ImageDraw

    sheet = Image.new("RGB", (cell * len(headers), 24 + cell * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, text in enumerate(headers):
        draw.text((c * cell + 8, 6), text, fill="black")
    for r, (label, images) in enumerate(rows):
        y = 24 + r * cell
        for c, image in enumerate(images):
            if image is not None:
                sheet.paste(Image.fromarray(image), (c * cell, y))
            else:
                draw.text((c * cell + 8, y + cell // 2), "no surface", fill="black")
        draw.text((4, y + cell - 14), label, fill="black")
    return sheet
