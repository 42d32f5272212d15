"""Model cards: each ONNX cloud or shadow model comes with a small JSON that says what it
expects (bands, scaling, resolution, chip size), what it returns, and how its outputs become
classes (mask_rule: argmax for softmax models such as ukis-csmask, thresholds for FarmVibes'
models). The code never hard-codes a model; a wrong model is refused with the reason instead of
producing garbage."""

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from .errors import InputError

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
OUTPUT_TYPES = ("softmax", "sigmoid")
MASK_RULES = ("argmax", "threshold")
# FarmVibes' merge_cloud_masks_simple thresholds, tuned for its own models; also the rule for
# probabilities whose model is not known (no card recorded in the raster).
FARMVIBES_THRESHOLDS = {"cloud": 0.3, "shadow": 0.2}


@dataclass(frozen=True)
class ModelCard:
    id: str
    name: str
    weights: dict
    bands: Tuple[str, ...]
    reflectance: bool  # inputs as reflectance (0-1); False: as DN (reflectance x 10000); then mean/std or factor
    mean: Optional[Tuple[float, ...]]
    std: Optional[Tuple[float, ...]]
    factor: float
    native_resolution: float
    chip_size: int
    overlap: float
    output: dict
    provides: Tuple[str, ...]
    default_for: Tuple[str, ...]
    licence: str
    source: str
    card_path: Path
    # How the outputs become classes: {"type": "argmax"} (the most probable of the softmax
    # classes) or {"type": "threshold", "cloud": 0.3, ...} (probability above the value).
    mask_rule: dict = None

    def rule(self, target):
        """("argmax", None) or ("threshold", value) for `target` (cloud or shadow)."""
        if self.mask_rule["type"] == "argmax":
            return "argmax", None
        return "threshold", float(self.mask_rule[target])

    def classes(self):
        """The softmax class names ('' for unnamed ones); () for a sigmoid output."""
        if self.output.get("type") != "softmax":
            return ()
        names = list(self.output.get("classes", ()))
        count = max([len(names)] + [self.output[f"{t}_class"] + 1 for t in self.provides])
        return tuple(names + [""] * (count - len(names)))

    def scale(self, chips):
        """float32 chips (N, bands, H, W) in model input units, in place where possible."""
        if self.mean is not None:
            chips -= np.asarray(self.mean, dtype=np.float32)[None, :, None, None]
            chips /= np.asarray(self.std, dtype=np.float32)[None, :, None, None]
        elif self.factor != 1.0:
            chips *= np.float32(self.factor)
        return chips

    def weights_path(self):
        """Where the ONNX file is; an InputError says where to put it when it is missing."""
        if "package" in self.weights:
            spec = importlib.util.find_spec(self.weights["package"])
            if spec is None or not spec.submodule_search_locations:
                raise InputError(
                    f"Model '{self.id}' needs the Python package '{self.weights['package']}'. Install it with "
                    f"python3 -m pip install {self.weights['package'].replace('_', '-')}")
            path = Path(list(spec.submodule_search_locations)[0]) / self.weights["file"]
        elif "path" in self.weights:
            path = Path(self.weights["path"]).expanduser()
        else:
            path = self.card_path.parent / self.weights["file"]
        if not path.is_file():
            raise InputError(
                f"The weights of model '{self.id}' are missing: {path} does not exist. Put "
                f"{path.name} in {path.parent}, or choose another model. ({self.source})")
        return path


def load_card(path):
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"Cannot read the model card {path}: {err}") from err
    try:
        scaling, output = raw["scaling"], raw["output"]
        card = ModelCard(
            id=raw["id"], name=raw.get("name", raw["id"]), weights=raw["weights"], bands=tuple(raw["bands"]),
            reflectance=bool(scaling.get("reflectance", False)),
            mean=tuple(scaling["mean"]) if "mean" in scaling else None,
            std=tuple(scaling["std"]) if "std" in scaling else None,
            factor=float(scaling.get("factor", 1.0)), native_resolution=float(raw.get("native_resolution", 10)),
            chip_size=int(raw["chip_size"]), overlap=float(raw.get("overlap", 0.25)), output=output,
            provides=tuple(raw["provides"]), default_for=tuple(raw.get("default_for", ())),
            licence=raw.get("licence", "unknown"), source=raw.get("source", ""), card_path=path,
            mask_rule=dict(raw.get("mask_rule") or _default_mask_rule(output, raw["provides"])))
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"The model card {path} lacks or mangles a field: {err!r}") from err
    _check_card(card)
    return card


def _default_mask_rule(output, provides):
    """For cards written before mask_rule existed: the natural decision of the output type, the
    most probable class of a softmax, or 0.5 for a sigmoid."""
    if output.get("type") == "softmax":
        return {"type": "argmax"}
    return dict({"type": "threshold"}, **{target: 0.5 for target in provides})


def _check_card(card):
    kind = card.output.get("type")
    if kind not in OUTPUT_TYPES:
        raise InputError(f"Model card {card.card_path}: unknown output type {kind!r}; use one of {OUTPUT_TYPES}.")
    for target in card.provides:
        if target not in ("cloud", "shadow"):
            raise InputError(f"Model card {card.card_path}: 'provides' may hold 'cloud' and 'shadow', not {target!r}.")
        if kind == "softmax" and f"{target}_class" not in card.output:
            raise InputError(f"Model card {card.card_path}: a softmax model providing {target} needs "
                             f"output.{target}_class.")
    if card.mean is not None and not (len(card.mean) == len(card.std or ()) == len(card.bands)):
        raise InputError(f"Model card {card.card_path}: mean and std need one value per band.")
    if card.chip_size < 16:
        raise InputError(f"Model card {card.card_path}: chip_size {card.chip_size} is too small.")
    _check_mask_rule(card, kind)


def _check_mask_rule(card, kind):
    rule = card.mask_rule
    if rule.get("type") not in MASK_RULES:
        raise InputError(f"Model card {card.card_path}: unknown mask_rule type {rule.get('type')!r}; use one of "
                         f"{MASK_RULES}.")
    if rule["type"] == "argmax" and kind != "softmax":
        raise InputError(f"Model card {card.card_path}: mask_rule 'argmax' needs a softmax output (the most probable "
                         f"class); a {kind} output needs a threshold per target, e.g. "
                         '{"type": "threshold", "cloud": 0.5}.')
    if rule["type"] == "threshold":
        for target in card.provides:
            value = rule.get(target)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise InputError(f"Model card {card.card_path}: mask_rule 'threshold' needs a probability between "
                                 f"0 and 1 for {target}, got {value!r}.")


def installed_cards(folder=MODELS_DIR):
    """Every card in models/, sorted: defaults first, then by id."""
    cards = [load_card(path) for path in sorted(Path(folder).glob("*.json"))]
    return sorted(cards, key=lambda card: (not card.default_for, card.id))


def cards_for(target, folder=MODELS_DIR):
    return [card for card in installed_cards(folder) if target in card.provides]


def default_card(target, folder=MODELS_DIR):
    return next(card for card in cards_for(target, folder) if target in card.default_for)


# GeoTIFF tags a probability raster carries, so the mask step knows its model and rule.
TAG_TARGET, TAG_MODEL, TAG_RULE, TAG_THRESHOLD, TAG_CLASSES = (
    "S2MASKS_TARGET", "S2MASKS_MODEL", "S2MASKS_MASK_RULE", "S2MASKS_THRESHOLD", "S2MASKS_CLASSES")


def probability_tags(card, target):
    """The tags of `target`'s probability raster made with `card`."""
    kind, value = card.rule(target)
    tags = {TAG_TARGET: target, TAG_MODEL: card.id, TAG_RULE: kind, TAG_CLASSES: ",".join(card.classes())}
    if kind == "threshold":
        tags[TAG_THRESHOLD] = repr(value)
    return tags
