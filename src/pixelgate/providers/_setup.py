"""What adapters with an open-ended model table share: the table's rows, its settings, the
lookup (table, then any name the provider could know, else a clear error), and the
request's fixed and per-call inputs merged into the body."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from pixelgate.providers.base import (
    Capabilities,
    InvalidRequest,
    ModelInfo,
    Provider,
    ProviderRequest,
    ProviderSettings,
)

__all__ = ["TableModel", "TableProvider", "TableSettings", "merge_input"]

#: an estimate for a model outside the table (most single images cost about this)
DEFAULT_GENERIC_PRICE_USD = Decimal("0.05")


class TableModel(BaseModel):
    """One model of a table: built in, or from ``[providers.X.models]`` in the config."""

    model_config = ConfigDict(extra="forbid")

    price_usd: Decimal = Decimal("0")
    aspect_ratios: tuple[str, ...] = ()
    max_n: int = 1
    output_formats: tuple[str, ...] = ("png",)
    seed: bool = False
    negative_prompt: bool = False
    #: fixed inputs merged into every call of this model
    input: dict[str, Any] = Field(default_factory=dict)
    description: str = ""

    def info(self, name: str, price_usd: Decimal | None = None) -> ModelInfo:
        """The catalog entry of this row (``price_usd`` overrides the per-image price)."""
        caps = Capabilities(
            negative_prompt=self.negative_prompt,
            seed=self.seed,
            aspect_ratios=self.aspect_ratios,
            max_n=self.max_n,
            output_formats=self.output_formats,
        )
        price = self.price_usd if price_usd is None else price_usd
        return ModelInfo(name, caps, price, self.description)


class TableSettings(ProviderSettings):
    """Settings of an adapter that takes any model the provider knows, not just its table."""

    #: accept any model name of the provider's form, with generic capabilities
    allow_any_model: bool = True
    #: price estimate for models outside the table
    generic_price_usd: Decimal = DEFAULT_GENERIC_PRICE_USD


S = TypeVar("S", bound=TableModel)


class TableProvider(Provider, Generic[S]):
    """A provider whose models are a table plus, if allowed, any well-formed name."""

    settings: TableSettings

    @abc.abstractmethod
    def _table(self) -> Mapping[str, S]:
        """The built-in rows overlaid with the configured ones."""

    @abc.abstractmethod
    def _generic(self, name: str) -> S | None:
        """A row for a name outside the table, or None when the name is not of the form."""

    @property
    def models(self) -> dict[str, ModelInfo]:
        return {name: self._info(name, spec) for name, spec in self._table().items()}

    # Both are on every request's path: they look at the table, not at every model's info.
    def offers(self, model: str) -> bool:
        return model in self._table()

    @property
    def default_model(self) -> str:
        return self.settings.default_model or next(iter(self._table()))

    def model_info(self, model: str | None) -> ModelInfo:
        name = model or self.default_model
        return self._info(name, self._spec(name))

    def _info(self, name: str, spec: S) -> ModelInfo:
        return spec.info(name)

    def _spec(self, name: str) -> S:
        spec = self._table().get(name)
        if spec is None and self.settings.allow_any_model:
            spec = self._generic(name)
        if spec is None:
            raise InvalidRequest(f"{self.name}: unknown model {name!r}", provider=self.name)
        return spec


def merge_input(data: dict[str, Any], fixed: dict[str, Any], request: ProviderRequest) -> None:
    """Overlay the model's fixed inputs, then the request's own ``options["input"]``."""
    data.update(fixed)
    extra = request.options.get("input")
    if isinstance(extra, dict):
        data.update(extra)
