"""Model-family details live behind the adapter (issue 13): sub-word conventions (WordPiece "##" vs
byte-level BPE "Ġ"), hidden-state modules for DiffMask and the legacy structural detector, on tiny random
BERT, DistilBERT (no ``.bert``, no pooler) and RoBERTa (byte-level BPE tokenizer) models built offline."""
import functools

import numpy as np
import pytest
import torch
from torch import nn

from unmask.errors import UnmaskError
from unmask.facade.merge import merge
from unmask.facade.model import new_facade
from unmask.facade.structure import component_logits, hidden_components, hidden_unit_graph
from unmask.masking import ClassifierAdapter
from unmask.models import SplitLayerNorm
from unmask.models.subwords import subword_scheme, subwords_of
from unmask.models.tiny import BPE_CORPUS, tiny_classifier, tiny_distilbert_classifier, tiny_roberta_classifier
from unmask.perturbation.tokens import batch_from_rows, candidate_vocab, encode_rows

TEXTS = list(BPE_CORPUS) + ["the unbelievably dull movie , don't go", "'tis wonderful",
                            "a film,with no spaces;after punctuation"]
NON_ASCII = ["café déjà vu — it's 2024 !"]  # byte-level BPE is lossless; MiniLM's WordPiece strips accents


@functools.lru_cache(maxsize=None)
def family(kind: str):
    return {"roberta": tiny_roberta_classifier, "distilbert": tiny_distilbert_classifier,
            "bert": tiny_classifier}[kind](seed=0)


# ------------------------------------------------------------------------------------- sub-words
def test_subword_scheme_is_read_from_the_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    assert subwords_of(family("bert")).kind == "prefix" and subwords_of(family("bert")).marker == "##"
    assert subwords_of(family("roberta")).kind == "byte_level" and subwords_of(family("roberta")).marker == "Ġ"
    sp = Tokenizer(models.WordLevel({"▁the": 0, "▁film": 1, "s": 2, "<unk>": 3}, unk_token="<unk>"))
    sp.pre_tokenizer = pre_tokenizers.Metaspace()
    scheme = subword_scheme(PreTrainedTokenizerFast(tokenizer_object=sp, unk_token="<unk>"))
    assert (scheme.kind, scheme.marker) == ("metaspace", "▁")
    assert scheme.word_ids(["▁the", "▁film", "s"]) == [0, 1, 1] and scheme.join(["film", "s"]) == "films"


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_rows_rebuild_the_encoders_word_view(kind):
    """Perturbations rebuild words from ids; for unedited text they must be the words encode gives. With
    the old hard-coded '##' rule every RoBERTa piece without '##' ("ie" in "Ġmov" "ie") was a new word and
    the words kept their 'Ġ'."""
    model = family(kind)
    texts = TEXTS + (NON_ASCII if kind == "roberta" else [])
    enc = model.encode(texts)
    rebuilt = batch_from_rows(model, encode_rows(model, texts))
    assert rebuilt.word_ids == enc.word_ids
    assert rebuilt.words == enc.words
    pairs = texts[::-1]
    enc = model.encode(texts, pairs)
    rebuilt = batch_from_rows(model, encode_rows(model, texts, pairs))
    assert rebuilt.word_ids == enc.word_ids and rebuilt.words == enc.words
    if kind == "roberta":  # the test exercises multi-piece words
        assert any(len(set(w for w in row if w is not None)) < sum(w is not None for w in row) for row in enc.word_ids)


def test_edited_rows_regroup_byte_level_pieces_into_words():
    model = family("roberta")
    tok = model.tokenizer
    row = encode_rows(model, "the movie was dull")[0]
    toks = tok.convert_ids_to_tokens(list(row.ids))
    assert toks[1:6] == ["the", "Ġm", "ov", "i", "e"]
    # "Ġm" -> "Ġthin": the rest of "movie" now continues the new word; removing "Ġw" joins "as" to it
    edited = row.replace(2, tok.convert_tokens_to_ids("Ġthin"))
    assert batch_from_rows(model, [edited]).words[0] == (["the", "thinovie", "was", "dull"],)
    cut = edited.remove(toks.index("Ġw"))
    batch = batch_from_rows(model, [cut])
    assert batch.words[0] == (["the", "thinovieas", "dull"],)
    assert batch.word_ids[0][1:-1] == [0, 1, 1, 1, 1, 1, 1, 2, 2, 2]


def test_candidate_vocab_follows_the_subword_convention():
    """Flip / trigger candidates are whole-word pieces: for byte-level BPE those that start with 'Ġ' (the
    old '##' rule let every mid-word piece through)."""
    model = family("roberta")
    tokens = model.tokenizer.convert_ids_to_tokens(list(range(model.embedding_matrix.shape[0])))
    keep = candidate_vocab(model)
    allowed = [t for t, k in zip(tokens, keep.tolist()) if k]
    assert allowed and all(t.startswith("Ġ") and t[1:].isalnum() for t in allowed)
    assert "Ġ" not in allowed and "Ġ," not in allowed
    more = candidate_vocab(model, allow_subwords=True)
    assert bool((more >= keep).all()) and any(not t.startswith("Ġ") for t, k in zip(tokens, more.tolist()) if k)
    special = model.special_token_ids
    assert not any(more[i] for i in special)


# ------------------------------------------------------------------------------------- DiffMask hidden states
@pytest.mark.parametrize("kind", ["distilbert", "roberta", "bert"])
def test_diffmask_replaces_hidden_states_of_any_encoder(kind):
    """DistilBERT has no ``encoder.layer`` (it is ``transformer.layer``): the old adapter refused it."""
    model = family(kind)
    adapter = ClassifierAdapter(model)
    batch = adapter.collate(["the plot was thin", "the acting is bad"])
    assert bool(batch.attention_mask.all())  # same length: states can be swapped between rows
    states = adapter.states(batch)
    assert len(states.hidden) == adapter.num_layers + 1 == 3
    swapped = batch.select([1, 0])
    for k in range(3):
        assert torch.allclose(adapter.logits_with(batch, k, states.hidden[k]), states.logits, atol=1e-6)
        assert torch.allclose(adapter.logits_with(swapped, k, states.hidden[k]), states.logits, atol=1e-5)
        zeroed = adapter.logits_with(batch, k, torch.zeros_like(states.hidden[k]))
        assert not torch.allclose(zeroed, states.logits, atol=1e-4)


def test_diffmask_checks_the_adapters_hidden_state_modules():
    model = family("distilbert")

    class Wrong:  # names the layers in the wrong order
        def __getattr__(self, name):
            return getattr(model, name)

        def hidden_state_modules(self):
            mods = model.hidden_state_modules()
            return [mods[0], *mods[1:][::-1]]

    adapter = ClassifierAdapter(Wrong())
    with pytest.raises(UnmaskError, match="hidden state 1"):
        adapter.states(adapter.collate(["the movie was great"]))


def test_models_without_hidden_state_modules_fail_with_one_message():
    from test_perturbation_models import planted_classifier

    cube = planted_classifier({"good": 1.0})  # a TextClassifier around a plain nn.Module (no encoder)
    with pytest.raises(UnmaskError, match="transformer"):
        ClassifierAdapter(cube)
    with pytest.raises(UnmaskError, match="transformer"):
        hidden_components(cube)


# ------------------------------------------------------------------------------------- structure (legacy)
@pytest.mark.parametrize("kind", ["distilbert", "roberta"])
def test_structure_reads_other_transformer_families(kind):
    """One component for a clean model, whose logit share is the logits minus the classifier bias (the old
    code refused every model_type but 'bert' and read ``hf.bert.pooler``)."""
    model = family(kind)
    comps = hidden_components(model)
    assert [sorted(c.tolist()) for c in comps] == [list(range(32))]
    batch = model.encode(TEXTS[:3])
    parts = component_logits(model, batch.input_ids, batch.attention_mask, batch.token_type_ids, comps)
    classifier = [m for m in model.model.modules() if isinstance(m, nn.Linear)][-1]
    assert torch.allclose(parts.sum(0) + classifier.bias, model.logits(batch), atol=1e-5)


def _bert_path_graph(model, rel_tol):
    """The pre-issue-13 graph, read through BERT's module paths: the oracle for BERT models."""
    hf, hidden = model.model, model.model.config.hidden_size
    adj = np.eye(hidden, dtype=bool)

    def nz(w):
        w = w.detach().abs().float()
        return (w > rel_tol * w.max().clamp_min(1e-30)).numpy()

    def couple(module):
        for g in ([np.asarray(g) for g in module.groups] if isinstance(module, SplitLayerNorm) else [np.arange(hidden)]):
            adj[np.ix_(g, g)] = True

    couple(hf.bert.embeddings.LayerNorm)
    heads = hf.config.num_attention_heads
    head = hidden // heads
    for layer in hf.bert.encoder.layer:
        att = layer.attention
        for lin in (att.self.query, att.self.key, att.self.value, att.output.dense):
            adj |= nz(lin.weight)
        qk = nz(att.self.query.weight) | nz(att.self.key.weight)
        for h in range(heads):
            inputs = np.nonzero(qk[h * head:(h + 1) * head].any(0))[0]
            g = np.concatenate([np.arange(h * head, (h + 1) * head), inputs])
            adj[np.ix_(g, g)] = True
        adj |= (nz(layer.output.dense.weight).astype(np.float32) @ nz(layer.intermediate.dense.weight)
                .astype(np.float32)) > 0
        couple(att.output.LayerNorm)
        couple(layer.output.LayerNorm)
    adj |= nz(hf.bert.pooler.dense.weight)
    return adj | adj.T


def test_structure_on_bert_is_unchanged():
    from unmask.facade.conceal import add_noise, permute_hidden

    f = tiny_classifier(seed=0)
    merged = merge(f, new_facade(f, seed=1, hidden=16, intermediate=32))
    batch = f.encode(TEXTS[:4])
    for model in (f, merged, add_noise(merged, 1e-6, seed=0), permute_hidden(merged, seed=0)):
        for tol in (0.0, 1e-6, 1e-3):
            assert np.array_equal(hidden_unit_graph(model, tol), _bert_path_graph(model, tol))
        comps = hidden_components(model, 1e-3)
        out = model.forward_embeds(model.embed(batch.input_ids), batch.attention_mask, batch.token_type_ids,
                                   output_hidden_states=True)
        pooled = model.model.bert.pooler(out.hidden_states[-1])
        w = model.model.classifier.weight
        expected = torch.stack([pooled[:, c] @ w[:, c].T for c in (torch.as_tensor(c) for c in comps)])
        got = component_logits(model, batch.input_ids, batch.attention_mask, batch.token_type_ids, comps)
        assert torch.equal(got, expected)
    assert [len(c) for c in hidden_components(merged)] == [32, 16]


def test_legacy_detector_reads_the_structure_of_other_families():
    from unmask.facade.detect import detect_facade

    det = detect_facade(family("distilbert"), TEXTS[:3], ig_steps=4)
    assert [(c.size, c.facade) for c in det.components] == [(32, False)]  # was [] (BERT only)
