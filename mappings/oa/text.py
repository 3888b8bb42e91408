"""Shared pieces of the OA texts: languages, money written per currency, tiny HTML escaping."""

from __future__ import annotations

import html
from decimal import Decimal
from typing import Literal

from schemas.canonical import minor_units, round_money

Language = Literal["en", "zh"]

#: Currency names in Chinese for the common ones; other codes are written as the code.
_ZH_CURRENCY = {"CNY": "元", "EUR": "欧元", "USD": "美元", "JPY": "日元", "GBP": "英镑",
                "HKD": "港元", "CHF": "瑞士法郎"}


def money(amount: Decimal, currency: str, language: Language) -> str:
    """An amount as people read it: grouped thousands, the currency's own decimals.

    en: "EUR 12,345.60", "JPY 1,200"; zh: "12,345.60 欧元", "1,200 日元", "9.50 KWD".
    """
    places = minor_units(currency)
    figure = f"{round_money(amount, currency):,.{places}f}"
    if language == "zh":
        return f"{figure} {_ZH_CURRENCY.get(currency, currency)}"
    return f"{currency} {figure}"


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)
