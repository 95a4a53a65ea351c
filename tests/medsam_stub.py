"""A stand-in for LiteMedSAM's three parts, for tests that need no weights: it fills each box."""

from __future__ import annotations

import torch


class BoxFiller(torch.nn.Module):
    """Logits +10 inside the (256-frame) box, -10 outside.

    ``pixel``: the slice's pixel size in the 256 frame (256 / the longest side), so that the box's
    last pixel is filled whole: ``x_min <= x < x_max + pixel``.

    The "encoder" passes the image through and counts its calls; the "prompt encoder" hands the box
    on; the "decoder" fills it. Records every box it decodes.
    """

    def __init__(self, pixel: float = 2.0) -> None:
        super().__init__()
        self.pixel = pixel
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.boxes: list[list[float]] = []
        self.encoded = 0

    def image_encoder(self, image):
        assert image.shape == (1, 3, 256, 256)
        self.encoded += 1
        return image

    def prompt_encoder(self, *, points, boxes, masks):
        assert points is None and masks is None and boxes.shape == (1, 1, 4)
        return boxes, None

    prompt_encoder.get_dense_pe = lambda: None  # type: ignore[attr-defined]

    def mask_decoder(self, *, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, multimask_output):
        assert not multimask_output
        x0, y0, x1, y1 = sparse_prompt_embeddings.reshape(4).tolist()
        self.boxes.append([x0, y0, x1, y1])
        rows, cols = torch.arange(256.0)[:, None], torch.arange(256.0)[None, :]
        inside = (cols >= x0) & (cols < x1 + self.pixel) & (rows >= y0) & (rows < y1 + self.pixel)
        return torch.where(inside, 10.0, -10.0)[None, None], None
