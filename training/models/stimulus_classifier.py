"""The stimulus classifier for n-way top-k evaluation on the twin (trained by ``eval train-classifier``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

__all__ = ["StimulusClassifier"]


class StimulusClassifier(ModelMixin, ConfigMixin):
    """A small CNN over the twin's stimulus images; a ``Classifier`` for n-way top-k.

    Takes (n, 3, h, w) float32 in [0, 1] of any size (resized to ``image_size``),
    returns (n, n_classes) logits. ``class_ids`` (wnids) and ``class_names`` (in
    config.json) say what each output is. Three conv blocks (conv 3x3 + BN + ReLU +
    2x2 max-pool), then global mean and max pooling and a linear head.
    """

    @register_to_config
    def __init__(
        self,
        class_ids: list[str] | None = None,
        class_names: list[str] | None = None,
        image_size: int = 48,
        width: int = 16,
    ) -> None:
        super().__init__()
        ids = list(class_ids or [])
        if len(ids) < 2:
            raise ValueError(f"a stimulus classifier needs at least 2 class ids, got {ids}")
        layers: list[nn.Module] = []
        c_in = 2
        for c_out in (width, 2 * width, 4 * width):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(2 * c_in, len(ids))

    @property
    def class_ids(self) -> list[str]:
        return list(self.config.class_ids)

    @property
    def class_names(self) -> list[str]:
        names = self.config.class_names
        return list(names) if names else self.class_ids

    @property
    def image_size(self) -> int:
        return int(self.config.image_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = self.image_size
        x = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True)
        # hue-free input: grey level and the contrast to the (median) background,
        # which keeps the object's outline and fill pattern whatever its colour
        grey = x.mean(dim=1, keepdim=True)
        background = x.flatten(2).median(dim=2).values[:, :, None, None]
        contrast = (x - background).abs().sum(dim=1, keepdim=True)
        x = self.features(torch.cat([grey * 2 - 1, contrast * 2], dim=1))
        # mean and max pooling: texture/fill (mean) and shape parts anywhere (max)
        x = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
        return self.head(x)
