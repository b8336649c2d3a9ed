"""The networks of the paper's Tables 1 and 2, by name.

>>> model = build("ilt", n_classes=4, fusion="attention")
>>> logits = model(features, lengths)        # (batch, n_mels, frames), (batch,) -> (batch, 4)
>>> same = from_spec(model.spec)             # same architecture; model.state_dict() loads strictly

``MODELS`` maps each name to its network class; ``MODELS[name].Options`` is the options
dataclass (fields, defaults and documentation).
"""

from __future__ import annotations

from typing import Any

from minser.errors import ConfigError
from minser.models.config import BaseOptions, ILTOptions, option_names
from minser.models.networks import NETWORKS, Network

MODELS: dict[str, type[Network]] = {network.name: network for network in NETWORKS}

__all__ = ["MODELS", "Network", "build", "from_spec", "resolve_options"]


def build(name: str, n_classes: int, **options: Any) -> Network:
    """Build network ``name`` for ``n_classes`` classes.

    Args:
        name: one of ``MODELS`` (``cnn``, ``cnn_transformer``, ``cnn_lstm_transformer``,
            ``ilt``, ``cat``, ``cnn_plus_lstm``, ``lstm_transformer``).
        n_classes: number of emotion classes (>= 2).
        **options: fields of ``MODELS[name].Options``; the others keep their defaults.

    Raises:
        ConfigError: unknown name or option, or an invalid value; the message lists the valid ones.
    """
    resolved = resolve_options(name, **options)
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
        raise ConfigError(f"n_classes={n_classes!r} is invalid: give an integer >= 2")
    return MODELS[name](n_classes, resolved)


def resolve_options(name: str, **options: Any) -> BaseOptions:
    """The checked ``MODELS[name].Options`` of ``options`` (the others at their defaults), without building
    the network: a cheap way to validate them early. Raises ConfigError as :func:`build` does."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    network = MODELS[name]
    valid = option_names(network.Options)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"model {name!r} has no option {', '.join(unknown)}; valid options: {', '.join(valid)}")
    return network.Options(**options)


def from_spec(spec: dict[str, Any]) -> Network:
    """Rebuild the network described by ``spec`` (a ``model.spec``, e.g. read back from JSON).

    Raises:
        ConfigError: ``spec`` is not a dict with a string ``name``, ``n_classes`` and a dict ``options``,
            or :func:`build` refuses them.
    """
    if not isinstance(spec, dict) or not {"name", "n_classes", "options"} <= set(spec):
        raise ConfigError(f"a model spec is a dict with keys name, n_classes, options; got {spec!r}")
    # Checked here: a list name or a non-dict options raised raw TypeErrors (unhashable, "** must be a mapping").
    if not isinstance(spec["name"], str):
        raise ConfigError(f"a model spec's name is a string, one of {', '.join(MODELS)}; got name={spec['name']!r}")
    options = spec["options"]
    if not isinstance(options, dict) or not all(isinstance(key, str) for key in options):
        raise ConfigError("a model spec's options are a dict of option names to values ({} for the defaults); "
                          f"got options={options!r}")
    if spec["name"] == "ilt" and options.get("fusion", ILTOptions.fusion) != "plus":
        # Earlier versions recorded an alpha that the other fusions ignored, which ILTOptions now refuses: it never
        # shaped the weights, so it is dropped rather than the checkpoint refused.
        options = {key: value for key, value in options.items() if key != "alpha"}
    return build(spec["name"], spec["n_classes"], **options)
