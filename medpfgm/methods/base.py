"""What the image methods share: the network's output has the image's channels, and one batch row is one image."""

from __future__ import annotations


class ImageMethod:
    """Base of PFGM++, DDPM and VAPO (PFGM overrides both: an extra v_z channel and a larger field batch)."""

    def __init__(self, cfg, image_shape: tuple[int, int, int]):
        self.cfg = cfg
        self.image_shape = tuple(image_shape)

    def out_channels(self, in_channels: int) -> int:
        return in_channels

    def data_batch_size(self, batch_size: int) -> int:
        return batch_size
