"""``unmask audit`` on any Hugging Face sequence classifier: tiny random models of each encoder family
(WordPiece, byte-level BPE and SentencePiece-style Unigram tokenizers, all built offline) saved to a
directory, loaded with ``load_model`` and audited end to end; classifiers the adapter cannot run from word
embeddings (decoder-style GPT-2, I-BERT) fail with one ``UnmaskError`` naming the architecture."""
import functools
import json
import math
import re

import pytest
import torch

from unmask.audit import audit
from unmask.audit.behavior import DEFAULT_METHODS, REFERENCE
from unmask.errors import UnmaskError
from unmask.models import load_model
from unmask.models.tiny import BPE_CORPUS, tiny_bpe_tokenizer

TEXTS = list(BPE_CORPUS)  # 6 short sentences, different lengths
VERDICTS = ("trustworthy", "suspect", "manipulated")
SIZE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=66, num_labels=2)


# ------------------------------------------------------------------------------------- tokenizers
def _wordpiece_vocab(specials: list[str]) -> dict[str, int]:
    """Specials, every lower-cased word and punctuation mark of TEXTS, single characters and '##' pieces."""
    words = sorted({w for t in TEXTS for w in re.findall(r"\w+|[^\w\s]", t.lower())})
    chars = sorted({c for t in TEXTS for c in t.lower() if not c.isspace()} | set("abcdefghijklmnopqrstuvwxyz"))
    return {p: i for i, p in enumerate(dict.fromkeys([*specials, *words, *chars, *("##" + c for c in chars)]))}


def _unigram_vocab(specials: list[str], unk: str) -> list[tuple[str, float]]:
    """A SentencePiece-style Unigram vocabulary ('▁' marks a word start) trained on TEXTS, specials first."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=200, special_tokens=specials, unk_token=unk, show_progress=False)
    tok.train_from_iterator([t.lower() for t in TEXTS] * 4, trainer)
    return [tuple(v) for v in json.loads(tok.to_str())["model"]["vocab"]]


@functools.lru_cache(maxsize=None)
def _tokenizer(scheme: str):
    import transformers as tf

    if scheme == "wordpiece":
        return tf.BertTokenizer(vocab=_wordpiece_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    if scheme == "mpnet":
        return tf.MPNetTokenizer(vocab=_wordpiece_vocab(["<s>", "<pad>", "</s>", "[UNK]", "<mask>"]))
    if scheme == "bpe":
        return tiny_bpe_tokenizer()
    if scheme == "xlm-roberta":  # special tokens in each tokenizer's own order (its unk id is fixed)
        return tf.XLMRobertaTokenizer(vocab=_unigram_vocab(["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "<unk>"))
    if scheme == "albert":
        return tf.AlbertTokenizer(vocab=_unigram_vocab(["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"], "<unk>"))
    if scheme == "deberta-v2":
        return tf.DebertaV2Tokenizer(vocab=_unigram_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], "[UNK]"))
    raise KeyError(scheme)


# ------------------------------------------------------------------------------------- models
RELATIVE = dict(relative_attention=True, pos_att_type=["p2c", "c2p"], max_relative_positions=-1)
# model_type -> (tokenizer, config overrides); the DeBERTas use relative attention with separate positional
# projections, Longformer a global attention mask; ALBERT has factorized embeddings (16 wide, hidden 32)
ARCHITECTURES = {
    "bert": ("wordpiece", {}),
    "distilbert": ("wordpiece", dict(dim=32, n_layers=2, n_heads=2, hidden_dim=64, dropout=0.0,
                                     attention_dropout=0.0, seq_classif_dropout=0.0)),
    "roberta": ("bpe", {}),
    "albert": ("albert", dict(embedding_size=16, classifier_dropout_prob=0.0)),
    "electra": ("wordpiece", dict(embedding_size=32)),
    "xlm-roberta": ("xlm-roberta", {}),
    "deberta-v2": ("deberta-v2", dict(RELATIVE, share_att_key=False, position_buckets=16)),
    "deberta": ("wordpiece", RELATIVE),
    "mpnet": ("mpnet", {}),
    "longformer": ("bpe", dict(attention_window=8)),
}
UNSUPPORTED = {"gpt2": ("bpe", dict(n_embd=32, n_layer=2, n_head=2, n_positions=66, resid_pdrop=0.0,
                                    embd_pdrop=0.0, attn_pdrop=0.0)),
               "ibert": ("bpe", {})}


def save_tiny(model_type: str, directory, seed: int = 0):
    """A random tiny ``*ForSequenceClassification`` of ``model_type`` with its tokenizer, saved to ``directory``."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    scheme, overrides = {**ARCHITECTURES, **UNSUPPORTED}[model_type]
    tok = _tokenizer(scheme)
    ids = {k: getattr(tok, k) for k in ("pad_token_id", "bos_token_id", "eos_token_id") if getattr(tok, k) is not None}
    config = AutoConfig.for_model(model_type, **SIZE, vocab_size=len(tok), **ids, **overrides)
    torch.manual_seed(seed)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


# ------------------------------------------------------------------------------------- supported
@pytest.mark.parametrize("model_type", list(ARCHITECTURES))
def test_audit_runs_end_to_end_on_each_encoder_family(model_type, tmp_path):
    model = load_model(save_tiny(model_type, tmp_path / model_type))
    assert model.model.config.model_type == model_type and type(model.model).__name__.endswith(
        "ForSequenceClassification")
    batch = model.encode(TEXTS)
    assert not bool(batch.attention_mask.all())  # a padded batch: padding is where families differ
    for b, text in enumerate(TEXTS):  # the word view the audit's word classes use covers each text
        assert "".join(batch.words[b][0]) == text.replace(" ", "")

    report = audit(model, TEXTS)

    assert report.verdict in VERDICTS and _finite(report.score) and 0.0 <= report.p_value <= 1.0
    assert set(report.methods) == {*DEFAULT_METHODS, REFERENCE}
    assert report.methods[REFERENCE].verdict == "reference"
    for name in DEFAULT_METHODS:
        assert report.methods[name].verdict in VERDICTS, (name, report.methods[name])
    behavior = report.evidence["behavior"]
    assert behavior["n_inputs"] == len(TEXTS) and behavior["reference"] == REFERENCE
    assert _finite(behavior["magnitude_ratio"]) and _finite(behavior["first_order_miss"])
    for name in DEFAULT_METHODS:
        ev = behavior["methods"][name]
        for stat in ("unfaithfulness", "top1_miss", "pileup", "misplacement", "top1_pileup",
                     "aopc_comprehensiveness", "aopc_random", "aopc_reference"):
            assert _finite(ev[stat]), (name, stat, ev[stat])
    structure = report.evidence["structure"]
    if model_type == "albert":  # factorized embeddings: the weight check is skipped with a note
        assert structure["coupling"] is None and "factorized" in structure["note"]
    else:  # a random model is not a sum of independent sub-networks (a merge measures << 0.1)
        assert _finite(structure["coupling"]) and 0.5 < structure["coupling"] < 1.5, structure


@pytest.mark.parametrize("model_type", ["deberta", "deberta-v2", "longformer"])
def test_structure_takes_the_attention_output_past_positional_and_global_projections(model_type, tmp_path):
    """DeBERTa's relative-position projections and Longformer's global Q/K/V are H->H Linears between V
    and the attention output; the layout once took the first of them for the output."""
    from unmask.audit.structure import _layout

    layout = _layout(load_model(save_tiny(model_type, tmp_path / model_type)))
    outputs = [m.module for m in layout.matrices if m.kind == "attention_output"]
    assert len(outputs) == 2 and all(name.endswith("attention.output.dense") for name in outputs), outputs


def test_longformer_runs_from_embeddings_with_its_own_global_attention(tmp_path):
    """Longformer's classifier makes the first token global from token ids; from embeddings the adapter
    passes the same mask, so both give the same logits on a padded batch."""
    model = load_model(save_tiny("longformer", tmp_path / "lf"))
    batch = model.encode(TEXTS)
    with torch.no_grad():
        ref = model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    assert torch.allclose(model.logits(batch), ref, atol=1e-6)


def test_cli_audits_a_saved_model_directory(tmp_path, capsys):
    from unmask.cli import main

    directory = save_tiny("xlm-roberta", tmp_path / "xlmr")
    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": i % 2}) + "\n" for i, t in enumerate(TEXTS)),
                    encoding="utf-8")
    out = tmp_path / "report.json"
    assert main(["audit", str(directory), "--data", str(data), "--n", "6", "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["verdict"] in VERDICTS and report["model"] == str(directory)
    assert report["evidence"]["behavior"]["n_inputs"] == 6
    assert report["methods"][REFERENCE]["verdict"] == "reference"
    assert all(report["methods"][m]["verdict"] in VERDICTS for m in DEFAULT_METHODS)
    assert _finite(report["evidence"]["structure"]["coupling"])
    assert f"verdict: {report['verdict'].upper()}" in capsys.readouterr().out


# ------------------------------------------------------------------------------------- unsupported
@pytest.mark.parametrize("model_type, problem", [
    # GPT-2 pools its last non-padding token, which it finds only in token ids
    ("gpt2", "from word embeddings it gives other logits than from token ids on a padded batch"),
    ("ibert", "it cannot run from word embeddings"),  # quantized embeddings return (values, scale)
])
def test_unsupported_architectures_fail_with_one_clear_error(model_type, problem, tmp_path):
    model = load_model(save_tiny(model_type, tmp_path / model_type))
    name = type(model.model).__name__
    with pytest.raises(UnmaskError, match=rf"^{name} \(model_type '{model_type}'\) is not supported: {problem}"):
        audit(model, TEXTS)
    if model_type == "gpt2":  # texts of one length: the check pads the batch itself
        with pytest.raises(UnmaskError, match="not supported"):
            audit(model, [TEXTS[0]] * 3)


def test_explain_refuses_an_unsupported_architecture_and_checks_a_model_once(tmp_path, monkeypatch):
    from unmask.attribution.explain import explain

    gpt2 = load_model(save_tiny("gpt2", tmp_path / "gpt2"))
    with pytest.raises(UnmaskError, match=r"^GPT2ForSequenceClassification \(model_type 'gpt2'\) is not supported"):
        explain(gpt2, TEXTS, ["gradient"])
    bert = load_model(save_tiny("bert", tmp_path / "bert"))
    calls = []
    original = type(bert).check_supported
    monkeypatch.setattr(type(bert), "check_supported", lambda self, *a: calls.append(1) or original(self, *a))
    explain(bert, TEXTS, ["gradient"])
    explain(bert, TEXTS[:2], ["gradient_x_input"])
    assert len(calls) == 1  # once per model object


def test_cli_names_an_unsupported_architecture_without_a_traceback(tmp_path, capsys):
    from unmask.cli import main

    directory = save_tiny("gpt2", tmp_path / "gpt2")
    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": 0}) + "\n" for t in TEXTS), encoding="utf-8")
    assert main(["audit", str(directory), "--data", str(data), "--n", "6", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "GPT2ForSequenceClassification (model_type 'gpt2') is not supported" in err
    assert "Traceback" not in err
