"""unmask.jsonl_cache: the append-only per-item cache of long experiment runs (resume, torn lines, settings)."""
import json

import pytest

from unmask.cache import file_stamp, model_fingerprint
from unmask.errors import UnmaskError
from unmask.jsonl_cache import JsonlCache, read_jsonl, weights_stamp

CONFIG = {"model": "m", "weights": "12:34", "seed": 0, "params": {"steps": 8}}


def lines(path) -> list:
    text = path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n"), f"{path} does not end on a fresh line: {text[-40:]!r}"
    return [json.loads(line) for line in text.splitlines()]


def test_append_then_reopen_resumes_the_items(tmp_path):
    path = tmp_path / "runs" / "f_orig.jsonl"
    cache = JsonlCache(path, CONFIG)
    assert path.parent.is_dir() and not path.exists() and len(cache) == 0
    assert json.loads(path.with_suffix(".config.json").read_text()) == CONFIG  # settings pinned on disk
    cache.append([{"key": 0, "result": [1, 2]}, {"key": 1, "result": "b"}])
    assert lines(path) == [{"key": 0, "result": [1, 2]}, {"key": 1, "result": "b"}]

    again = JsonlCache(path, dict(CONFIG))  # a new run with the same settings
    assert again.items == {0: {"key": 0, "result": [1, 2]}, 1: {"key": 1, "result": "b"}}
    assert 0 in again and 1 in again and 2 not in again
    again.append([{"key": 2, "result": None}])
    assert [r["key"] for r in lines(path)] == [0, 1, 2]  # appended, not rewritten
    assert read_jsonl(path) == JsonlCache(path, CONFIG).items == {
        0: {"key": 0, "result": [1, 2]}, 1: {"key": 1, "result": "b"}, 2: {"key": 2, "result": None}}


def test_missing_is_exactly_the_keys_not_written(tmp_path):
    path = tmp_path / "c.jsonl"
    cache = JsonlCache(path, CONFIG)
    keys = list(range(6))
    assert cache.missing(keys) == keys
    cache.append([{"key": k} for k in (4, 1)])
    cache.append([{"key": "trigger"}])
    assert cache.missing(keys) == [0, 2, 3, 5]  # in the order asked
    assert JsonlCache(path, CONFIG).missing(keys + ["trigger", "other"]) == [0, 2, 3, 5, "other"]
    assert cache.missing([]) == []


def test_a_torn_last_line_is_dropped_and_the_file_repaired(tmp_path):
    path = tmp_path / "c.jsonl"
    JsonlCache(path, CONFIG).append([{"key": 0, "v": "a"}, {"key": 1, "v": "b"}])
    with open(path, "a", encoding="utf-8") as f:  # killed half-way through writing item 2
        f.write(json.dumps({"key": 2, "v": "c" * 50})[:30])
    assert read_jsonl(path) == {0: {"key": 0, "v": "a"}, 1: {"key": 1, "v": "b"}}

    cache = JsonlCache(path, CONFIG)
    assert cache.missing([0, 1, 2]) == [2]
    assert path.read_text(encoding="utf-8") == '{"key": 0, "v": "a"}\n{"key": 1, "v": "b"}\n'  # tail removed
    cache.append([{"key": 2, "v": "c"}])
    assert lines(path) == [{"key": 0, "v": "a"}, {"key": 1, "v": "b"}, {"key": 2, "v": "c"}]
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_a_complete_last_line_without_newline_is_kept(tmp_path):
    path = tmp_path / "c.jsonl"
    JsonlCache(path, CONFIG)
    path.write_text('{"key": 0, "v": 1}\n{"key": 1, "v": 2}', encoding="utf-8")  # killed before the "\n"
    cache = JsonlCache(path, CONFIG)
    assert cache.missing([0, 1]) == []
    cache.append([{"key": 2, "v": 3}])
    assert lines(path) == [{"key": 0, "v": 1}, {"key": 1, "v": 2}, {"key": 2, "v": 3}]


def test_other_settings_raise_naming_the_changed_key(tmp_path):
    path = tmp_path / "c.jsonl"
    JsonlCache(path, CONFIG).append([{"key": 0}])
    before = path.read_bytes(), path.with_suffix(".config.json").read_bytes()

    with pytest.raises(UnmaskError) as e:
        JsonlCache(path, {**CONFIG, "weights": "99:1"})
    msg = str(e.value)
    assert str(path) in msg and "differing: weights;" in msg and "'12:34' -> '99:1'" in msg
    assert "Delete it and c.config.json" in msg
    assert "seed" not in msg and "params" not in msg  # only what changed is named

    with pytest.raises(UnmaskError, match="differing: params, seed;"):
        JsonlCache(path, {"model": "m", "weights": "12:34", "params": {"steps": 32}})  # one changed, one gone
    with pytest.raises(UnmaskError, match="differing: extra"):
        JsonlCache(path, {**CONFIG, "extra": 1})  # a new setting is a change too
    assert (path.read_bytes(), path.with_suffix(".config.json").read_bytes()) == before  # nothing touched

    same = JsonlCache(path, {**CONFIG, "params": {"steps": 8}})  # equal settings (as JSON) are accepted
    assert same.missing([0, 1]) == [1]
    JsonlCache(tmp_path / "t.jsonl", {"shape": (1, 2)})
    JsonlCache(tmp_path / "t.jsonl", {"shape": [1, 2]})  # a tuple reads back as a list: the same settings


def test_unreadable_settings_and_keyless_records_raise(tmp_path):
    path = tmp_path / "c.jsonl"
    path.with_suffix(".config.json").write_text("{not json")
    with pytest.raises(UnmaskError, match="c.config.json: unreadable settings"):
        JsonlCache(path, CONFIG)
    cache = JsonlCache(tmp_path / "d.jsonl", CONFIG)
    with pytest.raises(UnmaskError, match="needs a 'key'"):
        cache.append([{"key": 0}, {"result": 1}])
    assert not (tmp_path / "d.jsonl").exists() and cache.missing([0]) == [0]  # nothing of the batch written


def test_weights_stamp_keeps_the_format_of_caches_on_disk(tmp_path):
    from unmask.models.tiny import tiny_classifier

    d = tiny_classifier(seed=0).save(tmp_path / "m")
    st = (d / "model.safetensors").stat()
    assert weights_stamp(d) == file_stamp(d / "model.safetensors") == f"{st.st_size}:{st.st_mtime_ns}"
    assert weights_stamp(tmp_path) == "missing"
    assert model_fingerprint(d) != weights_stamp(d)  # why the library's model fingerprint is not used here
