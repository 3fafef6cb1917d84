"""precision="auto": bf16 only where native and measured faster; float32 otherwise; recorded per record."""
import pytest
import torch

import unmask
from unmask.attribution import precision as prec
from unmask.attribution.gradient import Gradient
from unmask.attribution.integrated_gradients import IntegratedGradients
from unmask.attribution.smoothgrad import SmoothGrad
from unmask.errors import UnmaskError

TEXTS = ["a gripping , funny film .", "dull and far too long"]


@pytest.fixture
def probes(monkeypatch):
    """A clean probe cache, with ``set(speedup, error)`` to plant a measurement for any model."""
    monkeypatch.setattr(prec, "_PROBES", {})

    def plant(speedup: float, error: float = 0.01):
        monkeypatch.setattr(prec, "_measure", lambda model: prec.Probe(speedup, 1.0, error))
    return plant


def test_no_native_bf16_cpu_gives_float32_without_measuring(tiny_model, monkeypatch, probes):
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(prec, "_measure", lambda model: pytest.fail("must not measure without native bf16"))
    assert tiny_model.embedding_matrix.device == torch.device("cpu")
    assert prec.resolve_precision("auto", tiny_model) == "float32"
    recs = unmask.explain(tiny_model, TEXTS, methods=["gradient", "smoothgrad", "integrated_gradients"])
    for key, records in recs.items():
        assert all(r.extras["precision"] == "float32" for r in records), key
        assert all(r.params["precision"] == "auto" for r in records), key  # requested; resolved in extras


def test_native_bf16_follows_the_measurement(tiny_model, monkeypatch, probes):
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: True)
    probes(speedup=2.0)
    assert prec.resolve_precision("auto", tiny_model) == "bfloat16"
    probes(speedup=1.0)
    prec._PROBES.clear()
    assert prec.resolve_precision("auto", tiny_model) == "float32"


def test_measured_once_per_model_shape(tiny_model, monkeypatch, probes):
    calls = []
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(prec, "_measure", lambda model: calls.append(1) or prec.Probe(3.0, 1.0, 0.02))
    for _ in range(3):
        prec.resolve_precision("auto", tiny_model)
    assert len(calls) == 1
    from unmask.models.tiny import tiny_classifier

    prec.resolve_precision("auto", tiny_classifier(hidden=48, heads=4))  # another width: measured again
    assert len(calls) == 2


def test_bf16_records_its_precision_and_error(tiny_model, monkeypatch, probes):
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: True)
    probes(speedup=2.0, error=0.0123)
    recs = unmask.explain(tiny_model, TEXTS, methods=["gradient", "smoothgrad"])
    for records in recs.values():
        assert {r.extras["precision"] for r in records} == {"bfloat16"}
        assert {r.extras["precision_error"] for r in records} == {0.0123}
    # the scores really come from bf16 autocast: equal to an explicit bfloat16 run, not to float32
    auto = recs["gradient"][0].scores
    bf16 = unmask.explain(tiny_model, TEXTS, methods=[Gradient(precision="bfloat16")])["gradient"][0].scores
    f32 = unmask.explain(tiny_model, TEXTS, methods=[Gradient(precision="float32")])["gradient"][0].scores
    assert (auto == bf16).all() and not (auto == f32).all()


def test_ig_keeps_float32_when_bf16_error_exceeds_its_tolerance(tiny_model, monkeypatch, probes):
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: True)
    probes(speedup=2.0, error=0.02)
    assert prec.resolve_precision("auto", tiny_model) == "bfloat16"
    ig = unmask.explain(tiny_model, TEXTS, methods=[IntegratedGradients(tolerance=1e-3)])["integrated_gradients"]
    assert {r.extras["precision"] for r in ig} == {"float32"}
    fixed = unmask.explain(tiny_model, TEXTS, methods=[IntegratedGradients(tolerance=None, steps=8)])
    assert {r.extras["precision"] for r in fixed["integrated_gradients"]} == {"bfloat16"}


def test_ig_completeness_is_measured_in_float32(tiny_model):
    """Under bf16 the path gradients are bf16, but F(x) - F(0) (delta) comes from float32 forwards: equal to
    a float32 run's delta, and the error is |sum of scores - that delta|."""
    bf = unmask.explain(tiny_model, TEXTS, methods=[IntegratedGradients(steps=8, tolerance=None,
                                                                        precision="bfloat16")])
    f32 = unmask.explain(tiny_model, TEXTS, methods=[IntegratedGradients(steps=8, tolerance=None,
                                                                         precision="float32")])
    for a, b in zip(bf["integrated_gradients"], f32["integrated_gradients"]):
        assert a.extras["precision"] == "bfloat16" and b.extras["precision"] == "float32"
        assert a.extras["delta"] == b.extras["delta"]
        assert a.extras["completeness_error"] == pytest.approx(abs(a.scores.sum() - a.extras["delta"]), abs=1e-6)
        assert not (a.scores == b.scores).all()


def test_cuda_follows_the_device(monkeypatch, probes):
    """Device plumbing without a GPU: a model whose embeddings report a CUDA device resolves by
    torch.cuda.is_bf16_supported(), never by the CPU flags."""
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: pytest.fail("CPU flags asked for a CUDA model"))

    class FakeCuda:
        embedding_matrix = torch.zeros(3, 2)

    monkeypatch.setattr(prec, "model_device", lambda model: torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert prec.resolve_precision("auto", FakeCuda()) == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert prec.resolve_precision("auto", FakeCuda()) == "float32"


def test_cpu_device_explicitly(tiny_model, monkeypatch, probes):
    """The device comes from the model's word embeddings; a CPU model asks the CPU detector."""
    from unmask.attribution.budget import model_device

    asked = []
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: asked.append(1) or False)
    assert model_device(tiny_model) == torch.device("cpu")
    assert prec.resolve_precision("auto", tiny_model) == "float32" and asked


def test_float64_models_stay_float32(tiny_model_f64, monkeypatch, probes):
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: True)
    probes(speedup=10.0)
    assert prec.resolve_precision("auto", tiny_model_f64) == "float32"


def test_detector_reads_cpu_flags(monkeypatch):
    monkeypatch.setattr(prec, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert prec.cpu_has_native_bf16()
    monkeypatch.setattr(prec, "cpu_flags", lambda: frozenset({"avx512f", "avx2"}))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert not prec.cpu_has_native_bf16()


@pytest.mark.real_precision_probe
def test_real_probe_on_the_tiny_model(tiny_model, probes):
    p = prec.probe(tiny_model)
    assert p.float32_seconds > 0 and p.bfloat16_seconds > 0
    assert 0 < p.relative_error < 0.1  # bf16 keeps ~3 significant digits


def test_bad_precision_is_one_clear_error():
    for make in (lambda: Gradient(precision="fp16"), lambda: SmoothGrad(precision="half"),
                 lambda: IntegratedGradients(precision="float16")):
        with pytest.raises(UnmaskError, match="precision"):
            make()
