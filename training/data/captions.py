"""Captions for training images: class-name templates or precomputed (e.g. BLIP) captions.

Out of the box every image gets a class-name caption, ``"an image of a
{class_name}"``, with class names for the 40 EEG-ImageNet WordNet ids shipped
in ``configs/eeg_imagenet_classes.yaml``. Captions computed elsewhere (BLIP,
by hand) plug in as a JSON file mapping image stem -> caption; an image
without a caption is an error that names it, never a silent fallback.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from ._io import DatasetFileError, require_file

log = logging.getLogger(__name__)

__all__ = ["CLASS_NAMES_FILE", "Captioner", "load_captions_json", "load_class_names"]

#: Shipped WordNet id -> class name map (package data of ``neuroimagen.configs``).
CLASS_NAMES_FILE = "eeg_imagenet_classes.yaml"
DEFAULT_TEMPLATE = "an image of a {class_name}"


def load_class_names(path: str | Path | None = None) -> dict[str, str]:
    """WordNet id -> human-readable class name.

    Parameters
    ----------
    path : path | None
        A YAML mapping ``wnid: name``; None reads the shipped map of the 40
        EEG-ImageNet classes.
    """
    import yaml

    if path is None:
        from neuroimagen.stream.config import shipped_config_path

        p = shipped_config_path(CLASS_NAMES_FILE)
    else:
        p = require_file(path, "class-name file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DatasetFileError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(data, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise DatasetFileError(f"{p}: expected a mapping of class id -> name (strings)")
    return dict(data)


def load_captions_json(path: str | Path) -> dict[str, str]:
    """Read a JSON object mapping image stem (e.g. ``n02951358_31190``) -> caption."""
    p = require_file(path, "captions file")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetFileError(f"{p}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DatasetFileError(f"{p}: expected a JSON object image stem -> caption, got {type(data).__name__}")
    bad = [k for k, v in data.items() if not isinstance(v, str)]
    if bad:
        raise DatasetFileError(f"{p}: caption for {bad[0]!r} is not a string")
    return data


class Captioner:
    """Caption for an image: precomputed if a captions file is given, else a class-name template.

    Parameters
    ----------
    template : str
        Format string with ``{class_name}`` (used when no captions file is given).
    class_names : mapping | None
        Class id -> name; None: the shipped EEG-ImageNet map. Ids missing from
        it are captioned with the id itself (logged once per id).
    captions_path : path | None
        JSON image stem -> caption (e.g. BLIP captions computed elsewhere).
        When given, every image asked for must have a caption.
    """

    def __init__(
        self,
        template: str = DEFAULT_TEMPLATE,
        class_names: Mapping[str, str] | None = None,
        captions_path: str | Path | None = None,
    ) -> None:
        if "{class_name}" not in template:
            raise ValueError(f"caption template {template!r} must contain {{class_name}}")
        self.template = template
        self.class_names = dict(load_class_names() if class_names is None else class_names)
        self.captions_path = Path(captions_path) if captions_path is not None else None
        self.captions = load_captions_json(captions_path) if captions_path is not None else None
        self._warned: set[str] = set()

    def class_name(self, class_id: str) -> str:
        name = self.class_names.get(class_id)
        if name is None:
            if class_id not in self._warned:
                self._warned.add(class_id)
                log.warning("no class name for %r; captions use the id itself", class_id)
            return class_id
        return name

    def check(self, image_ids: Iterable[str]) -> None:
        """Fail now, listing them, if a captions file lacks any of ``image_ids``."""
        if self.captions is None:
            return
        missing = sorted({i for i in image_ids if i not in self.captions})
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise DatasetFileError(
                f"{self.captions_path}: no caption for {len(missing)} image(s): {shown} "
                f"({len(self.captions)} captions in the file)"
            )

    def __call__(self, image_id: str, class_id: str) -> str:
        """Caption of image ``image_id`` (a stem) of class ``class_id`` (a WordNet id)."""
        if self.captions is not None:
            try:
                return self.captions[image_id]
            except KeyError:
                raise DatasetFileError(
                    f"{self.captions_path}: no caption for image {image_id!r}"
                ) from None
        return self.template.format(class_name=self.class_name(class_id))
