"""DiffMask adapters on real model code: the toy task / GRU and BERT (hooks), explain records, CLI."""
import itertools
import json
import math

import numpy as np
import pytest
import torch

import unmask
from unmask.cli import main
from unmask.data.toy_counting import ToyTaskConfig, generate_toy, relevant_positions, toy_label
from unmask.errors import UnmaskError
from unmask.masking import (ClassifierAdapter, DiffMaskAttribution, ToyAdapter, diffmask_for, explain_diffmask,
                            save_diffmask)
from unmask.models.gru_toy import GRUCounter, load_toy_model, save_toy_model


# ------------------------------------------------------------------------------------------- toy task
def irrelevant_symbols(num_symbols: int, max_length: int, n: int, m: int) -> set[int]:
    """By brute force from the label function alone: the largest set of symbols that can be substituted for
    one another anywhere in any sequence without ever changing the label (asserted to be unique)."""
    seqs = [list(s) for length in range(1, max_length + 1)
            for s in itertools.product(range(num_symbols), repeat=length)]

    def invariant(group):
        return all(toy_label(seq[:i] + [e] + seq[i + 1:], n, m) == toy_label(seq, n, m)
                   for seq in seqs for i, d in enumerate(seq) if d in group for e in group if e != d)

    for size in range(num_symbols, 0, -1):
        found = [set(g) for g in itertools.combinations(range(num_symbols), size) if invariant(g)]
        if found:
            assert len(found) == 1, found
            return found[0]
    return set()


def test_ground_truth_matches_brute_force_on_small_cases():
    config = ToyTaskConfig(num_symbols=4, max_length=4)
    data = generate_toy(300, seed=1, config=config)
    irrelevant = {(n, m): irrelevant_symbols(4, 4, n, m) for n in range(4) for m in range(4) if n != m}
    assert all(s == set(range(4)) - {n, m} for (n, m), s in irrelevant.items())
    relevant, gt = data.relevant(), data.ground_truth()
    for i in range(len(data)):
        length = int(data.lengths[i])
        seq = data.sequences[i, :length].tolist()
        n, m = data.queries[i].tolist()
        assert n != m and all(0 <= s < 4 for s in seq)
        assert (data.sequences[i, length:] == config.pad).all()
        assert int(data.labels[i]) == toy_label(seq, n, m) == int(seq.count(n) > seq.count(m))
        brute = [j for j, s in enumerate(seq) if s not in irrelevant[(n, m)]]
        assert relevant[i].nonzero().flatten().tolist() == brute == relevant_positions(seq, n, m)
        if brute:
            assert torch.allclose(gt[i, brute], torch.full((len(brute),), 1 / len(brute), dtype=gt.dtype))
            assert float(gt[i].sum()) == pytest.approx(1.0)
        else:
            assert not data.has_ground_truth()[i] and float(gt[i].sum()) == 0.0


def test_generator_frequencies_follow_the_paper():
    data = generate_toy(4000, seed=0)
    mask = data.mask
    is_n = (data.sequences == data.queries[:, :1]) & mask
    is_m = (data.sequences == data.queries[:, 1:]) & mask
    total = mask.sum()
    assert abs(float(is_n.sum() / total) - 0.25) < 0.02 and abs(float(is_m.sum() / total) - 0.25) < 0.02
    assert set(data.lengths.unique().tolist()) == set(range(1, 11))
    again = generate_toy(4000, seed=0)
    assert torch.equal(again.sequences, data.sequences) and torch.equal(again.labels, data.labels)


def test_bad_toy_settings_are_clear_errors():
    with pytest.raises(UnmaskError):
        ToyTaskConfig(num_symbols=2)
    with pytest.raises(UnmaskError):
        ToyTaskConfig(min_length=5, max_length=3)
    with pytest.raises(UnmaskError):
        generate_toy(0)


def test_gru_replacement_and_padding(tmp_path):
    torch.manual_seed(0)
    data = generate_toy(20, seed=2)
    model = GRUCounter(embed=8, hidden=8).eval()
    out = model.run(data)
    for k in range(3):
        assert torch.allclose(model.run(data, {k: out.hidden[k]}).logits, out.logits)
    # GRU states other than the last real position are never read
    h2 = out.hidden[2].clone()
    last = data.lengths - 1
    keep_last = torch.zeros_like(h2)
    keep_last[torch.arange(len(data)), last] = h2[torch.arange(len(data)), last]
    assert torch.allclose(model.run(data, {2: keep_last}).logits, out.logits)
    # extra padding columns change nothing
    wider = data.select(range(len(data)))
    wider.sequences = torch.cat([wider.sequences, torch.full((len(data), 3), data.config.pad)], 1)
    assert torch.allclose(model(wider), out.logits, atol=1e-6)
    with pytest.raises(UnmaskError, match="layer"):
        model.run(data, {3: h2})
    save_toy_model(model, tmp_path, data.config)
    loaded, config, _ = load_toy_model(tmp_path)
    assert config == data.config and torch.allclose(loaded(data), out.logits)
    adapter = ToyAdapter(model, data)
    assert adapter.num_layers == 2
    with pytest.raises(UnmaskError, match="layer"):
        adapter.logits_with(data, 5, h2)


# ---------------------------------------------------------------------------------------------- BERT
TEXTS = ["a gripping , funny film .", "dull and far too long", "it works"]


def test_hidden_state_replacement_reruns_the_rest_of_the_network(tiny_model):
    adapter = ClassifierAdapter(tiny_model)
    a = adapter.collate(["the movie was great", "the plot was thin"])  # same token count
    assert a.input_ids.shape[1] == 6 and bool(a.attention_mask.all())
    states = adapter.states(a)
    assert len(states.hidden) == adapter.num_layers + 1 == 3
    swapped = a.select([1, 0])
    for k in range(3):
        same = adapter.logits_with(a, k, states.hidden[k])
        assert torch.allclose(same, states.logits, atol=1e-6)
        # layers after k only see layer k's states: another sentence's states give that sentence's logits
        other = adapter.logits_with(swapped, k, states.hidden[k])
        assert torch.allclose(other, states.logits, atol=1e-5)
    # the classifier reads [CLS] only: last-layer states elsewhere are irrelevant, [CLS] is not
    last = states.hidden[2].clone()
    last[:, 1:] = 0
    assert torch.allclose(adapter.logits_with(a, 2, last), states.logits, atol=1e-6)
    last = states.hidden[2].clone()
    last[:, 0] = 0
    assert not torch.allclose(adapter.logits_with(a, 2, last), states.logits, atol=1e-4)
    assert torch.allclose(adapter.logits_with(a, "input", states.inputs), states.logits, atol=1e-6)
    mask_id = tiny_model.tokenizer.mask_token_id
    assert torch.equal(adapter.input_baseline(states), tiny_model.embedding_matrix[mask_id].detach())
    with pytest.raises(UnmaskError, match="layer"):
        adapter.logits_with(a, 3, last)


KEEP_SHIFT = 0.2 * math.log(5.0)  # -T log(-l / r) with T = 0.2, l = -0.2, r = 1: P(gate != 0) = sigmoid(loc + this)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _keep_by_hand(dm, tiny_model, mode, batch):
    """Keep probabilities recomputed from the model's own hidden states and the probes' weights (numpy):
    location = 10 tanh(W2 tanh(W1 v + b1) + b2) + bias with v = [x; h_k] (input) or h_k (hidden); a gate is
    kept with sigmoid(location + KEEP_SHIFT); input mode multiplies the votes of layers 0..k."""
    hf = tiny_model.model
    with torch.no_grad():
        out = hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                 token_type_ids=batch.token_type_ids, output_hidden_states=True)
        x = hf.bert.embeddings.word_embeddings(batch.input_ids).numpy()
    keep = []
    for k, h in enumerate(out.hidden_states):
        probe = dm.probes.probes[k]
        w1, b1 = probe.mlp[0].weight.detach().numpy(), probe.mlp[0].bias.detach().numpy()
        w2, b2 = probe.mlp[2].weight.detach().numpy()[0], probe.mlp[2].bias.detach().numpy()[0]
        v = np.concatenate([x, h.numpy()], -1) if mode == "input" else h.numpy()
        loc = 10.0 * np.tanh(np.tanh(v @ w1.T + b1) @ w2 + b2) + float(probe.bias.detach())
        keep.append(_sigmoid(loc + KEEP_SHIFT))
    keep = np.stack(keep, 1)  # (B, L + 1, T)
    if mode == "input":
        keep = np.cumprod(keep, 1)
    return keep * batch.attention_mask.numpy()[:, None, :]


@pytest.mark.parametrize("mode", ["input", "hidden"])
def test_explain_returns_one_record_per_layer(tiny_model, mode):
    adapter = ClassifierAdapter(tiny_model)
    torch.manual_seed(0)
    dm = diffmask_for(adapter, mode)
    batch = tiny_model.encode(TEXTS)
    # closed form first: probes that ignore their input (output weights 0) and biases 0, 1, 2
    with torch.no_grad():
        for k, probe in enumerate(dm.probes.probes):
            probe.mlp[2].weight.zero_()
            probe.mlp[2].bias.zero_()
            probe.bias.fill_(float(k))
    records = explain_diffmask(dm, tiny_model, TEXTS, layers=[0, 1, 2])
    per_layer = [_sigmoid(k + KEEP_SHIFT) for k in range(3)]  # 0.5798, 0.7895, 0.9107
    for k in range(3):
        expected = np.prod(per_layer[:k + 1]) if mode == "input" else per_layer[k]
        for i, r in enumerate(records[k]):
            assert np.allclose(r.scores, expected, atol=1e-6) and len(r.scores) == batch.lengths[i]
    # then random probes against the numpy re-computation from the model's hidden states
    for p in dm.probes.parameters():
        torch.nn.init.normal_(p, std=0.5)
    records = explain_diffmask(dm, tiny_model, TEXTS, layers=[0, 2])
    assert list(records) == [0, 2]
    keep = _keep_by_hand(dm, tiny_model, mode, batch)
    assert keep.min() < 0.2 and keep.max() > 0.8  # the random probes give varied scores, not all equal
    for k, recs in records.items():
        assert len(recs) == len(TEXTS)
        for i, r in enumerate(recs):
            n = batch.lengths[i]
            assert r.tokens == batch.tokens[i][:n] and r.method == f"diffmask_{mode}"
            assert r.params["layer"] == k and ((r.scores >= 0) & (r.scores <= 1)).all()
            assert np.allclose(r.scores, keep[i, k, :n], atol=1e-5)
    via_explain = unmask.explain(tiny_model, TEXTS, methods=[DiffMaskAttribution(dm, layer=2)])
    got = via_explain[f"diffmask_{mode}"]
    for a, b in zip(got, records[2]):
        assert np.allclose(a.scores, b.scores, atol=1e-6)
        json.dumps(a.to_dict())
    with pytest.raises(UnmaskError, match="layer"):
        explain_diffmask(dm, tiny_model, TEXTS, layers=[3])


def test_input_mode_training_step_runs_through_bert(tiny_model, tmp_path):
    from unmask.masking import DiffMaskTrainConfig, train_diffmask

    adapter = ClassifierAdapter(tiny_model)
    dm = diffmask_for(adapter, "input", eps=0.1)
    before = {k: v.clone() for k, v in dm.state_dict().items()}
    result = train_diffmask(dm, adapter, TEXTS * 3, tmp_path, DiffMaskTrainConfig(steps=3, batch_size=4),
                            progress=False, log=lambda s: None)
    assert result["steps"] == 3
    mask_id = tiny_model.tokenizer.mask_token_id
    # initialized at the [MASK] embedding, then moved a little by 3 steps of lr 3e-4
    assert torch.allclose(tiny_model.embedding_matrix[mask_id].detach(), dm.baselines[0].detach(), atol=0.05)
    assert any(not torch.equal(before[k], v) for k, v in dm.state_dict().items() if k.startswith("probes"))
    assert all(p.requires_grad for p in tiny_model.model.parameters())  # model flags restored


def test_cli_train_and_explain(tiny_model, tmp_path, capsys):
    model_dir = tmp_path / "model"
    tiny_model.save(model_dir)
    out = tmp_path / "dm"
    code = main(["diffmask", "train", "--model", str(model_dir), "--task", "sst2", "--train-limit", "12",
                 "--steps", "2", "--batch-size", "6", "--mode", "hidden", "--out", str(out), "--no-progress"])
    assert code == 0 and (out / "diffmask.safetensors").is_file()
    js = tmp_path / "e.json"
    code = main(["diffmask", "explain", "a fine film", "--model", str(model_dir), "--diffmask", str(out),
                 "--layers", "1,2", "--json", str(js), "--html", str(tmp_path / "e.html")])
    assert code == 0
    data = json.loads(js.read_text())
    assert sorted(data) == ["diffmask_hidden layer 1", "diffmask_hidden layer 2"]
    assert data["diffmask_hidden layer 1"][0]["tokens"] == ["[CLS]", "a", "fine", "film", "[SEP]"]
    assert "diffmask_hidden layer 2" in (tmp_path / "e.html").read_text()
    assert main(["diffmask", "explain", "a fine film", "--model", str(model_dir), "--diffmask", str(out),
                 "--layers", "7"]) == 2
    assert main(["diffmask", "train", "--model", str(model_dir), "--task", "sst2", "--eps", "-1",
                 "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert main(["diffmask", "explain", "a fine film", "--model", str(model_dir), "--diffmask",
                 str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "layer index" in err and "eps" in err and "not a trained DiffMask" in err


def test_saved_diffmask_refuses_a_different_model(tiny_model, tmp_path):
    from unmask.masking import load_diffmask
    from unmask.models.tiny import tiny_classifier

    dm = diffmask_for(ClassifierAdapter(tiny_model), "hidden")
    save_diffmask(dm, tmp_path)
    loaded, _ = load_diffmask(tmp_path)
    other = tiny_classifier(seed=0, layers=3)
    with pytest.raises(UnmaskError, match="hidden states"):
        explain_diffmask(loaded, other, TEXTS)
