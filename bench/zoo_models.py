"""The transformer part of torchvision's classification zoo, with the input size each is run at.

``bench/zoo_transformers.py`` benchmarks them; the lead's ``bench/zoo_coverage.py`` can import
``transformer_models()`` to cover the whole zoo in one table. Sizes are the smallest each model
accepts (ViT and MaxViT fix 224; Swin pads windows, ConvNeXt pools globally) to keep exports short.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ZooModel:
    """One torchvision classification model: its builder name and a (C, H, W) input size."""

    name: str
    image_size: int

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, 3, self.image_size, self.image_size)

    def build(self):  # -> torch.nn.Module, untyped to keep torch out of import time
        import torchvision

        return getattr(torchvision.models, self.name)(weights=None)


VIT = ("vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14")
SWIN = ("swin_t", "swin_s", "swin_b", "swin_v2_t", "swin_v2_s", "swin_v2_b")
CONVNEXT = ("convnext_tiny", "convnext_small", "convnext_base", "convnext_large")


def transformer_models() -> list[ZooModel]:
    """vit_*, swin_*, swin_v2_*, maxvit_t and convnext_*: every torchvision transformer-era model."""
    models = [ZooModel(name, 224) for name in VIT]
    models += [ZooModel(name, 64) for name in SWIN]
    models.append(ZooModel("maxvit_t", 224))
    models += [ZooModel(name, 64) for name in CONVNEXT]
    return models
