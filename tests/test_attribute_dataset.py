"""unmask attribute-dataset: streamed, resumable Parquet output; local and Ray backends."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

import unmask
from unmask.cli import main
from unmask.dataset import DataSpec, attribute_dataset, iter_items, read_results
from unmask.errors import UnmaskError

METHODS = ["gradient", "integrated_gradients"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from unmask.models.tiny import tiny_classifier

    d = tmp_path_factory.mktemp("tiny") / "model"
    tiny_classifier(seed=0).save(d)
    return str(d)


def _rows(out):
    return read_results(out).to_pylist()


def test_rows_equal_explain_on_the_same_examples(model_dir, tmp_path):
    out = tmp_path / "r.parquet"
    result = attribute_dataset(DataSpec("sst2", limit=10), model_dir, METHODS, out, batch_size=4, progress=False)
    assert result["examples"] == 10 and result["rows"] == 20
    assert sorted(p.name for p in out.iterdir()) == ["_manifest.json", "part-000000.parquet", "part-000001.parquet",
                                                     "part-000002.parquet"]
    rows = _rows(out)
    assert [(r["index"], r["method"]) for r in rows] == [(i, m) for i in range(10) for m in METHODS]
    texts = [it.text for it in iter_items(DataSpec("sst2", limit=10))]
    ref = unmask.explain(unmask.load_model(model_dir), texts, methods=METHODS)
    for r in rows:
        rec = ref[r["method"]][r["index"]]
        assert r["text"] == rec.text and r["tokens"] == rec.tokens and r["prediction"] == rec.prediction
        np.testing.assert_allclose(r["scores"], rec.scores, rtol=1e-5, atol=1e-7)
        assert json.loads(r["params"])["token_budget"] == "auto"
    assert json.loads(rows[1]["extras"])["precision"] in ("float32", "bfloat16")
    assert rows[0]["label"] is not None
    assert pq.read_table(out).num_rows == 20  # plain pyarrow reads the directory (manifest skipped)
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["complete"] and manifest["rows"] == 20


def _cli(model_dir, out, n=48, extra=()):
    return [sys.executable, "-m", "unmask.cli", "attribute-dataset", "--data", "sst2", "--limit", str(n),
            "--model", model_dir, "--methods", ",".join(METHODS), "--out", str(out), "--batch-size", "4",
            "--precision", "float32", "--quiet", *extra]


def test_sigkill_then_resume_equals_an_uninterrupted_run(model_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full, cut = tmp_path / "full.parquet", tmp_path / "cut.parquet"
    attribute_dataset(DataSpec("sst2", limit=48), model_dir, METHODS, full, batch_size=4, precision="float32",
                      progress=False)  # uninterrupted, in this process
    proc = subprocess.Popen(_cli(model_dir, cut), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(cut.glob("part-*.parquet"))) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    parts = len(list(cut.glob("part-*.parquet")))
    assert 3 <= parts < 12, "the run must be killed part-way"
    (cut / ".part-000011.parquet.999.tmp").write_bytes(b"half a part")  # as if killed mid-write
    done = subprocess.run(_cli(model_dir, cut), env=env, check=True, capture_output=True, text=True)
    assert "resumed from an earlier run" in done.stdout
    assert not list(cut.glob(".*.tmp"))
    a, b = _rows(full), _rows(cut)
    assert len(b) == 96 and [(r["index"], r["method"]) for r in b] == [(i, m) for i in range(48) for m in METHODS]
    assert a == b  # every value, bit for bit: no duplicates, no gaps


def test_rerun_with_other_settings_is_refused(model_dir, tmp_path, capsys):
    out = tmp_path / "r.parquet"
    attribute_dataset(DataSpec("sst2", limit=4), model_dir, ["gradient"], out, batch_size=2, progress=False)
    with pytest.raises(UnmaskError, match="other settings.*methods"):
        attribute_dataset(DataSpec("sst2", limit=4), model_dir, METHODS, out, batch_size=2, progress=False)
    again = attribute_dataset(DataSpec("sst2", limit=4), model_dir, ["gradient"], out, batch_size=2, progress=False)
    assert again["computed"] == 0 and again["resumed_from"] == 4
    assert main(["attribute-dataset", "--data", "sst2", "--limit", "4", "--model", model_dir, "--methods",
                 "gradient", "--batch-size", "3", "--out", str(out), "--quiet"]) == 2
    assert "batch_size" in capsys.readouterr().err


def test_model_retrained_in_place_is_not_resumed(model_dir, tmp_path):
    """The manifest keys the model by its content: new weights under the same path refuse the stale parts;
    the same weights (also copied to another path) still resume."""
    import shutil

    from unmask.models.tiny import tiny_classifier

    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    out, spec = tmp_path / "r.parquet", DataSpec("sst2", limit=4)
    attribute_dataset(spec, str(model), ["gradient"], out, batch_size=2, progress=False)
    (out / "part-000001.parquet").unlink()  # as if killed after the first chunk
    moved = tmp_path / "moved"
    shutil.copytree(model, moved)  # same weights, other path and mtimes: still the same model
    again = attribute_dataset(spec, str(moved), ["gradient"], out, batch_size=2, progress=False)
    assert again["computed"] == 2 and again["resumed_from"] == 2
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    tiny_classifier(seed=1).save(model)  # retrained in place: same path, other weights
    with pytest.raises(UnmaskError, match="other settings.*model"):
        attribute_dataset(spec, str(model), ["gradient"], out, batch_size=2, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing reused, nothing overwritten
    fresh = attribute_dataset(spec, str(model), ["gradient"], tmp_path / "new.parquet", batch_size=2,
                              progress=False)
    assert fresh["computed"] == 4
    assert [r["scores"] for r in _rows(tmp_path / "new.parquet")] != [r["scores"] for r in _rows(out)]


def test_files_pairs_and_bad_input(model_dir, tmp_path, capsys):
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps({"premise": f"a man sleeps {i}", "hyp": "a person rests"}) for i in range(5)))
    out = tmp_path / "p.parquet"
    attribute_dataset(DataSpec(str(jsonl), text_column="premise", pair_column="hyp", label_column=None),
                      model_dir, ["gradient"], out, batch_size=2, progress=False)
    rows = _rows(out)
    assert [r["pair"] for r in rows] == ["a person rests"] * 5 and rows[0]["label"] is None
    assert rows[0]["tokens"].count("[SEP]") == 2
    import pyarrow as pa

    table = pa.table({"text": [r["text"] for r in rows], "pair": [r["pair"] for r in rows]})
    pq.write_table(table, tmp_path / "d.parquet")
    out2 = tmp_path / "p2.parquet"
    attribute_dataset(DataSpec(str(tmp_path / "d.parquet"), pair_column="pair"), model_dir, ["gradient"], out2,
                      batch_size=2, progress=False)
    assert [r["scores"] for r in _rows(out2)] == [r["scores"] for r in rows]
    csv = tmp_path / "d.csv"
    csv.write_text("sentence,label\ngood film,1\n,0\n")
    for argv, message in [
        (["--data", str(csv), "--methods", "gradient"], "no text column 'text'"),
        (["--data", str(csv), "--text-column", "sentence", "--methods", "gradient"], "row 3: empty"),
        (["--data", "sst2", "--methods", "gradent"], "unknown method"),
        (["--data", "nowhere.jsonl", "--methods", "gradient"], "data not found"),
        (["--data", "sst2", "--methods", "gradient", "--batch-size", "0"], "batch-size"),
    ]:
        assert main(["attribute-dataset", "--model", model_dir, "--out", str(tmp_path / "bad.parquet"),
                     "--quiet", *argv]) == 2
        assert message in capsys.readouterr().err


def test_ray_backend_matches_local(model_dir, tmp_path):
    """Two actors on a local Ray instance; the output directory already holds two parts of the same run
    (copied from the local run, as after a kill): Ray computes the other four, and all rows equal local's."""
    import shutil

    ray = pytest.importorskip("ray")
    local, out = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    spec = DataSpec("sst2", limit=24)
    attribute_dataset(spec, model_dir, METHODS, local, batch_size=4, precision="float32", progress=False)
    out.mkdir()
    for name in ("_manifest.json", "part-000001.parquet", "part-000004.parquet"):
        shutil.copy(local / name, out / name)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = attribute_dataset(spec, model_dir, METHODS, out, batch_size=4, precision="float32",
                                   backend="ray", workers=2, progress=False)
    finally:
        ray.shutdown()
    assert result["workers"] == 2 and result["computed"] == 16 and result["resumed_from"] == 8
    assert _rows(out) == _rows(local)
