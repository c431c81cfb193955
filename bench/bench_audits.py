"""Groundedness on planted claims: how many unsupported claims each mode catches, and how
many supported ones it flags, per kind of change, with a raw baseline in the same run.

Three corpora: the demo's documents (the checker's rules were written looking at
these: the *tuning* set); pilothouse's docs in site/ (its misses were read while the
rules were fixed: *seen*); and the README (never run before the rules were frozen:
*held out*). From each sentence the benchmark makes claims by rule:

- supported: the sentence copied; a paraphrase (its words swapped for synonyms, or
  its first clause alone); two neighbouring sentences' first clauses merged;
- unsupported: a figure changed (digits, or a number word for another number), a
  code changed, a name swapped, an attribute (colour, material, channel...) swapped,
  a negation added or removed, a comparison turned round, and a fact invented.

Each claim is checked alone by the ``grounded`` guardrail against the whole corpus, as
a persona's output would be against its step's evidence. Rows:

- raw: the share of a claim's content words in its best evidence sentence >= 0.6
  (word overlap alone, the baseline);
- lexical: the guardrail with its defaults (overlap, then the fact-bearing parts);
- semantic: with the MiniLM embedder (when the knowledge extra is installed);
- judge: with ``grounded_judge`` at a loopback OpenAI-compatible server (tests/
  openai_server.py), over HTTP: one judge heeds the checker's findings in its prompt,
  one calls every claim supported (a credulous judge: it cannot overrule a failed
  fact-bearing part, only the scores, which is what this row shows).

Usage: python bench/bench_audits.py [--per-kind 40] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path

import anyio

from pilothouse import GuardrailContext, ModelRequest
from pilothouse.settings import Endpoint
from pilothouse.text import content_words, sentences
from pilothouse_guardrails.grounded import Grounded
from pilothouse_openai.chat import OpenAIChatModel
from pilothouse_openai.endpoint import EndpointClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
SUPPORTED = ("copied", "paraphrased", "merged")
UNSUPPORTED = ("figure", "code", "name", "attribute", "negation", "comparison", "invented")

SYNONYMS = {
    "about": "roughly", "buy": "purchase", "buying": "purchasing", "shows": "displays",
    "show": "display", "must": "has to", "big": "large", "small": "little", "fast": "quick",
    "uses": "employs", "use": "employ", "gives": "provides", "give": "provide",
    "needs": "requires", "need": "require", "start": "begin", "starts": "begins",
    "makes": "creates", "keeps": "retains", "help": "assist", "helps": "assists",
    "every": "each", "also": "as well", "often": "frequently", "so": "therefore",
}  # fmt: skip
WORD_NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve"]
NAMES = ["Kestrel", "Brandt", "Lisbon", "Okafor", "Valdis", "Marlowe", "Tromso", "Quill"]
ATTRIBUTES = {
    "colour": ["red", "blue", "green", "grey", "black", "white", "orange", "yellow"],
    "material": ["cotton", "wool", "nylon", "leather", "steel", "aluminium", "plastic"],
    "channel": ["magazines", "podcasts", "newsletters", "billboards", "radio", "forums"],
    "time": ["monday", "friday", "january", "june", "winter", "summer", "daily", "weekly"],
    "place": ["europe", "asia", "germany", "france", "urban", "rural", "indoor", "outdoor"],
}
COMPARATIVES = {"more": "less", "less": "more", "faster": "slower", "slower": "faster",
                "higher": "lower", "lower": "higher", "larger": "smaller", "smaller": "larger",
                "fewer": "more", "better": "worse", "cheaper": "dearer"}  # fmt: skip
INVENTED = [
    "and it won a national design award in 2019",
    "and every unit is assembled by hand in Portugal",
    "and the company plans to double its staff next year",
    "and regulators approved it after a three-month review",
    "and most buyers return it within a week",
    "and it is sold in supermarkets across the country",
    "and a premium version costs twice as much",
    "and the feature was removed in the last release",
]
AUXILIARIES = ("is", "are", "can", "must", "will", "does", "do", "was", "were", "should")


def corpus(kind: str) -> list[str]:
    """The sentences of a corpus: the demo's documents, the docs in site/, the README."""
    if kind == "demo":
        files = sorted((ROOT / "plugins/pilothouse_demo/corpus").glob("*.md"))
    elif kind == "docs":
        files = sorted((ROOT / "site").glob("*.md"))
    else:
        files = [ROOT / "README.md"]
    found = []
    for path in files:
        text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
        # a paragraph's lines are one text (the docs wrap their lines); tables, headings,
        # definition lists, HTML and code are not prose
        for paragraph in re.split(r"\n\s*\n", text):
            lines = [x for x in paragraph.strip().splitlines() if not x.startswith("#")]
            if not lines or lines[0].startswith(("|", "    ", "<", "!", ":", "```")):
                continue
            prose = " ".join(line.strip().lstrip("-* ") for line in lines)
            if "{" in prose:
                continue
            prose = prose.replace("`", "").replace("**", "")
            found += [s for s in sentences(prose) if 8 <= len(s.split()) <= 40]
    return found


def planted(source: list[str], per_kind: int, draw: random.Random) -> dict[str, list[str]]:
    """Claims of every kind made from the corpus's sentences."""
    made: dict[str, list[str]] = defaultdict(list)
    order = list(range(len(source)))
    for _ in range(50):  # passes over the corpus until every kind has enough
        draw.shuffle(order)
        for i in order:
            s = source[i]
            nxt = source[(i + 1) % len(source)]
            for kind, claim in _variants(s, nxt, draw):
                if len(made[kind]) < per_kind and claim and claim not in made[kind]:
                    made[kind].append(claim)
        if all(len(made[k]) >= per_kind for k in SUPPORTED + UNSUPPORTED):
            break
    return made


def _variants(s: str, nxt: str, draw: random.Random):
    words = s.split()
    yield "copied", s
    swapped = [SYNONYMS.get(w.lower(), w) for w in words]
    if swapped != words:
        yield "paraphrased", " ".join(swapped)
    first = re.split(r"[;:]| - ", s)[0].strip().rstrip(".,")
    if first != s.rstrip(".") and len(first.split()) >= 5:
        yield "paraphrased", first + "."
    other = re.split(r"[;:,]", nxt)[0].strip().rstrip(".")
    if len(first.split()) >= 4 and len(other.split()) >= 4:
        yield "merged", f"{first.rstrip('.')}, and {other[0].lower()}{other[1:]}."
    number = re.search(r"(?<![\w.])\d+(?:[.,]\d+)?", s)
    if number:
        value = float(number.group(0).replace(",", ""))
        new = value + draw.choice([1, 2, 3, 5, 10]) * draw.choice([1, -1] if value > 10 else [1])
        text = f"{new:g}" if draw.random() < 0.6 else WORD_NUMBERS[int(new) % len(WORD_NUMBERS)]
        if text != number.group(0):
            yield "figure", s[: number.start()] + text + s[number.end() :]
    for word in WORD_NUMBERS:
        if re.search(rf"\b{word}\b", s, re.I):
            other_word = draw.choice([w for w in WORD_NUMBERS if w != word])
            yield "figure", re.sub(rf"\b{word}\b", other_word, s, count=1, flags=re.I)
            break
    code = re.search(r"\b(?=\w*\d)(?=\w*[A-Za-z])([A-Za-z]+)(\d+)\b", s)
    if code:
        digits = str(int(code.group(2)) + draw.randint(1, 9))
        yield "code", s[: code.start()] + code.group(1) + digits + s[code.end() :]
    capitals = [m for m in re.finditer(r"(?<=\s)[A-Z][a-z]{2,}\b", s)]
    if capitals:
        m = draw.choice(capitals)
        yield "name", s[: m.start()] + draw.choice(NAMES) + s[m.end() :]
    for values in ATTRIBUTES.values():
        for value in values:
            if re.search(rf"\b{value}\b", s, re.I):
                new = draw.choice([v for v in values if v != value])
                yield "attribute", re.sub(rf"\b{value}\b", new, s, count=1, flags=re.I)
    negated = re.sub(r"\b(not|never) ", "", s, count=1)
    if negated != s:
        yield "negation", negated
    else:
        aux = next((a for a in AUXILIARIES if re.search(rf"\b{a}\b", s)), None)
        if aux:
            yield "negation", re.sub(rf"\b{aux}\b", f"{aux} not", s, count=1)
    for word, opposite in COMPARATIVES.items():
        if re.search(rf"\b{word}\b", s):
            yield "comparison", re.sub(rf"\b{word}\b", opposite, s, count=1)
            break
    yield "invented", s.rstrip(".") + ", " + draw.choice(INVENTED) + "."


def raw_supported(claim: str, evidence: list[set[str]]) -> bool:
    """The baseline: word overlap alone, as the guardrail's first step scores it."""
    words = content_words(claim)
    return bool(words) and max(len(words & e) / len(words) for e in evidence) >= 0.6


def judge_replies(request: dict) -> object:
    """The loopback judge: every numbered claim supported unless ``heed`` (the model
    name) and the checker wrote a finding under it."""
    from openai_server import reply

    text = request["messages"][-1]["content"]
    heed = request["model"] == "heeds-findings"
    verdicts = []
    for number, block in re.findall(r"(?m)^(\d+)\. Claim:(.*?)(?=^\d+\. Claim:|\Z)", text, re.S):
        verdicts.append({"claim": int(number), "supported": not (heed and "Checker:" in block)})
    return reply(json.dumps({"verdicts": verdicts}))


async def judged(guard: Grounded, claim: str, source: list[str], embed, ask=None) -> bool | None:
    """Whether the guardrail supports ``claim`` (None: too short to judge)."""
    context = GuardrailContext(run_id="b", step_id="1", persona="p", stage="output",
                               crew="bench", evidence=source, embed=embed, ask=ask)  # fmt: skip
    verdict = await guard.check(claim, context)
    scored = verdict.details.get("claims") or []
    return all(c["supported"] for c in scored) if scored else None


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-kind", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    modes: dict[str, tuple[Grounded | None, object]] = {
        "raw overlap": (None, None),
        "lexical": (Grounded(), None),
    }
    stack = ExitStack()
    from openai_server import FakeOpenAI, serve

    app = FakeOpenAI()
    app.responder = judge_replies
    client = EndpointClient("local", Endpoint(base_url=stack.enter_context(serve(app))))
    models = {name: OpenAIChatModel(client, name, None)
              for name in ("heeds-findings", "credulous")}  # fmt: skip

    async def ask(spec: str, messages, **request):
        name = spec.split(":", 1)[1]
        return await models[name].complete(ModelRequest(model=name, messages=messages, **request))

    try:
        from pilothouse_knowledge import MiniLM

        minilm = MiniLM()
        seen: dict[str, list[float]] = {}

        async def embed(name: str, texts: list[str]) -> list[list[float]]:
            # the corpus is embedded with every claim: once is enough
            new = [t for t in dict.fromkeys(texts) if t not in seen]
            seen.update(zip(new, minilm.embed(new), strict=True) if new else ())
            return [seen[t] for t in texts]

        modes["semantic"] = (Grounded(embedder="minilm"), embed)
    except Exception as exc:  # the knowledge extra is not installed
        print(f"(no semantic mode: {exc})")
    modes["judge heeds"] = (Grounded(judge="local:heeds-findings"), None)
    modes["judge credulous"] = (Grounded(judge="local:credulous"), None)

    labels = {"demo": "tuning set", "docs": "seen in development", "readme": "held out"}
    for name, label in labels.items():
        source = corpus(name)
        claims = planted(source, args.per_kind, random.Random(args.seed))
        evidence = [content_words(s) for s in source]
        counts = ", ".join(f"{k} {len(v)}" for k, v in claims.items())
        print(f"\n{name} corpus ({label}): {len(source)} sentences; claims per kind: {counts}")
        header = ["kind", *modes]
        print(f"{header[0]:<12}" + "".join(f"{h:>16}" for h in header[1:]))
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # caught, bad, alarms, ok
        for kind in SUPPORTED + UNSUPPORTED:
            row = []
            for mode, (guard, embed) in modes.items():
                verdicts = []
                for claim in claims.get(kind, []):
                    if guard is None:
                        verdicts.append(raw_supported(claim, evidence))
                    else:
                        asks = ask if guard.judge else None
                        verdicts.append(await judged(guard, claim, source, embed, asks))
                verdicts = [v for v in verdicts if v is not None]
                flagged = sum(not v for v in verdicts)
                t = totals[mode]
                if kind in SUPPORTED:
                    t[2] += flagged
                    t[3] += len(verdicts)
                    row.append(f"{flagged}/{len(verdicts)} flagged")
                else:
                    t[0] += flagged
                    t[1] += len(verdicts)
                    row.append(f"{flagged}/{len(verdicts)} caught")
            print(f"{kind:<12}" + "".join(f"{cell:>16}" for cell in row))
        print(f"{'caught':<12}" + "".join(f"{t[0] / max(1, t[1]):>16.0%}" for t in totals.values()))
        print(f"{'false alarm':<12}" + "".join(f"{t[2] / max(1, t[3]):>16.0%}"
                                               for t in totals.values()))  # fmt: skip
    await client.aclose()
    stack.close()


if __name__ == "__main__":
    anyio.run(main)
