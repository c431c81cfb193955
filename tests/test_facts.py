"""The claim checker's fact-bearing parts, on generated pairs with exact expectations."""

from __future__ import annotations

import itertools
import random

import pytest

from pilothouse_guardrails.facts import figures, findings

PRODUCTS = ["Helio 30", "Kestrel 2", "Orca 15"]
COLOURS = ["red", "blue", "moss green", "slate grey", "black"]
NUMBERS = {2: "two", 3: "three", 5: "five", 6: "six", 10: "ten", 12: "twelve"}
UNITS = ["year", "hour", "week"]


def _sheet(product: str, colour: str, n: int, unit: str, price: int) -> str:
    return (f"The {product} ships in {colour}, comes with a {NUMBERS[n]}-{unit} warranty"
            f" and costs {price} euros.")  # fmt: skip


CASES = list(itertools.product(PRODUCTS, COLOURS, NUMBERS, UNITS, [79, 189, 1200]))
SAMPLE = random.Random(11).sample(CASES, 60)


def _parts(claim: str, evidence: str) -> list[str]:
    return sorted({f.part for f in findings(claim, evidence)})


@pytest.mark.parametrize(("product", "colour", "n", "unit", "price"), SAMPLE)
def test_a_sentence_supports_itself_and_its_rewordings(product, colour, n, unit, price):
    evidence = _sheet(product, colour, n, unit, price)
    assert _parts(evidence, evidence) == []
    # the same facts in another order and other words
    reworded = f"It costs {price} euros; the {product} has a {NUMBERS[n]}-{unit} guarantee."
    assert _parts(reworded, evidence) == []
    assert _parts(f"The {product} comes in {colour}.", evidence) == []


@pytest.mark.parametrize(("product", "colour", "n", "unit", "price"), SAMPLE)
def test_each_planted_change_fails_on_its_own_part(product, colour, n, unit, price):
    evidence = _sheet(product, colour, n, unit, price)
    draw = random.Random(f"{product}{colour}{n}{unit}{price}")
    name, code = product.split()
    # a number the sheet has nowhere (the product's own number is a figure of it too)
    other_n = draw.choice([m for m in NUMBERS if m not in (n, int(code))])
    as_word = f"The {product} comes with a {NUMBERS[other_n]}-{unit} warranty."
    as_digits = f"The {product} comes with a {other_n}-{unit} warranty."
    other_price = f"The {product} costs {price + draw.choice([10, 50, 100])} euros."
    assert _parts(as_word, evidence) == ["figure"]
    assert _parts(as_digits, evidence) == ["figure"]
    assert _parts(other_price, evidence) == ["figure"]
    other_colour = draw.choice([c for c in ["orange", "purple", "white"] if c not in colour])
    assert _parts(f"The {product} ships in {other_colour}.", evidence) == ["attribute"]
    assert _parts(f"The {name} {int(code) + 7} ships in {colour}.", evidence) == ["figure"]
    assert _parts(f"The Tern {code} ships in {colour}.", evidence) == ["name"]
    assert _parts(f"The {product} does not ship in {colour}.", evidence) == ["polarity"]
    added = f"The {product} ships in {colour}, and it won a design award from the jury."
    assert _parts(added, evidence) == ["clause"]


def test_negations_and_antonyms_in_either_direction():
    evidence = "The panel must not be folded: it is flexible but not foldable."
    assert _parts("The panel can be folded.", evidence) == ["polarity"]
    assert _parts("The panel must not be folded.", evidence) == []
    pocket = "The panel is rated IP54, so rain does not harm it; the pocket is removable."
    assert _parts("The pocket is not removable.", pocket) == ["polarity"]
    assert _parts("The pocket is fixed.", pocket) == ["polarity"]
    assert _parts("The pocket is removable.", pocket) == []
    # a negation in another clause of the evidence says nothing about this one
    assert _parts("The panel is rated IP54.", pocket) == []
    assert _parts("The panel is rated IP67.", pocket) == ["code"]


def test_comparisons_against_the_figures_the_evidence_gives():
    evidence = "Solar accessories grew 14 percent in 2025, while plain daypacks grew 3 percent."
    assert _parts("Solar accessories grew faster than plain daypacks.", evidence) == []
    assert _parts("Plain daypacks grew faster than solar accessories.", evidence) == ["comparison"]
    assert _parts("Solar accessories grew more slowly than plain daypacks.", evidence) == [
        "comparison"
    ]
    stated = "Buyers trust reviews more than adverts."
    assert _parts("Buyers trust reviews less than adverts.", stated) == ["comparison"]


def test_swapped_objects_and_attributes_that_are_there_but_not_together():
    channels = "Two thirds of day hikers discover gear through video reviews and hiking forums."
    assert _parts("Day hikers discover gear through magazines and podcasts.", channels) == [
        "attribute"
    ]
    colours = "The Helio 30 weighs 1.4 kg and ships in slate grey and moss green."
    assert _parts("It ships in moss grey.", colours) == ["attribute"]
    assert _parts("It ships in moss green and slate grey.", colours) == []


def test_figures_are_read_as_numbers_however_they_are_written():
    values = [v for v, _ in figures("42,000 euros, 1.4 kg, 3k units, five-year, six to eight")]
    assert values == [42000, 1.4, 3000, 5, 6, 8]
    # "one" is a figure before a unit only, elsewhere a pronoun
    assert [v for v, _ in figures("one of the best, a one-year plan, one hour")] == [1, 1]


def test_ranks_count_where_the_evidence_ranks():
    evidence = "Weight is the second reason hikers give for buying new gear."
    assert _parts("Weight is the third reason hikers give for buying gear.", evidence) == ["figure"]
    assert _parts("Weight is the second reason hikers give for buying gear.", evidence) == []
    # "first" where the evidence ranks nothing is not a figure
    assert (
        _parts("At first, hikers buy gear for its weight.", "Hikers buy gear for its weight.") == []
    )
