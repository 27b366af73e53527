import json

from ttc.results import ResultsStore, cell_key, load_records


def test_append_resume_and_torn_line(tmp_path):
    p = tmp_path / "results.jsonl"
    s = ResultsStore(p)
    s.add({"key": cell_key("m", 1, 0), "accuracy": 0.5})
    s.add({"key": cell_key("m", 2, 0), "accuracy": 0.6})
    s.add({"key": cell_key("m", 2, 0), "accuracy": 0.9})  # duplicate key: ignored
    with open(p, "a") as f:  # an interrupted write
        f.write('{"key": "m|4|0|", "accur')
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
