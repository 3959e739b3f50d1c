"""The naming vocabulary: modalities, each with its conditions, and the prompt templates.

A vocabulary file is JSON::

    {
      "mode": "extend",                      # or "replace"; default "extend"
      "templates": ["this is an image of {}"],   # optional; replaces the templates
      "modalities": [
        {"name": "chest X-ray",
         "descriptions": ["a frontal chest radiograph"],     # optional
         "conditions": ["normal",
                        {"name": "pneumonia",
                         "descriptions": ["patchy consolidation in the lungs"],
                         "aliases": ["pna"]}]}   # optional; other names users give it
      ]
    }

``"extend"`` adds the file's modalities to the built-in ones; a modality already there
(same name, ignoring case) gains the new conditions and descriptions. ``"replace"`` uses
the file alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

BUILTIN = "vocabulary.json"
DEFAULT_TEMPLATES = ("this is an image of {}", "{} presented in image", "a photo of {}")
_FORBIDDEN = (":", ";")  # they separate entries of the ``top3`` column


@dataclass(frozen=True)
class Label:
    """One name with the optional sentences that describe it (averaged with the templates)."""

    name: str
    descriptions: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    """Other names users give the label (abbreviations such as "mel"), for matching only."""


@dataclass(frozen=True)
class Modality:
    """A modality label and the condition labels that belong to it."""

    label: Label
    conditions: tuple[Label, ...] = ()

    @property
    def name(self) -> str:
        return self.label.name


@dataclass(frozen=True)
class Vocabulary:
    """Modalities with their conditions, and the templates that turn a name into prompts."""

    modalities: tuple[Modality, ...]
    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    source: str = field(default="built-in", compare=False)

    def modality(self, name: str) -> Modality:
        """The modality called ``name`` (ignoring case)."""
        for modality in self.modalities:
            if modality.name.lower() == name.lower():
                return modality
        raise KeyError(name)

    def all_conditions(self) -> list[tuple[Modality, Label]]:
        """Every (modality, condition) pair, in file order."""
        return [(m, c) for m in self.modalities for c in m.conditions]


def load_vocabulary(path: Path | str | None = None) -> Vocabulary:
    """The built-in vocabulary, extended or replaced by the JSON file at ``path``.

    Parameters
    ----------
    path : Path, str or None
        A user vocabulary file (see the module docstring); ``None`` gives the built-in one.

    Returns
    -------
    Vocabulary

    Raises
    ------
    ValueError
        If the file is malformed: a missing name, a bad mode, a template without ``{}``,
        or a name containing ``:`` or ``;``.
    """
    builtin = parse_vocabulary(_builtin_data(), source="built-in")
    if path is None:
        return builtin
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"Vocabulary {path} is not valid JSON: {error}") from error
    user = parse_vocabulary(data, source=str(path))
    mode = data.get("mode", "extend") if isinstance(data, dict) else "extend"
    if mode == "replace":
        return user
    if mode != "extend":
        raise ValueError(f"Vocabulary {path}: mode must be 'extend' or 'replace', not {mode!r}")
    templates = user.templates if "templates" in data else builtin.templates
    merged = merge(builtin, user)
    return replace(merged, templates=templates, source=f"built-in + {path}")


def parse_vocabulary(data: Any, source: str = "") -> Vocabulary:
    """Build a :class:`Vocabulary` from decoded JSON (see the module docstring)."""
    if not isinstance(data, dict) or not isinstance(data.get("modalities"), list):
        raise ValueError(f"Vocabulary {source}: expected an object with a 'modalities' list")
    templates = tuple(data.get("templates") or DEFAULT_TEMPLATES)
    for template in templates:
        if not isinstance(template, str) or "{}" not in template:
            raise ValueError(f"Vocabulary {source}: template {template!r} needs a '{{}}'")
    modalities = tuple(_parse_modality(entry, source) for entry in data["modalities"])
    if not modalities:
        raise ValueError(f"Vocabulary {source}: no modality given")
    return Vocabulary(modalities=modalities, templates=templates, source=source)


def merge(base: Vocabulary, extra: Vocabulary) -> Vocabulary:
    """``base`` with ``extra``'s modalities added, or merged into same-named ones."""
    modalities = list(base.modalities)
    index = {m.name.lower(): i for i, m in enumerate(modalities)}
    for modality in extra.modalities:
        key = modality.name.lower()
        if key in index:
            modalities[index[key]] = _merge_modality(modalities[index[key]], modality)
        else:
            index[key] = len(modalities)
            modalities.append(modality)
    return Vocabulary(modalities=tuple(modalities), templates=base.templates, source=base.source)


def _merge_modality(old: Modality, new: Modality) -> Modality:
    conditions = {c.name.lower(): c for c in old.conditions}
    for condition in new.conditions:
        key = condition.name.lower()
        known = conditions.get(key)
        conditions[key] = _merge_label(known, condition) if known else condition
    return Modality(label=_merge_label(old.label, new.label), conditions=tuple(conditions.values()))


def _merge_label(old: Label, new: Label) -> Label:
    extra = tuple(d for d in new.descriptions if d not in old.descriptions)
    aliases = tuple(a for a in new.aliases if a not in old.aliases)
    return Label(old.name, old.descriptions + extra, old.aliases + aliases)


def _parse_modality(entry: Any, source: str) -> Modality:
    if not isinstance(entry, dict):
        raise ValueError(f"Vocabulary {source}: each modality must be an object with a 'name'")
    label = _parse_label(entry, source)
    conditions = tuple(_parse_label(item, source) for item in entry.get("conditions", []))
    names = [c.name.lower() for c in conditions]
    if len(set(names)) != len(names):
        raise ValueError(f"Vocabulary {source}: repeated condition in {label.name!r}")
    return Modality(label=label, conditions=conditions)


def _parse_label(entry: Any, source: str) -> Label:
    if isinstance(entry, str):
        entry = {"name": entry}
    name = entry.get("name") if isinstance(entry, dict) else None
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"Vocabulary {source}: every label needs a non-empty 'name'")
    if any(mark in name for mark in _FORBIDDEN):
        raise ValueError(f"Vocabulary {source}: name {name!r} must not contain ':' or ';'")
    descriptions = _strings(entry.get("descriptions", []))
    aliases = _strings(entry.get("aliases", []))
    return Label(name=name.strip(), descriptions=descriptions, aliases=aliases)


def _strings(value: Any) -> tuple[str, ...]:
    """A JSON string or list of strings as a tuple."""
    return (str(value),) if isinstance(value, str) else tuple(str(v) for v in value)


def _builtin_data() -> dict[str, Any]:
    text = resources.files("medsort.name").joinpath(BUILTIN).read_text(encoding="utf-8")
    return json.loads(text)
