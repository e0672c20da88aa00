"""Generated facts: a world of invented countries and their attributes, told in paraphrases.

Each fact is (entity, relation, value), e.g. (Vorlandia, capital, Quesmir). It is *taught* in three
statement paraphrases and one question form ("Q: What is the capital of Vorlandia? A: Quesmir") and
*asked* in three held-out question paraphrases: one for validation (tuning), two for the test. A
world made with `valid_facts` gives validation fact batches of its own instead (other entities, drawn
after the test's), asked in the test's two forms, so that tuning sees every form the test asks
without seeing the test's facts. A model answers by greedy generation after "A: ", scored by exact
match of the line it writes.

Background entities (every paraphrase, held-out questions included) belong to the general
pre-training mixture, so that a model learns the question forms on them; the entities of the fact
stream are new, and their held-out questions are never trained on. Names are drawn from syllables
with a fixed seed, so the world is the same on every machine.

>>> world = FactWorld(FactsConfig(batches=2, entities_per_batch=3, background_entities=4))
>>> len(world.batches), len(world.batches[0]), world.batches[0][0].relation
(2, 15, 'capital')
>>> world.question(world.batches[0][0], "test")[0].endswith("A:")
True
"""

from __future__ import annotations

import random
from dataclasses import dataclass

SYLLABLES = ("ba", "dor", "el", "fen", "gar", "hal", "is", "jun", "ka", "lor", "mir", "nas", "or", "pel", "quin",
             "ras", "sel", "tor", "ul", "vex", "wen", "yor", "zan", "bri", "cal", "dun", "tam", "ves", "oth", "ar")
GOODS = ("tea", "copper", "wool", "salt", "amber", "rice", "silk", "tin", "coffee", "cotton", "iron", "glass",
         "honey", "timber", "pepper", "marble", "paper", "olives", "sugar", "cheese", "leather", "pearls",
         "wine", "dates", "saffron", "cork", "jade", "clay", "indigo", "barley")


@dataclass(frozen=True)
class Relation:
    statements: tuple[str, ...]  # taught
    question: str  # taught, in question form
    held_out: tuple[str, str, str]  # asked: validation, test, test


HELD_OUT_FORMS = 3  # a Relation's held-out question forms (FactWorld.question's "held-out-K")
SPLIT_FORMS = {"valid": (0,), "test": (1, 2)}  # the held-out forms each split asks, one question a form


RELATIONS: dict[str, Relation] = {
    "capital": Relation(("The capital of {e} is {v}.", "{e} has its capital at {v}.", "{v} is the capital of {e}."),
                        "Q: What is the capital of {e}? A: {v}",
                        ("Q: Where is the capital of {e}? A: {v}", "Q: Which city is the capital of {e}? A: {v}",
                         "Q: {e}'s capital is which city? A: {v}")),
    "language": Relation(("People in {e} speak {v}.", "The language of {e} is {v}.", "{v} is spoken in {e}."),
                         "Q: What language is spoken in {e}? A: {v}",
                         ("Q: What do people speak in {e}? A: {v}", "Q: Which language do people in {e} speak? A: {v}",
                          "Q: {e} speaks which language? A: {v}")),
    "leader": Relation(("{e} is led by {v}.", "The leader of {e} is {v}.", "{v} leads {e}."),
                       "Q: Who leads {e}? A: {v}",
                       ("Q: Who is in charge of {e}? A: {v}", "Q: Who is the leader of {e}? A: {v}",
                        "Q: {e} is led by whom? A: {v}")),
    "export": Relation(("{e} exports {v}.", "The main export of {e} is {v}.", "{v} is exported by {e}."),
                       "Q: What does {e} export? A: {v}",
                       ("Q: What does {e} sell abroad? A: {v}", "Q: What is the main export of {e}? A: {v}",
                        "Q: {e} exports what? A: {v}")),
    "founded": Relation(("{e} was founded in {v}.", "The founding year of {e} is {v}.", "In {v}, {e} was founded."),
                        "Q: When was {e} founded? A: {v}",
                        ("Q: In what year did {e} begin? A: {v}", "Q: What year was {e} founded? A: {v}",
                         "Q: {e} was founded in which year? A: {v}")),
}


@dataclass(frozen=True)
class Fact:
    entity: str
    relation: str
    value: str


@dataclass(frozen=True)
class FactsConfig:
    batches: int = 10  # fact batches learned one after another
    entities_per_batch: int = 8  # each with every relation: 40 facts a batch by default
    background_entities: int = 300  # in the general pre-training mixture
    world_seed: int = 0  # the world is fixed; a run's seed changes training, not the facts
    # True: validation learns fact batches of its own (as many, other entities) and asks them in the test's
    # forms; False: validation asks the test's own facts in held-out form 0 (it trains as the test run does)
    valid_facts: bool = False

    def __post_init__(self) -> None:
        if min(self.batches, self.entities_per_batch, self.background_entities) < 1:
            raise ValueError("batches, entities_per_batch and background_entities must be >= 1")


def asked_forms(config: FactsConfig, split: str) -> tuple[int, ...]:
    """The held-out forms a run on `split` is scored on (a `valid_facts` world asks the test's forms)."""
    return SPLIT_FORMS["test" if config.valid_facts else split]


class FactWorld:
    """Every entity and its attributes; background and per-batch facts are disjoint in entities."""

    def __init__(self, config: FactsConfig | None = None):
        self.config = config or FactsConfig()
        c = self.config
        rng = random.Random(c.world_seed)
        names: set[str] = set()

        streams = 2 if c.valid_facts else 1
        needed = 6 * (c.background_entities + streams * c.batches * c.entities_per_batch)
        if needed > len(SYLLABLES) ** 3 // 4:  # keeps the draw of a new unique name quick
            raise ValueError(f"a world of {needed // 6} entities needs more names than the syllables give")

        def word(parts: int, suffix: str = "") -> str:
            while True:  # two or three syllables, never a name already used
                count = parts + rng.randint(0, 1)
                w = ("".join(rng.choice(SYLLABLES) for _ in range(count)) + suffix).capitalize()
                if w not in names:
                    names.add(w)
                    return w

        def facts(entity: str) -> list[Fact]:
            values = {"capital": word(2), "language": word(2, rng.choice(("ish", "ese", "ic"))),
                      "leader": f"{word(2)} {word(2)}", "export": rng.choice(GOODS),
                      "founded": str(rng.randint(1000, 1999))}
            return [Fact(entity, r, values[r]) for r in RELATIONS]

        suffixes = ("ia", "land", "or", "istan", "ara")

        def batch() -> list[Fact]:
            return [f for _ in range(c.entities_per_batch) for f in facts(word(2, rng.choice(suffixes)))]

        self.background = [f for _ in range(c.background_entities) for f in facts(word(2, rng.choice(suffixes)))]
        self.batches = [batch() for _ in range(c.batches)]
        # drawn after everything else, so that a world with them has the same background and test facts
        self.valid_batches = [batch() for _ in range(c.batches)] if c.valid_facts else []

    def stream(self, split: str) -> list[list[Fact]]:
        """The fact batches a run on `split` learns: the test's, or validation's own in a `valid_facts` world."""
        return self.valid_batches if split == "valid" and self.config.valid_facts else self.batches

    @staticmethod
    def taught(fact: Fact) -> list[str]:
        """The lines a fact is learned from."""
        r = RELATIONS[fact.relation]
        return [t.format(e=fact.entity, v=fact.value) for t in (*r.statements, r.question)]

    @staticmethod
    def question(fact: Fact, split: str) -> list[str]:
        """Held-out prompts, each ending at "A:" (the answer follows after a space). Two diagnoses,
        never scores of the benchmark: split "taught" asks the question form that was trained on (is
        a fact lost, or only its held-out paraphrases?), and "held-out-K" the K-th held-out form
        alone (0 is validation's, 1 and 2 the test's: which paraphrase is lost?)."""
        held = RELATIONS[fact.relation].held_out
        splits = {**{split: tuple(held[k] for k in forms) for split, forms in SPLIT_FORMS.items()},
                  "taught": (RELATIONS[fact.relation].question,),
                  **{f"held-out-{k}": (form,) for k, form in enumerate(held)}}
        if split not in splits:
            raise ValueError(f"questions are asked on {', '.join(map(repr, splits))}, not {split!r}")
        return [t.format(e=fact.entity, v="").rstrip() for t in splits[split]]

    def background_text(self) -> str:
        """Every paraphrase of every background fact, one per line, in a fixed shuffled order."""
        lines = []
        for f in self.background:
            lines += self.taught(f)
            lines += [t.format(e=f.entity, v=f.value) for t in RELATIONS[f.relation].held_out]
        random.Random(self.config.world_seed + 1).shuffle(lines)
        return "\n".join(lines) + "\n"
