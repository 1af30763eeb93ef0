"""The supernet checkpoint, typed: :class:`SupernetCheckpoint` and its :class:`Recipe`.

On disk a checkpoint is ``torch.save`` of a plain dict (``weights_only`` loading allows
nothing else), written atomically: the format name and version, the space spec, the recipe
as JSON, the few-shot split, every bank, the optimizer (until training is done), the
epoch/step counters and every random state. In code it is a :class:`SupernetCheckpoint`:
:func:`load_checkpoint` checks the format and version and builds one;
:meth:`SupernetCheckpoint.to_payload` is what :func:`save_checkpoint` writes.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from cellblock.core.errors import ConfigError
from cellblock.evaluators.training import TrainConfig
from cellblock.search_spaces.api import SearchSpace

FORMAT = "cellblock-supernet"
VERSION = 4
#: What changed in each format version (for the error on an old checkpoint).
VERSION_NOTES = {3: "before few-shot splits (one bank)"}
#: Recipe fields that must match when a checkpoint is resumed.
RECIPE_KEYS = ("epochs", "batch_size", "lr", "momentum", "nesterov", "weight_decay",
               "label_smoothing", "warmup_epochs", "seed", "sampling", "sharing", "split",
               "split_groups", "split_after")


def plain(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples become lists)."""
    return json.loads(json.dumps(value))


def train_config_of(recipe: Recipe, **changes: Any) -> TrainConfig:
    """The :class:`TrainConfig` of a recipe, with ``changes``."""
    return dataclasses.replace(recipe.train, **changes)


@dataclass(frozen=True)
class Recipe:
    """How a supernet is trained: the stand-alone recipe, the sampling and the split.

    Attributes:
        train: The training recipe (epochs, batch size, learning rate, seed...).
        sampling: The sampling strategy (:data:`~cellblock.supernet.sampler.ARCH_SAMPLERS`).
        sharing: How candidate operations share weights (``candidate`` or ``nested``).
        split: The few-shot split's decisions (None: one bank).
        split_groups: Banks after the split (1 without one).
        split_after: Fraction of the steps trained as one supernet before the split.
    """

    train: TrainConfig
    sampling: str
    sharing: str = "candidate"
    split: list[Any] | None = None
    split_groups: int = 1
    split_after: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The flat JSON a checkpoint stores (the training fields, then the supernet's)."""
        return plain({**dataclasses.asdict(self.train), "sampling": self.sampling,
                      "sharing": self.sharing, "split": self.split,
                      "split_groups": self.split_groups, "split_after": self.split_after})

    @classmethod
    def from_json(cls, recipe: dict[str, Any]) -> Recipe:
        """The recipe a checkpoint stored (:meth:`to_json`)."""
        names = {f.name for f in fields(TrainConfig)}
        return cls(TrainConfig(**{k: v for k, v in recipe.items() if k in names}),
                   recipe["sampling"], recipe.get("sharing", "candidate"), recipe.get("split"),
                   int(recipe.get("split_groups", 1)), float(recipe.get("split_after", 0.0)))


@dataclass
class SupernetCheckpoint:
    """A supernet training saved by ``cellblock supernet train`` (complete or partial)."""

    #: The space's spec (name and skeleton), as :meth:`SearchSpace.spec` gives it.
    space: dict[str, Any]
    recipe: Recipe
    #: How ``supernet rank`` loads the data again (a built-in name or a path).
    dataset: str
    #: The validation split the supernet was trained with (None: the dataset's default).
    val_fraction: float | None
    #: Each bank tensor's shape, dimension and parameter count (``ParamBank.describe``).
    bank_entries: dict[str, Any]
    #: The few-shot split (``Split.to_json``), None for one bank.
    split: dict[str, Any] | None
    split_active: bool
    sharing: str
    #: One state dict per bank.
    banks: list[dict[str, Any]]
    #: The optimizer's state until training is done (None after).
    optimizer: dict[str, Any] | None
    scaler: dict[str, Any] | None
    generator: torch.Tensor
    torch_rng: torch.Tensor
    np_rng: dict[str, Any]
    epoch: int
    step: int
    #: Children trained (in all) and per bank after the split.
    children: int
    group_children: list[int]
    #: Training seconds of every session so far.
    train_s: float
    final_loss: float
    #: Whether every epoch was trained.
    done: bool

    def loop_state(self) -> dict[str, Any]:
        """What :meth:`~cellblock.evaluators.loop.TrainLoop.restore` takes."""
        return {"optimizer": self.optimizer, "scaler": self.scaler, "generator": self.generator,
                "torch_rng": self.torch_rng, "step": self.step, "epoch": self.epoch,
                "final_loss": self.final_loss}

    def to_payload(self) -> dict[str, Any]:
        """The plain dict written to disk (with the format name and version)."""
        out = {"format": FORMAT, "version": VERSION}
        out.update({f.name: getattr(self, f.name) for f in fields(self)})
        out["recipe"] = self.recipe.to_json()
        return out

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> SupernetCheckpoint:
        """The checkpoint of a loaded payload (format and version already checked)."""
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in payload and n not in _ADDED_IN_VERSION_4]
        if missing:
            raise ConfigError(f"supernet checkpoint lacks {', '.join(missing)}; it is damaged: "
                              "train it again with 'cellblock supernet train'")
        values = {**_ADDED_IN_VERSION_4, **{n: payload[n] for n in names if n in payload}}
        values["recipe"] = Recipe.from_json(payload["recipe"])
        return cls(**values)


#: Keys that early version-4 checkpoints lack, with the value they meant.
_ADDED_IN_VERSION_4: dict[str, Any] = {"sharing": "candidate", "split_active": True}


def save_checkpoint(path: str | Path, ckpt: SupernetCheckpoint) -> None:
    """Write ``ckpt`` atomically (temporary file in the same folder, fsync, rename)."""
    from cellblock.core.fileio import atomic_save

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(ckpt.to_payload(), path)  # a failed or interrupted write leaves no temp file


def load_checkpoint(path: str | Path) -> SupernetCheckpoint:
    """Read and check a supernet checkpoint.

    Raises:
        ConfigError: if the file is missing, unreadable, corrupt or of another format.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"supernet checkpoint {str(path)!r} not found; train one with "
                          "'cellblock supernet train --out PATH'")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling/zip failure means a corrupt file
        raise ConfigError(
            f"supernet checkpoint {str(path)!r} is corrupt or not a checkpoint "
            f"({type(exc).__name__}); delete it and train again"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ConfigError(f"{str(path)!r} is not a cellblock supernet checkpoint; "
                          "train one with 'cellblock supernet train'")
    if payload.get("version") != VERSION:
        note = VERSION_NOTES.get(payload.get("version"))
        raise ConfigError(f"supernet checkpoint {str(path)!r} has format version "
                          f"{payload.get('version')!r}{f' ({note})' if note else ''}, this "
                          f"cellblock reads {VERSION}; train it again with 'cellblock supernet "
                          "train'")
    return SupernetCheckpoint.from_payload(payload)


def check_space(ckpt: SupernetCheckpoint, space: SearchSpace, path: str | Path) -> None:
    """Raise ConfigError unless ``ckpt`` was trained for ``space`` (same name and skeleton)."""
    want, have = plain(space.spec()), ckpt.space
    if want != have:
        diff = sorted(k for k in set(want["kwargs"]) | set(have["kwargs"])
                      if want["kwargs"].get(k) != have["kwargs"].get(k))
        what = f"space {have['ref']!r}" if want["ref"] != have["ref"] else (
            f"another skeleton (differs in {', '.join(diff)})")
        raise ConfigError(
            f"supernet checkpoint {str(path)!r} was trained for {what}, not for space "
            f"{want['ref']!r} with {want['kwargs']}; use the matching --space/--space-arg or "
            "retrain"
        )


__all__ = ["FORMAT", "RECIPE_KEYS", "VERSION", "Recipe", "SupernetCheckpoint", "check_space",
           "load_checkpoint", "plain", "save_checkpoint", "train_config_of"]
