"""``unmask.io``: atomic writes leave either the old or the new file, never a partial one or a temp file."""
import json
import os

import pytest

from unmask.io import write_bytes_atomic, write_json_atomic, write_text_atomic


def test_writes_text_and_json_and_replaces_old_content(tmp_path):
    p = write_text_atomic(tmp_path / "sub" / "a.txt", "héllo <b>")
    assert p.read_text(encoding="utf-8") == "héllo <b>"
    write_json_atomic(p, {"b": [1, 2]})
    assert p.read_text() == '{\n  "b": [\n    1,\n    2\n  ]\n}\n' and json.loads(p.read_text()) == {"b": [1, 2]}
    assert sorted(x.name for x in p.parent.iterdir()) == ["a.txt"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    p = write_text_atomic(tmp_path / "a.json", "old")
    with pytest.raises(TypeError):
        write_json_atomic(p, {"x": object()})  # not serializable: fails before anything is written
    with pytest.raises(TypeError):
        write_bytes_atomic(p, "not bytes")  # fails while writing the temporary file
    assert p.read_text() == "old" and [x.name for x in tmp_path.iterdir()] == ["a.json"]


def test_output_files_get_ordinary_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        p = write_text_atomic(tmp_path / "r.html", "x")
    finally:
        os.umask(mask)
    assert p.stat().st_mode & 0o777 == 0o644


def test_io_helpers_are_imported_from_unmask_io_only():
    """training/checkpoint.py no longer re-exports the atomic writers; no module imports them from there."""
    import re
    from pathlib import Path

    import unmask.training.checkpoint as checkpoint

    assert not any(hasattr(checkpoint, n) for n in ("write_json_atomic", "write_text_atomic", "write_bytes_atomic"))
    root = Path(__file__).resolve().parents[1]
    pattern = re.compile(r"from unmask\.training\.checkpoint import[^\n]*write_\w+_atomic|checkpoint\.write_\w+_atomic")
    offenders = [str(p.relative_to(root)) for d in ("src", "tests", "bench", "experiments") if (root / d).is_dir()
                 for p in (root / d).rglob("*.py") if pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
