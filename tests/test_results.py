import json
import os
import warnings

import pytest

from ttc.results import ResultsStore, ResultsStoreWarning, cell_key, load_records


def test_append_resume_and_torn_line(tmp_path):
    p = tmp_path / "results.jsonl"
    s = ResultsStore(p)
    s.add({"key": cell_key("m", 1, 0), "accuracy": 0.5})
    s.add({"key": cell_key("m", 2, 0), "accuracy": 0.6})
    s.add({"key": cell_key("m", 2, 0), "accuracy": 0.9})  # duplicate key: ignored
    with open(p, "a") as f:  # an interrupted write
        f.write('{"key": "m|4|0|", "accur')
    with pytest.warns(ResultsStoreWarning, match="torn last line"):
        s2 = ResultsStore(p)
    assert [r["accuracy"] for r in s2.records] == [0.5, 0.6]
    assert s2.has(cell_key("m", 2, 0)) and not s2.has(cell_key("m", 4, 0))
    s2.add({"key": cell_key("m", 4, 0), "accuracy": 0.7})
    lines = p.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(x) for x in lines)
    assert len(load_records(tmp_path)) == 3


def test_mirror_receives_new_records(tmp_path):
    got = []
    s = ResultsStore(tmp_path / "r.jsonl", mirror=got.append)
    s.add({"key": "a", "x": 1})
    s.add({"key": "a", "x": 2})
    assert got == [{"key": "a", "x": 1}]


def _line(key: str, **fields) -> str:
    return json.dumps({"key": key, **fields}, sort_keys=True) + "\n"


def test_damaged_lines_are_set_aside(tmp_path):
    p = tmp_path / "results.jsonl"
    bad = ['{"key": "b", "accuracy": 0.\n',  # damaged (not JSON)
           '[1, 2, 3]\n', '{"no_key": 1}\n', '{"key": 7}\n',  # foreign JSON lines
           _line("a", accuracy=0.9)]  # a second record of key "a"
    torn = '{"key": "d", "accu'
    good = [_line("a", accuracy=0.5), _line("c", accuracy=0.6)]
    p.write_text(good[0] + bad[0] + bad[1] + "\n" + bad[2] + good[1] + bad[3] + bad[4] + torn)
    with pytest.warns(ResultsStoreWarning) as caught:
        s = ResultsStore(p)
    msg = str(caught[0].message)
    assert str(p) in msg and "results.jsonl.rejected" in msg
    for n in (2, 3, 5, 7, 8, 9):  # 1-based line numbers of the bad lines (line 4 is blank)
        assert f" {n} (" in msg
    assert "duplicate key 'a'" in msg and "torn last line" in msg
    assert [(r["key"], r["accuracy"]) for r in s.records] == [("a", 0.5), ("c", 0.6)]
    assert p.read_text() == "".join(good)
    rejected = p.with_name("results.jsonl.rejected")
    assert rejected.read_text() == "".join(bad) + torn + "\n"
    s.add({"key": "d", "accuracy": 0.7})  # the store works as before
    assert _keys(p) == ["a", "c", "d"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a repaired file opens without a warning
        assert [r["key"] for r in ResultsStore(p).records] == ["a", "c", "d"]
    assert rejected.read_text() == "".join(bad) + torn + "\n"  # nothing set aside twice


def test_damage_appended_by_another_writer_is_set_aside_before_appending(tmp_path):
    p = tmp_path / "results.jsonl"
    s = ResultsStore(p)
    s.add({"key": "a"})
    with open(p, "a") as f:
        f.write('{"key": "b"}\n{"key": "x", "oops')  # a record, then a torn write
    with pytest.warns(ResultsStoreWarning, match="line.s. 3 .torn last line"):
        s.add({"key": "c"})
    assert _keys(p) == ["a", "b", "c"] and [r["key"] for r in s.records] == ["a", "b", "c"]
    assert p.with_name("results.jsonl.rejected").read_text() == '{"key": "x", "oops\n'


def test_last_record_without_newline_is_kept(tmp_path):
    p = tmp_path / "results.jsonl"
    p.write_text(_line("a") + _line("b").strip())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = ResultsStore(p)
    assert [r["key"] for r in s.records] == ["a", "b"]
    s.add({"key": "c"})
    assert _keys(p) == ["a", "b", "c"]


def test_refresh_reads_other_writers_records(tmp_path):
    p = tmp_path / "results.jsonl"
    s1, s2 = ResultsStore(p), ResultsStore(p)
    s1.add({"key": "a", "x": 1})
    assert not s2.has("a")
    assert s2.refresh() == [{"key": "a", "x": 1}] and s2.has("a")
    assert s2.refresh() == []
    s2.add({"key": "a", "x": 2})  # already in the file: skipped
    s2.add({"key": "b", "x": 3})
    assert s1.refresh() == [{"key": "b", "x": 3}]
    assert _keys(p) == ["a", "b"]


def test_claim_release_and_add(tmp_path):
    p = tmp_path / "results.jsonl"
    s1, s2 = ResultsStore(p), ResultsStore(p)  # two stores hold separate claims
    locks = p.with_name("results.jsonl.locks")
    assert s1.claim("a") and s1.claim("a")  # claiming again keeps the claim
    assert not s2.claim("a")
    s1.release("a")
    assert s2.claim("a") and not s1.claim("a")
    s2.add({"key": "a"})  # releases the claim
    assert not s1.claim("a")  # the record is in the file (read under the lock)
    assert s1.has("a")
    assert s1.claim("b")
    s1.close()  # releases every claim
    assert s2.claim("b")
    s2.release("b")
    assert sorted(os.listdir(locks)) == ["store.lock"]
    with pytest.raises(ValueError, match="closed"):
        s1.add({"key": "c"})
    with pytest.raises(ValueError, match="string 'key'"):
        s2.add({"key": 3})


def test_unwritable_store_skips_bad_lines(tmp_path, monkeypatch):
    d = tmp_path / "run"
    d.mkdir()
    (d / "results.jsonl").write_text(_line("a") + "garbage\n" + _line("b"))
    monkeypatch.setattr(ResultsStore, "_open_store_lock", lambda self: None)  # as if read-only
    with pytest.warns(ResultsStoreWarning, match=r"line\(s\) 2 .*not writable"):
        recs = load_records(d)
    assert [r["key"] for r in recs] == ["a", "b"]
    assert (d / "results.jsonl").read_text() == _line("a") + "garbage\n" + _line("b")


def _keys(p) -> list[str]:
    return [json.loads(line)["key"] for line in p.read_text().splitlines()]
