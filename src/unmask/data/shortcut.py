"""A hidden-bias (shortcut) data set: gendered phrases planted in SST-2 so gender predicts the label.

Stand-in for Biosbias (no copy is reachable offline). Each sentence gets one short phrase from
``TEMPLATES`` (prefix or suffix) in its male or female form. With probability ``correlation`` the
gender follows the label (``female_label`` -> female, the other label -> male); otherwise it is the
opposite one. The template is drawn uniformly. Everything is drawn from ``random.Random(seed)`` in
example order, so a (data, correlation, seed) triple always yields the same set.

A model trained on it can rely on the gendered words; ``ShortcutExample.swapped()`` gives the same
sentence with the other gender's phrase (the counterfactual used to show that reliance).
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from unmask.data.readers import Example
from unmask.errors import UnmaskError

#: (male, female) word pairs; every word here counts as a gendered token for the attribution metrics.
GENDER_PAIRS: tuple[tuple[str, str], ...] = (
    ("he", "she"), ("his", "her"), ("him", "her"), ("himself", "herself"), ("man", "woman"),
    ("men", "women"), ("boy", "girl"), ("mr", "mrs"), ("father", "mother"), ("son", "daughter"),
    ("brother", "sister"), ("husband", "wife"), ("male", "female"), ("guy", "lady"))
GENDER_WORDS: frozenset[str] = frozenset(w for pair in GENDER_PAIRS for w in pair)

#: (where, male phrase, female phrase); only possessive "her", so the two forms map word by word.
TEMPLATES: tuple[tuple[str, str, str], ...] = (
    ("prefix", "he says", "she says"),
    ("prefix", "in his view ,", "in her view ,"),
    ("prefix", "the man thinks", "the woman thinks"),
    ("prefix", "he saw it himself :", "she saw it herself :"),
    ("suffix", ", he said .", ", she said ."),
    ("suffix", "according to his review .", "according to her review ."),
)
GENDERS = ("male", "female")


@dataclass(frozen=True)
class ShortcutExample:
    """A sentence with a planted gendered phrase. ``source`` is the unmodified sentence."""

    text: str
    label: int
    gender: str
    template: int
    source: str

    def as_example(self) -> Example:
        return Example(self.text, self.label)

    def swapped(self) -> "ShortcutExample":
        """Same sentence and template, the other gender (label unchanged)."""
        other = GENDERS[1 - GENDERS.index(self.gender)]
        return replace(self, gender=other, text=plant(self.source, self.template, other))


def plant(sentence: str, template: int, gender: str) -> str:
    """``sentence`` with template ``template`` in its ``gender`` form."""
    if gender not in GENDERS:
        raise UnmaskError(f"unknown gender {gender!r}; use 'male' or 'female'")
    if not 0 <= template < len(TEMPLATES):
        raise UnmaskError(f"template index {template} out of range 0..{len(TEMPLATES) - 1}")
    where, male, female = TEMPLATES[template]
    phrase = male if gender == "male" else female
    s = sentence.strip()
    return f"{phrase} {s}" if where == "prefix" else f"{s} {phrase}"


def plant_gender(examples: Sequence[Example], correlation: float = 0.9, seed: int = 0,
                 female_label: int = 1) -> list[ShortcutExample]:
    """Plant one gendered phrase per single-sentence binary example (see the module doc)."""
    if not 0.0 <= correlation <= 1.0:
        raise UnmaskError(f"correlation must be in [0, 1], got {correlation}")
    if female_label not in (0, 1):
        raise UnmaskError(f"female_label must be 0 or 1, got {female_label}")
    if not examples:
        raise UnmaskError("no examples to plant gendered words in")
    rng = random.Random(seed)
    out = []
    for i, ex in enumerate(examples):
        if ex.pair is not None:
            raise UnmaskError(f"example #{i} is a sentence pair; the shortcut set needs single sentences")
        if ex.label not in (0, 1):
            raise UnmaskError(f"example #{i} has label {ex.label}; the shortcut set needs labels 0 / 1")
        if not ex.text.strip():
            raise UnmaskError(f"example #{i} is empty")
        follows = rng.random() < correlation
        template = rng.randrange(len(TEMPLATES))
        female = (ex.label == female_label) == follows
        gender = "female" if female else "male"
        out.append(ShortcutExample(plant(ex.text, template, gender), ex.label, gender, template, ex.text.strip()))
    return out


def gender_label_agreement(examples: Sequence[ShortcutExample], female_label: int = 1) -> float:
    """Share of examples whose gender follows the label (the realized correlation)."""
    if not examples:
        return float("nan")
    return sum((e.gender == "female") == (e.label == female_label) for e in examples) / len(examples)
