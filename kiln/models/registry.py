"""Model registry: small factory functions looked up by name (timm's @register_model idea)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from kiln.core.errors import KilnError
from kiln.core.user_code import names_code

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    MODELS[fn.__name__] = fn
    return fn


def resolve(name: str) -> Callable[..., nn.Module]:
    """A registered name, or `package.module:Name`: the user's own nn.Module class or model factory (see
    kiln.core.user_code for what is accepted)."""
    from kiln.models.hub import factory, library_of

    if library_of(name):  # torchvision:NAME, timm:NAME — before the package.module:Class resolver
        return factory(name)
    if names_code(name):
        from kiln.core.user_code import resolve as resolve_user

        return resolve_user("model.name", name, nn.Module, functions=True)
    if name not in MODELS:
        from kiln.core.model_names import unknown_model

        raise KilnError(unknown_model(name))
    return MODELS[name]


def check_args(name: str, factory: Callable[..., nn.Module], args: dict[str, Any]) -> dict[str, Any]:
    """The factory's parameters, after refusing model.args it does not take (with a did-you-mean for each)."""
    params = dict(inspect.signature(factory).parameters)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in args if k not in params and not takes_any]
    if unknown:
        from kiln.core.model_names import unknown_args

        raise KilnError(unknown_args(name, unknown, list(params)))
    return params


def construct(name: str, args: dict[str, Any], data_args: dict[str, Any]) -> nn.Module:
    """Call the factory with the user's args plus the data-derived ones it accepts; check args first."""
    factory = resolve(name)
    params = check_args(name, factory, args)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in data_args.items() if k in params or takes_any}
    kwargs.update(args)
    try:
        model = factory(**kwargs)
    except KilnError:  # the factory said what is wrong itself (a KilnError is a ValueError too)
        raise
    except (TypeError, ValueError, AssertionError) as e:  # torchvision asserts some shapes (a ViT's patch grid)
        raise KilnError(f"model '{name}' could not be built from model.args={args}: {e or type(e).__name__}") from None
    if not isinstance(model, nn.Module):
        raise KilnError(f"model '{name}' returned {type(model).__name__}, not a torch.nn.Module")
    return model
