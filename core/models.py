"""Model cards: each ONNX cloud or shadow model comes with a small JSON that says what it
expects (bands, scaling, resolution, chip size), what it returns, and how its outputs become
classes (mask_rule: argmax for softmax models such as ukis-csmask, thresholds for FarmVibes'
models). The code never hard-codes a model; a wrong model is refused with the reason instead of
producing garbage.

Cards are read from the plugin's models/ folder and from user folders the caller names (the QGIS
profile's s2masks/models, a folder from the plugin settings): those survive plugin upgrades. A
card whose weights are `{"file": ...}` finds them next to itself or in any of those folders, so
FarmVibes' ONNX files copied into the user folder work with the cards shipped here. A model is
installed when its weights are present; the others are listed with how to install them."""

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Tuple

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
    # Folders also searched for {"file": ...} weights (the user's model folders), first is where to put them.
    search_dirs: Tuple[Path, ...] = ()
    install: str = ""  # where to get the weights when they are not shipped

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
        """Where the ONNX file is; an InputError says how to install it when it is missing."""
        path = self._find_weights()
        if path is None:
            raise InputError(f"The weights of model '{self.id}' are missing. {self.install_hint()}")
        return path

    def installed(self) -> bool:
        """True when the model's ONNX file is present."""
        return self._find_weights() is not None

    def install_hint(self) -> str:
        """How to install the missing weights, in one sentence."""
        if "package" in self.weights:
            package = self.weights["package"].replace("_", "-")
            return (f"They come with the Python package {package}: install it with the plugin's 'Install "
                    f"dependencies' algorithm (or python3 -m pip install {package}).")
        if "path" in self.weights:
            return f"{Path(self.weights['path']).expanduser()} does not exist: fix the card {self.card_path}."
        folder = self.search_dirs[0] if self.search_dirs else self.card_path.parent
        where = f": {self.install}" if self.install else f" ({self.source})" if self.source else ""
        return f"Copy {self.weights['file']} into {folder}{where}."

    def _find_weights(self):
        if "package" in self.weights:
            spec = importlib.util.find_spec(self.weights["package"])
            if spec is None or not spec.submodule_search_locations:
                return None
            candidates = [Path(list(spec.submodule_search_locations)[0]) / self.weights["file"]]
        elif "path" in self.weights:
            candidates = [Path(self.weights["path"]).expanduser()]
        else:
            candidates = [folder / self.weights["file"] for folder in (self.card_path.parent, *self.search_dirs)]
        return next((path for path in candidates if path.is_file()), None)


def load_card(path, search: Iterable = ()) -> ModelCard:
    """The card at `path`; `search`: more folders where its {"file": ...} weights may be."""
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
            mask_rule=dict(raw.get("mask_rule") or _default_mask_rule(output, raw["provides"])),
            search_dirs=tuple(Path(folder).expanduser() for folder in search), install=raw.get("install", ""))
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


@dataclass(frozen=True)
class Catalogue:
    """The cards found: every readable one (defaults first, then by id) and the unreadable ones."""

    cards: Tuple[ModelCard, ...]
    unreadable: Tuple[Tuple[Path, str], ...] = ()

    def installed(self, target=None):
        """The cards whose weights are present (for `target` when given)."""
        return [card for card in self.cards if card.installed() and (target is None or target in card.provides)]

    def missing(self, target=None):
        """The cards whose weights are not present (for `target` when given)."""
        return [card for card in self.cards if not card.installed() and (target is None or target in card.provides)]

    def find(self, card_id):
        """The card with this id, or None."""
        return next((card for card in self.cards if card.id == card_id), None)


def catalogue(folders: Iterable = (), shipped=MODELS_DIR) -> Catalogue:
    """The cards in `shipped` (the plugin's models/) and in the user's `folders` (which need not
    exist); a user card replaces a shipped one of the same id. A user card that cannot be read is
    listed as unreadable instead of stopping everything; a shipped one raises."""
    folders = [Path(folder).expanduser() for folder in folders]
    cards, unreadable = {}, []
    for folder in [Path(shipped)] + folders:
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
            try:
                card = load_card(path, folders)
            except InputError as err:
                if folder == Path(shipped):
                    raise
                unreadable.append((path, str(err)))
                continue
            cards[card.id] = card
    ordered = sorted(cards.values(), key=lambda card: (not card.default_for, card.id))
    return Catalogue(tuple(ordered), tuple(unreadable))


def installed_cards(folders: Iterable = ()):
    """The installed cards (weights present), defaults first, then by id."""
    return catalogue(folders).installed()


def cards_for(target, folders: Iterable = ()):
    """The installed cards that provide `target`."""
    return catalogue(folders).installed(target)


def default_card(target, folders: Iterable = ()):
    """The card marked default for `target` (installed or not)."""
    return next(card for card in catalogue(folders).cards if target in card.default_for)


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
