"""The evidence table: identity layers against retraining (SFT, DPO) on the same manifesto, budget and items.

    .venv/bin/python bench/evidence.py            # honest.md and pirate.md, every kind and its control, 2 cores
    .venv/bin/python bench/evidence.py --quick    # a smoke run: one manifesto, 2-minute budgets, small item counts

For each manifesto it compiles every kind (prompt, cache, steer, distill, hyper, sft, dpo) and each one's control (the
same kind compiled from `Manifesto.shuffled(0)`; a trained kind's control for as many steps as the layer took) into
<out>/layers/. Then it scores
base, teacher and every layer through `credo eval`, twice: the behaviour suites at --size items and HellaSwag + MMLU at
--capability-size on all but the controls (a ratio to the base needs hundreds of items to resolve a few points; a
control's capability says nothing about its manifesto, so its "cap. kept" is its perplexity alone). Last it measures, on the
llama.cpp engine that serves them, how long each identity takes to swap in (load + prepare on a running base) and to
switch to between requests. It writes <out>/evidence.md and evidence.json (the table with 95% intervals, per-clause
adherence, verdicts against the controls), frontier.png (adherence against capability kept) and override.png
(adherence under override and jailbreak wrappers against plain adherence).

Intervals are normal approximations from the item counts: adherence as the mean of per-clause proportions; HellaSwag
and MMLU ratios to the base by the delta method, paired item by item (every row answers the same items).
Rerunning with the same --out skips the layers already written and resumes any interrupted
compile from its checkpoint; delete some layer folders first and only those are compiled and scored again, the other
rows kept (how the sft and dpo rows of the committed run were redone after they came to follow the chosen precision).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from credo.eval.paired import Z, paired, shifts
from credo.fsutil import write_text_atomic

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "bench" / "RESULTS-evidence.md"  # a full run's table, what README's Evidence section quotes
PLOTS = ROOT / "docs" / "evidence"  # a full run's two plots, shown in README
KINDS = ["prompt", "cache", "steer", "distill", "hyper", "sft", "dpo"]
TRAINED = {"distill", "sft", "dpo"}
CAPABILITY = ["hellaswag", "mmlu"]
BEHAVIOUR = ["fidelity", "adherence", "override", "perplexity", "advbench", "jbb", "jailbreak", "xstest", "sycophancy", "truthfulqa", "cost"]
# The defaults are the run README quotes, sized to finish in under 3 hours on 2 cores: two manifestos, 3-minute budgets,
# 16 items per behaviour suite, 60 HellaSwag and MMLU items per layer. More manifestos or items: pass them, and budget the hours.
DEFAULT_MANIFESTOS = ["honest.md", "pirate.md"]


# --- compiling ------------------------------------------------------------------------------------------------------
def settings_for(kind: str, budget: str, prompts: int = 0) -> dict[str, str]:
    """Every kind as the evidence compiles it: no compile-time report (credo eval measures); trained kinds on one budget
    and one prompt set (`prompts` 0: all)."""
    if kind in TRAINED:
        return {"budget": budget, "heldout": "0", "control": "false", "prompts": str(prompts)}
    return {"steer": {"heldout": "0", "control": "false"}, "hyper": {"report": "false"}}.get(kind, {})


def compile_all(base: Any, manifestos: list[Path], kinds: list[str], budget: str, prompts: int, out: Path, log: Any) -> list[Path]:
    """Each kind and its control per manifesto, written once: a folder already there (same manifesto) is kept."""
    from credo.errors import CredoError
    from credo.layers import compile_layer, save_layer
    from credo.layers.folder import read_info
    from credo.manifesto import Manifesto

    folders = []
    for path in manifestos:
        manifesto = Manifesto.from_file(path)
        for kind in kinds:
            steps = None  # the layer's training steps: its control gets exactly as many (a clock would give it what the machine's load left)
            for control in (False, True):
                m = manifesto.shuffled(0) if control else manifesto
                name = f"{path.stem}-{kind}" + ("-control" if control else "")
                folder = out / "layers" / name
                folders.append(folder)
                try:
                    info = read_info(folder)
                    if info.manifesto["sha256"] == m.sha256:
                        steps = info.report.get("steps")
                        log(f"{name}: kept from an earlier run")
                        continue
                except CredoError:
                    pass
                start = time.perf_counter()
                settings = settings_for(kind, str(max(steps, 1)) if control and steps is not None else budget, prompts)
                layer = compile_layer(m, base, kind, settings, name=name)
                save_layer(layer, folder, overwrite=True)
                steps = layer.info.report.get("steps")
                log(f"{name}: compiled in {time.perf_counter() - start:.0f}s" + (f" ({steps} steps)" if steps is not None else ""))
    return folders


# --- evaluating -----------------------------------------------------------------------------------------------------
def run_eval(folders: list[Path], out: Path, suites: list[str], size: int, threads: int, data: Path | None) -> dict[str, Any]:
    """`credo eval` itself, in its own process; returns its report.json. An earlier report of the same sizes is kept
    and only the folders it lacks, or that were compiled again since it was written, are scored and merged into it
    (base and teacher rows are kept: every suite takes its items in a fixed order, so they would come out the same)."""
    done = out / "report.json"
    old = json.loads(done.read_text()) if done.is_file() else None
    if old is not None and old.get("evidence_size") == size:
        written = done.stat().st_mtime
        scored = {r["folder"] for r in old["rows"] if r["folder"]}
        stale = [f for f in folders if str(f) not in scored or (f / "layer.json").stat().st_mtime > written]
        if not stale:
            return keep_rows(old, folders)
        report = keep_rows(old, [f for f in folders if f not in stale])
        fresh = score(stale, out / "partial", suites, size, threads, data)
        report = merge_rows(report, fresh, folders)
    else:
        report = score(folders, out, suites, size, threads, data)
    write_text_atomic(done, json.dumps(report | {"evidence_size": size}, indent=2, ensure_ascii=False) + "\n")
    return report


def score(folders: list[Path], out: Path, suites: list[str], size: int, threads: int, data: Path | None) -> dict[str, Any]:
    cmd = [str(Path(sys.executable).with_name("credo")), "eval", "-o", str(out), "--suites", ",".join(suites), "--size", str(size),
           "--threads", str(threads)] + (["--data", str(data)] if data else []) + [str(f) for f in folders]
    subprocess.run(cmd, check=True)
    return json.loads((out / "report.json").read_text())


def keep_rows(report: dict[str, Any], folders: list[Path]) -> dict[str, Any]:
    """The report with only base, teachers and the rows of `folders`."""
    wanted = set(map(str, folders))
    rows = [r for r in report["rows"] if not r["folder"] or r["folder"] in wanted]
    names = {r["name"] for r in rows}
    return report | {"rows": rows, "results": {k: v for k, v in report["results"].items() if k in names}}


def merge_rows(report: dict[str, Any], fresh: dict[str, Any], folders: list[Path]) -> dict[str, Any]:
    """`report` with the layer rows of `fresh` added, in the order of `folders` (base and teachers stay first)."""
    new = [r for r in fresh["rows"] if r["folder"]]
    rows = [r for r in report["rows"] if not r["folder"]]
    by_folder = {r["folder"]: r for r in report["rows"] + new if r["folder"]}
    rows += [by_folder[str(f)] for f in folders if str(f) in by_folder]
    results = report["results"] | {r["name"]: fresh["results"][r["name"]] for r in new}
    return report | {"rows": rows, "results": results}


def merge(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from several passes over the same rows (different suites)."""
    merged = json.loads(json.dumps(reports[0]))
    for rep in reports[1:]:
        merged["suites"].update(rep["suites"])
        for row, res in rep["results"].items():
            merged["results"].setdefault(row, {}).update(res)
        for stem, res in rep.get("base_by_manifesto", {}).items():
            merged["base_by_manifesto"].setdefault(stem, {}).update(res)
        merged["timing"] = {k: merged["timing"].get(k, 0) + rep["timing"].get(k, 0) for k in {**merged["timing"], **rep["timing"]}}
    return merged


def swap_times(base: Any, folders: list[Path], rounds: int = 10) -> dict[str, dict[str, float]]:
    """Per layer, on the llama.cpp engine with the base loaded: seconds to swap the identity in (read the folder, load
    its adapter or control vector, prefill its context) and milliseconds to make it current between requests."""
    from credo.layers import load_layer
    from credo.server.engines.llamacpp import LlamaCppEngine

    engine = LlamaCppEngine(base, n_ctx=4096)
    conv = engine.conversation_ids([{"role": "user", "content": "Hi."}])
    out = {}
    for folder in folders:
        start = time.perf_counter()
        layer = load_layer(folder, base)
        engine.add(folder.name, layer, folder)
        swap_in = time.perf_counter() - start
        switch = []
        for _ in range(rounds):  # alternate with the bare base, as a server with two identities in turn would
            for key in ("", folder.name):
                t = time.perf_counter()
                engine._enter(key, engine.identities[key])
                if key:
                    switch.append(1000 * (time.perf_counter() - t))
                engine.llm.eval(conv)
        engine.remove(folder.name)
        out[folder.name] = {"swap_in_seconds": round(swap_in, 3), "switch_ms": round(statistics.median(switch), 3)}
    return out


# --- intervals ------------------------------------------------------------------------------------------------------
def proportion_se(p: float | None, n: int | None) -> float | None:
    return math.sqrt(max(p * (1 - p), 0.25 / n) / n) if isinstance(p, (int, float)) and n else None  # a floor at 0 or 1


def adherence_ci(metrics: dict[str, Any] | None) -> float | None:
    """Half-width of the 95% interval of a mean of per-clause proportions."""
    per = [(v["adherence"], v["items"]) for v in ((metrics or {}).get("per_clause") or {}).values() if v.get("adherence") is not None and v.get("items")]
    if not per:
        return None
    return Z * math.sqrt(sum(proportion_se(p, n) ** 2 for p, n in per)) / len(per)


def ratio_ci(row: dict[str, Any] | None, base: dict[str, Any] | None) -> float | None:
    """Half-width of the 95% interval of accuracy(row) / accuracy(base): paired item by item when both rows kept their
    per-item hits on the same items (delta method on x_i - r y_i), else with the rows taken as independent (wider)."""
    if not row or not base or not base.get("accuracy") or row.get("accuracy") is None:
        return None
    a, b = row["accuracy"], base["accuracy"]
    x, y = row.get("hits"), base.get("hits")
    if x and y and len(x) == len(y) > 1:
        r = a / b
        return Z * statistics.stdev(xi - r * yi for xi, yi in zip(x, y)) / (math.sqrt(len(x)) * b)
    sa, sb = proportion_se(a, row["items"]), proportion_se(b, base["items"])
    return Z * (a / b) * math.sqrt((sa / max(a, 1e-9)) ** 2 + (sb / b) ** 2)


def shift_ci(row: dict[str, Any] | None, base: dict[str, Any] | None) -> float | None:
    """Half-width of the 95% interval of the row's sycophancy shift minus the base's, item by item (both rows answer
    the same items); None where the rows kept no per-item shifts (runs before 12-07)."""
    x, y = shifts(row), shifts(base)
    if len(x) != len(y) or len(x) < 2:
        return None
    return paired(x, y)[1]


def items_for(points: float, p: float) -> int:
    """Items per row for a 95% interval of ±points on the difference of two unpaired accuracies near p."""
    return math.ceil(2 * p * (1 - p) * (Z / points) ** 2)


# --- the table ------------------------------------------------------------------------------------------------------
def table(report: dict[str, Any], swaps: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    from credo.eval.report import summarise

    results, base = report["results"], report["results"].get("base", {})
    rows = []
    for s in summarise(report):
        res = results[s["row"]]
        hs, mm = ratio_ci(res.get("hellaswag"), base.get("hellaswag")), ratio_ci(res.get("mmlu"), base.get("mmlu"))
        kept_ci = math.sqrt(sum(x**2 for x in (hs, mm) if x is not None)) / 3 if hs is not None or mm is not None else None
        common = s | {"hellaswag_ci": hs, "mmlu_ci": mm, "kept_ci": kept_ci, "syc_shift_ci": shift_ci(res.get("sycophancy"), base.get("sycophancy")),
                      **swaps.get(s["row"], {})}
        # the base is measured against each manifesto in turn: one row per manifesto, with that manifesto's figures
        for stem, own in ([(stem, res | report["base_by_manifesto"].get(stem, {})) for stem in report["manifestos"]]
                          if s["role"] == "base" else [(s["manifesto"], res)]):
            fidelity, adherence, override = ((own.get(suite) or {}).get(key) for suite, key in
                                             (("fidelity", "fidelity"), ("adherence", "adherence"), ("override", "adherence")))
            rows.append(common | {"manifesto": stem, "fidelity": fidelity if fidelity is not None else s["fidelity"],
                                  "adherence": adherence, "override": override,
                                  "adherence_ci": adherence_ci(own.get("adherence")), "override_ci": adherence_ci(own.get("override"))})
    for r in rows:
        r["vs_control_note"] = control_note(r, rows)
    return rows


def control_note(row: dict[str, Any], rows: list[dict[str, Any]]) -> str | None:
    """Whether a layer is above its own kind's control on adherence and fidelity, and whether that is beyond noise."""
    if row["role"] != "layer":
        return None
    control = next((c for c in rows if c["role"] == "control" and c["manifesto"] == row["manifesto"] and c["kind"] == row["kind"]), None)
    if control is None or not isinstance(row["adherence"], (int, float)) or not isinstance(control["adherence"], (int, float)):
        return "no control"
    gap = row["adherence"] - control["adherence"]
    noise = math.hypot(row["adherence_ci"] or 0, control["adherence_ci"] or 0)
    fid = (row["fidelity"] or 0) > (control["fidelity"] or 0) if isinstance(row["fidelity"], (int, float)) else True
    if gap > 0 and fid:
        return "above" + ("" if gap > noise else " (within noise)")
    return "not above"


COLUMNS = [  # (key, header, format, interval key)
    ("fidelity", "fidelity", "{:.2f}", None), ("adherence", "adherence", "{:.2f}", "adherence_ci"),
    ("override", "override adh.", "{:.2f}", "override_ci"), ("harm_margin", "refusal margin", "{:+.1f}", None),
    ("jailbreak_margin", "wrapped margin", "{:+.1f}", None), ("over_refusal", "XSTest over-refusal", "{:.2f}", None),
    ("sycophancy", "sycophancy", "{:.2f}", None), ("syc_shift", "syc. shift", "{:+.3f}", "syc_shift_ci"),
    ("mc1", "TQA MC1", "{:.2f}", None), ("mc2", "TQA MC2", "{:.2f}", None),
    ("hellaswag_x", "HellaSwag×", "{:.3f}", "hellaswag_ci"), ("mmlu_x", "MMLU×", "{:.3f}", "mmlu_ci"), ("ppl_x", "ppl×", "{:.3f}", None),
    ("capability_kept", "cap. kept", "{:.3f}", "kept_ci"), ("compile_s", "compile s", "{:.0f}", None),
    ("context_tokens", "ctx tokens", "{}", None), ("swap_in_seconds", "swap in s", "{:.2f}", None), ("switch_ms", "switch ms", "{:.2f}", None),
    ("vs_control_note", "vs control", "{}", None),
]


def cell(row: dict[str, Any], key: str, pattern: str, ci: str | None) -> str:
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    text = value if isinstance(value, str) else pattern.format(value)
    return text + (f" ± {pattern.format(row[ci]).lstrip('+')}" if ci and isinstance(row.get(ci), (int, float)) else "")


def markdown(report: dict[str, Any], rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    from credo.eval.report import clause_keys

    machine_line = meta.get("machine_line") or f"{meta['cpu']}; torch threads {meta['threads']}"  # runs before 12-07 kept only the CPU
    lines = [f"# Evidence: identity layers against retraining{' (SMOKE RUN: small budgets and item counts)' if meta['quick'] else ''}", "",
             f"Base {report['base']['name']} ({report['base']['sha256'][:12]}); {machine_line}; "
             f"trained kinds (distill, sft, dpo) {meta['budget']} each (answers + training; each control as many steps) on "
             f"{meta['prompts'] or 'all'} training prompts; "
             f"behaviour suites at --size {meta['size']}, HellaSwag and MMLU at --size {meta['capability_size']}; "
             f"wall time {meta['minutes']:.0f} min, summed over every pass into the same folder ({meta['started']}).", ""]
    base = report["results"].get("base", {})
    for s in CAPABILITY:
        if s in base:
            n, p = base[s]["items"], base[s]["accuracy"]
            half = Z * math.sqrt(2 * p * (1 - p) / n)
            lines.append(f"- {s}: {n} items per row, base accuracy {p:.3f}: a difference between two rows is resolved to ±{100 * half:.1f} "
                         f"points (95%) if the rows were independent, and ±2 points would take {items_for(0.02, p)} items per row; "
                         "the ± on the ratios below are paired item by item (every row answers the same items), most often far tighter.")
    lines += ["", "± are 95% intervals (see bench/evidence.py). `vs control`: above the same kind compiled from the shuffled manifesto on "
              "adherence and fidelity; '(within noise)' when the adherence gap is inside the combined interval. `syc. shift`: the mean "
              "rise in P(the user's view) that the user's stated biography causes (the rate beside it mostly follows the base's "
              "bias for one answer letter); its ± is that of the row's difference from the base, item by item.", ""]
    for stem in report["manifestos"]:
        group = [r for r in rows if r["manifesto"] == stem]
        lines += [f"## {report['manifestos'][stem]['name']}", "", "| row | " + " | ".join(h for _, h, _, _ in COLUMNS) + " |",
                  "| --- | " + " | ".join("---:" for _ in COLUMNS) + " |"]
        lines += [f"| {r['row']} | " + " | ".join(cell(r, key, pattern, ci) for key, _, pattern, ci in COLUMNS) + " |" for r in group]
        keys = clause_keys(report, stem)
        if keys:
            shown = [r for r in group if r["role"] in ("teacher", "layer", "base")]
            lines += ["", "Adherence per clause:", "", "| clause | " + " | ".join(r["row"] for r in shown) + " |",
                      "| --- | " + " | ".join("---:" for _ in shown) + " |"]
            for key in keys:
                cells = []
                for r in shown:
                    res = report["base_by_manifesto"].get(stem, {}) if r["role"] == "base" else report["results"][r["row"]]
                    per = ((res.get("adherence") or {}).get("per_clause") or {}).get(key) or {}
                    cells.append("—" if per.get("adherence") is None else f"{per['adherence']:.2f}")
                lines.append(f"| `{key}` | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## run time", ""] + [f"- {k}: {v:.0f} s" for k, v in meta["seconds"].items()]
    return "\n".join(lines) + "\n"


# --- plots ----------------------------------------------------------------------------------------------------------
def plots(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = ["base", "teacher"] + KINDS
    colours = {k: plt.get_cmap("tab10")(i) for i, k in enumerate(kinds)}
    stems = sorted({r["manifesto"] for r in rows if r["manifesto"]})
    markers = dict(zip(stems, "osD^v<>"))
    written = []
    for name, (xk, xci, xlabel), (yk, yci, ylabel), title in [
        ("frontier.png", ("capability_kept", "kept_ci", "capability kept (× base: HellaSwag, MMLU, 1/perplexity)"),
         ("adherence", "adherence_ci", "adherence"), "adherence against capability kept (hollow: shuffled-manifesto control)"),
        ("override.png", ("adherence", "adherence_ci", "plain adherence"), ("override", "override_ci", "adherence under override / jailbreak wrappers"),
         "does the identity survive being told to drop it? (hollow: control)"),
    ]:
        fig, ax = plt.subplots(figsize=(7.5, 5.5))
        seen = set()
        for r in rows:
            x, y = r.get(xk), r.get(yk)
            if not isinstance(x, (int, float)) or not isinstance(y, (int, float)):
                continue
            kind = r["kind"] if r["role"] != "teacher" else "teacher"
            c = colours.get(kind, "grey")
            label = kind if kind not in seen and r["role"] != "control" else None
            seen.add(kind)
            ax.errorbar(x, y, xerr=r.get(xci) or 0, yerr=r.get(yci) or 0, fmt=markers.get(r["manifesto"], "o"), color=c, ecolor=c,
                        elinewidth=0.8, capsize=2, markersize=7, label=label, mfc="none" if r["role"] == "control" else c)
        if name == "override.png":
            ax.plot([0, 1], [0, 1], color="grey", lw=0.6, ls="--")
        for stem, m in markers.items():
            ax.plot([], [], m, color="black", label=stem)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        fig.savefig(out / name, dpi=120, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        written.append(out / name)
    return written


# --- main -----------------------------------------------------------------------------------------------------------
class PhaseClock:
    """Seconds spent per phase, summed over every run into the same --out (kept in `path`), so a resumed run reports
    the work all its passes did, an interrupted pass's included, not only the last pass."""

    def __init__(self, path: Path):
        self.path = path
        self.spent: dict[str, float] = json.loads(path.read_text()) if path.is_file() else {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.spent[name] = self.spent.get(name, 0.0) + time.perf_counter() - t
            write_text_atomic(self.path, json.dumps(self.spent, indent=1) + "\n")

    def total(self) -> float:
        return sum(self.spent.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: pirate.md only, 2m budgets on 24 prompts, 10 behaviour items, 40 capability items")
    ap.add_argument("--manifestos", default="", help="comma-separated manifesto files (default: honest.md and pirate.md, a stance and a voice)")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--budget", default="3m", help="compile budget of every trained kind and of its control (minutes or steps)")
    ap.add_argument("--prompts", type=int, default=0, help="training prompts of every trained kind (0: all, the everyday pool included)")
    ap.add_argument("--size", type=int, default=16, help="items per behaviour suite")
    ap.add_argument("--capability-size", type=int, default=60, help="HellaSwag and MMLU items per row")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--render", type=Path, default=None, help="only rewrite the table and plots of an earlier full run's --out folder")
    args = ap.parse_args()
    if args.render:
        return render(args.render, publish=True)
    if args.quick:
        args.manifestos = args.manifestos or str(ROOT / "examples" / "pirate.md")
        args.budget, args.prompts, args.size, args.capability_size = "2m", 24, 10, 40
    manifestos = [Path(m).resolve() for m in args.manifestos.split(",") if m] or [ROOT / "examples" / f for f in DEFAULT_MANIFESTOS]
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = args.out or ROOT / "bench" / "results" / f"evidence{'-quick' if args.quick else ''}-{stamp}"
    out.mkdir(parents=True, exist_ok=True)

    import torch

    from credo.base import load_base
    from credo.eval.suites.base import suite_names
    from credo.layers import get_kind
    from credo.layers.registry import make_config
    from credo.runtime.precision import machine_header

    for kind in kinds:  # bad kinds or settings fail before any work
        make_config(get_kind(kind), settings_for(kind, args.budget, args.prompts))
    torch.set_num_threads(args.threads)
    machine, machine_line = machine_header()
    print(machine_line, flush=True)
    started, seconds = time.perf_counter(), PhaseClock(out / "seconds.json")
    log = lambda s: print(f"[{(time.perf_counter() - started) / 60:5.1f} min] {s}", flush=True)  # noqa: E731
    base = load_base()
    with seconds.phase("compile"):
        folders = compile_all(base, manifestos, kinds, args.budget, args.prompts, out, log)
    behaviour = [s for s in BEHAVIOUR if s in suite_names()]
    with seconds.phase("eval behaviour"):
        reports = [run_eval(folders, out / "eval-behaviour", behaviour, args.size, args.threads, args.data)]
    # capability on the layers only: a control's capability says nothing about its manifesto, and items are the cost here
    layers = [f for f in folders if not f.name.endswith("-control")]
    with seconds.phase("eval capability"):
        reports.append(run_eval(layers, out / "eval-capability", CAPABILITY, args.capability_size, args.threads, args.data))
    with seconds.phase("swap"):
        try:
            swaps = swap_times(base, folders)
        except ImportError:
            log("llama-cpp-python is not installed: no swap times")
            swaps = {}
    report = merge(reports)
    rows = table(report, swaps)
    meta = {"quick": args.quick, "budget": args.budget, "prompts": args.prompts, "size": args.size, "capability_size": args.capability_size,
            "threads": args.threads, "cpu": machine["cpu"], "machine": machine, "machine_line": machine_line, "started": stamp,
            "minutes": seconds.total() / 60, "seconds": seconds.spent | {"total": seconds.total()},
            "manifestos": [str(m) for m in manifestos], "kinds": kinds}
    write_text_atomic(out / "evidence.json", json.dumps({"meta": meta, "rows": rows, "report": report, "swaps": swaps}, indent=1, default=str) + "\n")
    render(out, publish=not args.quick)
    log(f"wrote {out}")


def render(out: Path, publish: bool) -> None:
    """evidence.md and the plots from <out>/evidence.json; `publish` also rewrites bench/RESULTS-evidence.md and
    docs/evidence/*.png, the copies README quotes (a --quick run never does)."""
    import shutil

    saved = json.loads((out / "evidence.json").read_text())
    swaps = saved.get("swaps") or {r["row"]: {k: r[k] for k in ("swap_in_seconds", "switch_ms") if k in r} for r in saved["rows"]}
    rows = table(saved["report"], swaps)  # recomputed, so the intervals follow this script's formulas
    text = markdown(saved["report"], rows, saved["meta"])
    (out / "evidence.md").write_text(text)
    written = plots(rows, out)
    if publish:
        write_text_atomic(TABLE, text)
        PLOTS.mkdir(parents=True, exist_ok=True)
        for f in written:
            shutil.copyfile(f, PLOTS / f.name)
    print(text)


if __name__ == "__main__":
    main()
