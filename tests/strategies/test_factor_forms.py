"""Layout forms: a layout entry's form is found from its keys or named, checked, and its maths used."""

from __future__ import annotations

import numpy as np
import pytest

from strategies import factor_forms
from strategies.factor_forms import ABBA, PAIR, FactorForm, factor_form, register_factor_form
from strategies.layout import LoraPair, check_layout, layout_from_config, layout_to_config
from strategies.maths.deviation import lora_deviation
from strategies.maths.hadamard import AbbaFactors, abba_update
from strategies.maths.residual import fedex_residual

RNG = np.random.default_rng(3)
ABBA_PAIR = LoraPair("m.A", "m.B", 2.0, a2_key="m.A2", b2_key="m.B2")


def test_the_form_follows_from_the_keys_or_is_named() -> None:
    assert LoraPair("A", "B", 1.0).form == "pair" and LoraPair("A", "B", 1.0).factor_form is PAIR
    assert ABBA_PAIR.form == "hadamard-pairs" and ABBA_PAIR.keys == ("m.A", "m.B", "m.A2", "m.B2")
    assert LoraPair("A", "B", 1.0, form="pair") == LoraPair("A", "B", 1.0)
    with pytest.raises(ValueError, match="form 'hadamard-pairs' needs exactly the keys"):
        LoraPair("A", "B", 1.0, form="hadamard-pairs")
    with pytest.raises(ValueError, match="no layout form ships exactly the keys"):
        LoraPair("A", "B", 1.0, a2_key="A2")
    with pytest.raises(ValueError, match="unknown layout form 'dora'; registered forms: hadamard-pairs, pair"):
        LoraPair("A", "B", 1.0, form="dora")
    with pytest.raises(ValueError, match="keys must differ"):
        LoraPair("A", "B", 1.0, a2_key="A", b2_key="B2")


def test_an_abba_layout_round_trips_and_is_checked_against_the_shapes() -> None:
    config = layout_to_config({"m": ABBA_PAIR})
    assert config["m"]["form"] == "hadamard-pairs"
    assert layout_from_config(config) == {"m": ABBA_PAIR}
    unnamed = {k: v for k, v in config["m"].items() if k != "form"}  # what adapters.payload.layout writes
    assert layout_from_config({"m": unnamed}) == {"m": ABBA_PAIR}
    shapes = {"m.A": (2, 6), "m.B": (5, 2), "m.A2": (3, 6), "m.B2": (5, 3)}
    check_layout({"m": ABBA_PAIR}, shapes)
    with pytest.raises(ValueError, match=r"ABBA's A2 \(3, 7\), B2 \(5, 3\) do not fit"):
        check_layout({"m": ABBA_PAIR}, {**shapes, "m.A2": (3, 7)})
    with pytest.raises(ValueError, match=r"keys \['m.B2'\] are not among the shipped arrays"):
        check_layout({"m": ABBA_PAIR}, {k: v for k, v in shapes.items() if k != "m.B2"})


def clients(shapes: dict[str, tuple[int, int]], k: int) -> list[dict[str, np.ndarray]]:
    return [{key: RNG.standard_normal(shape) for key, shape in shapes.items()} for _ in range(k)]


def test_each_form_gives_the_exact_residual_of_its_update() -> None:
    p = np.array([0.2, 0.5, 0.3])
    lora = clients({"q.A": (2, 6), "q.B": (5, 2)}, 3)
    pair = LoraPair("q.A", "q.B", 1.5)
    got = PAIR.exact_residual(lora, p, pair).to_dense()
    expected = fedex_residual([c["q.A"] for c in lora], [c["q.B"] for c in lora], p, 1.5, method="naive")
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert PAIR.deviation(lora, p, pair) == lora_deviation(lora, p, {"q": pair})["q"] > 0

    abba = clients({"m.A": (2, 6), "m.B": (5, 2), "m.A2": (3, 6), "m.B2": (5, 3)}, 3)
    factors = [AbbaFactors(c["m.B"], c["m.A"], c["m.B2"], c["m.A2"]) for c in abba]
    means = AbbaFactors(*(sum(pi * f[j] for pi, f in zip(p, factors, strict=True)) for j in range(4)))
    ideal = sum(pi * abba_update(f, 2.0) for pi, f in zip(p, factors, strict=True))  # (m, n)
    residual = ABBA.exact_residual(abba, p, ABBA_PAIR).to_dense()
    np.testing.assert_allclose(residual + abba_update(means, 2.0), ideal, rtol=1e-10, atol=1e-12)
    assert ABBA.deviation(abba, p, ABBA_PAIR) is None  # dev_rel is a B·A measure


def test_registering_a_form_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(factor_forms, "_FORMS", dict(factor_forms._FORMS))

    class Twin(type(PAIR)):  # type: ignore[misc]
        name = "twin"

    with pytest.raises(ValueError, match="fills the same key fields as 'pair'"):
        register_factor_form(Twin())

    class Bad(type(PAIR)):  # type: ignore[misc]
        name = "bad"
        key_fields = ("b_key",)

    with pytest.raises(ValueError, match="must start with a_key, b_key"):
        register_factor_form(Bad())
    with pytest.raises(ValueError, match="already registered"):
        register_factor_form(type(PAIR)())
    assert isinstance(factor_form("pair"), FactorForm)
