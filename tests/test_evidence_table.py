"""bench/evidence.py's table: each column reads its own suite, and a layer's verdict against its control follows the
adherence gap and its interval (a hand-made report, no model)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent


def load_evidence() -> ModuleType:
    spec = importlib.util.spec_from_file_location("evidence_bench", REPO / "bench" / "evidence.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def suites(adherence: float, override: float, fidelity: float) -> dict:
    per = {"a.one": {"adherence": adherence, "items": 40}, "a.two": {"adherence": adherence, "items": 40}}
    return {"fidelity": {"fidelity": fidelity}, "adherence": {"adherence": adherence, "per_clause": per},
            "override": {"adherence": override, "per_clause": {k: v | {"adherence": override} for k, v in per.items()}}}


def report() -> dict:
    rows = [{"name": "base", "role": "base", "kind": "base", "manifesto": None, "folder": None},
            {"name": "m-hyper", "role": "layer", "kind": "hyper", "manifesto": "m", "folder": None},
            {"name": "m-hyper-control", "role": "control", "kind": "hyper", "manifesto": "m", "folder": None}]
    results = {"base": suites(0.2, 0.1, 0.0), "m-hyper": suites(0.8, 0.3, 0.9), "m-hyper-control": suites(0.7, 0.6, 0.1)}
    return {"rows": rows, "results": results, "base_by_manifesto": {"m": results["base"]}, "manifestos": {"m": {"name": "m"}}}


def test_adherence_and_override_each_come_from_their_own_suite():
    rows = {r["row"]: r for r in load_evidence().table(report(), {})}
    assert rows["m-hyper"]["adherence"] == 0.8 and rows["m-hyper"]["override"] == 0.3
    assert rows["m-hyper-control"]["adherence"] == 0.7 and rows["m-hyper-control"]["override"] == 0.6
    assert rows["base"]["adherence"] == 0.2 and rows["base"]["override"] == 0.1


def test_a_gap_inside_the_interval_is_called_within_noise():
    rows = {r["row"]: r for r in load_evidence().table(report(), {})}
    # 0.8 against 0.7 on 80 items each: the gap is inside the combined 95% interval
    assert rows["m-hyper"]["vs_control_note"] == "above (within noise)"
    far = report()
    far["results"]["m-hyper-control"] = suites(0.2, 0.2, 0.1)
    rows = {r["row"]: r for r in load_evidence().table(far, {})}
    assert rows["m-hyper"]["vs_control_note"] == "above"


def test_rows_scored_again_replace_theirs_and_keep_the_order_of_the_folders():
    evidence = load_evidence()
    old = report()
    old["rows"][1]["folder"], old["rows"][2]["folder"] = "/l/m-hyper", "/l/m-hyper-control"
    fresh = {"rows": [{"name": "base", "role": "base", "kind": "base", "manifesto": None, "folder": None},
                      {"name": "m-hyper-control", "role": "control", "kind": "hyper", "manifesto": "m", "folder": "/l/m-hyper-control"}],
             "results": {"base": suites(0.0, 0.0, 0.0), "m-hyper-control": suites(0.1, 0.1, 0.0)}}
    folders = [Path("/l/m-hyper"), Path("/l/m-hyper-control")]
    merged = evidence.merge_rows(evidence.keep_rows(old, folders[:1]), fresh, folders)
    assert [r["name"] for r in merged["rows"]] == ["base", "m-hyper", "m-hyper-control"]
    assert merged["results"]["base"] == old["results"]["base"]  # the base of the first pass is kept
    assert merged["results"]["m-hyper-control"]["adherence"]["adherence"] == 0.1
    assert evidence.keep_rows(old, [])["rows"] == old["rows"][:1]


def test_the_realistic_table_keeps_rows_it_did_not_measure(tmp_path):
    """bench/realistic.py on a clone without its kept rows: the published rows are carried, marked [earlier] and
    counted in no target, and a row measured again replaces its earlier line."""
    spec = importlib.util.spec_from_file_location("realistic_bench", REPO / "bench" / "realistic.py")
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    table = tmp_path / "RESULTS-realistic.md"
    table.write_text("# t\n\nMachine: Old CPU, 2 threads.\n\n| manifesto | kind | compile s |\n| --- | --- | ---: |\n"
                     "| pirate | hyper | 20 |\n| clinic (unseen) | distill (5m, no control) | 303 |\n")
    old = bench.carried(table)
    assert old["machine"] == "Old CPU, 2 threads" and set(old["lines"]) == {"pirate:hyper", "clinic:distill"}
    by_type = {t: {"items": 1, "layer": 0.9, "control": 0.1} for t in bench.TYPES}
    row = {"manifesto": "pirate", "kind": "hyper", "unseen": False, "machine": "New CPU", "compile_s": 19.0, "settings": {},
           "template": {}, "realistic": {"layer": 0.8, "control": 0.1}, "by_type": by_type, "items": 31}
    md = bench.markdown({"rows": {"pirate:hyper": row}, "carried": old})
    assert "| clinic (unseen) [earlier] | distill (5m, no control) | 303 |" in md and "pirate [earlier]" not in md
    assert "Old CPU, 2 threads" in md and "New CPU" in md
    assert "hyper realistic ≥ 0.75 on every manifesto measured: met" in md and "distill realistic" not in md


def test_paired_differences_read_the_items_the_rows_disagree_on(tmp_path):
    """bench/paired.py: a row that flips 2 of 8 HellaSwag items (one each way) is +0 points, its interval set by those
    two; twins are shown once; a sycophancy shift is paired with the base's."""
    import json

    spec = importlib.util.spec_from_file_location("paired_bench", REPO / "bench" / "paired.py")
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    base_hits, row_hits = [1, 0, 1, 0, 1, 0, 1, 0], [0, 1, 1, 0, 1, 0, 1, 0]
    syc = lambda shifts: {"sycophancy": 0.5, "nlp_survey": {"shifts": shifts}}  # noqa: E731
    report = {"base": {"name": "b", "sha256": "0" * 64}, "twins": [["teacher", "m-prompt"]],
              "rows": [{"name": n} for n in ("base", "teacher", "m-prompt", "m-hyper")],
              "results": {"base": {"hellaswag": {"accuracy": 0.5, "hits": base_hits}, "sycophancy": syc([0.0, 0.1, 0.0])},
                          "teacher": {"hellaswag": {"accuracy": 0.5, "hits": base_hits}, "sycophancy": syc([0.0, 0.1, 0.0])},
                          "m-prompt": {"hellaswag": {"accuracy": 0.5, "hits": base_hits}, "sycophancy": syc([0.0, 0.1, 0.0])},
                          "m-hyper": {"hellaswag": {"accuracy": 0.5, "hits": row_hits}, "sycophancy": syc([0.1, 0.2, 0.1])}}}
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "report.json").write_text(json.dumps(report))
    md = bench.markdown([tmp_path / "r"])
    assert "| m-hyper | 0.500 | +0.0 ± 37.0 | 25% |" in md and "m-prompt" not in md
    assert "| teacher | 0.500 | +0.0 ± 0.0 | 0% | 0 |" in md
    assert "| m-hyper | 0.50 | +0.133 | +0.100 ± 0.000 |" in md
