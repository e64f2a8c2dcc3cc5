import json

from stemsift import memo


def test_store_lookup_and_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("STEMSIFT_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "result"
    src.mkdir()
    (src / "a.json").write_text(json.dumps({"x": 1}))
    k = memo.key({"b": [1, 2], "a": "x"})
    assert k == memo.key({"a": "x", "b": [1, 2]}) != memo.key({"a": "x", "b": [2, 1]})
    assert memo.lookup("train", k) is None
    memo.store("train", k, src)
    hit = memo.lookup("train", k)
    assert hit is not None and memo.files_sha1(hit) == memo.files_sha1(src)
    assert memo.code_key("stemsift.separate.model") != memo.code_key("stemsift.separate.model", "stemsift.separate.evaluate")
    dead = tmp_path / "cache" / "train" / f".{k}x.tmp-999999999"  # a writer killed mid-copy (no such pid)
    dead.mkdir()
    memo.store("train", k + "x", src)
    assert not dead.exists() and memo.lookup("train", k + "x") is not None
