"""Calibrate a bundle to a new subject (placeholder, filled below)."""

from __future__ import annotations

from collections.abc import Sequence


class CalibrationError(ValueError):
    """The session cannot calibrate the bundle; the message says why."""


def class_map(classes: Sequence[str], class_names: Sequence[str], manifest) -> dict[str, int]:
    """Stimulus class id -> the bundle's class index (by id or readable name).

    Raises
    ------
    CalibrationError
        A class the bundle has no targets (class embeddings) for, naming each.
    """
    known = {n: i for i, n in enumerate(manifest.class_names)}
    out, missing = {}, []
    for cid, name in zip(classes, class_names, strict=True):
        k = known.get(cid, known.get(name))
        if k is None:
            missing.append(f"{cid} ({name})" if name != cid else cid)
        else:
            out[cid] = k
    if missing:
        raise CalibrationError(
            f"bundle {manifest.name!r} has no targets for {len(missing)} class(es) shown: {', '.join(missing[:10])}"
            f"{' ...' if len(missing) > 10 else ''}; its classes: {', '.join(list(manifest.class_names)[:10])}"
            f"{' ...' if len(manifest.class_names) > 10 else ''} (show only those, or calibrate a bundle "
            "trained with targets for these)"
        )
    return out
