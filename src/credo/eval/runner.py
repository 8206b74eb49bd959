"""`run_eval`: check everything, build the rows, run the suites, and return the report as a plain dict.

All checks come first (layer folders, one base for all, data files, manifesto front matter), so bad input fails in
seconds with one line. Rows: the base, a teacher (the base with the manifesto in context) per manifesto present, and
each layer. A layer compiled from `Manifesto.shuffled()` of another layer's manifesto is measured against that
manifesto (it is its control), unless `reference` names one manifesto for every layer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from credo.base import load_base
from credo.errors import CredoError
from credo.eval.data import DataError, default_data_dir
from credo.eval.progress import Progress
from credo.eval.scorer import Row, share_twins
from credo.eval.suites.base import Group, Suite, SuiteContext, get_suite, suite_names
from credo.fsutil import sha256_file
from credo.layers.folder import check_base, load_layer, read_info
from credo.layers.registry import teacher_layer
from credo.manifesto import Manifesto
from credo.realistic import find_set

if TYPE_CHECKING:
    from credo.base import Base

REPORT_VERSION = 1


@dataclass
class EvalConfig:
    """What to evaluate and how much of it."""

    layers: list[Path] = field(default_factory=list)
    suites: list[str] | None = None  # None: every suite (custom only when user files are given)
    limit: int | None = None  # cap on items per suite, for a quick run
    size: int | None = None  # items per suite instead of each suite's default (HellaSwag 10 cannot resolve a 2% change)
    data: Path | None = None  # None: $CREDO_DATA, else <repo>/../shared/data
    user_files: list[Path] = field(default_factory=list)
    reference: Path | None = None  # one manifesto to measure every layer against
    realistic: Path | None = None  # the realistic set to measure on (None: each manifesto's sidecar NAME.realistic.jsonl)
    base: str | None = None  # None: the base the layers were compiled for
    progress: bool = False
    threads: int | None = None  # torch CPU threads (None: leave torch's setting); 1 is far faster on a busy machine
    resume: Path | None = None  # folder to keep finished rows in as they finish (`credo eval` uses its output folder)


def ordered_suites(names: list[str] | None, user_files: list[Path]) -> list[str]:
    known = suite_names()
    wanted = list(names) if names else [n for n in known if n != "custom"]
    for n in wanted:
        get_suite(n)  # unknown names fail here
    if user_files and "custom" not in wanted:
        wanted.append("custom")
    return sorted(dict.fromkeys(wanted), key=lambda n: (get_suite(n).order, n))


def _unique(name: str, taken: set[str]) -> str:
    out, i = name, 2
    while out in taken:
        out, i = f"{name}-{i}", i + 1
    taken.add(out)
    return out


def _group_key(info_manifesto: dict[str, Any], sources: dict[str, str]) -> tuple[str | None, bool]:
    """(source of the manifesto this layer is measured against or None for its own, whether it is a control)."""
    source = str(info_manifesto.get("source", ""))
    if "#shuffled" in source:
        original = source.split("#shuffled", 1)[0]
        if original in sources or Path(original).is_file():
            return original, True
    return None, False


def run_eval(config: EvalConfig, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    started = time.perf_counter()
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    names = ordered_suites(config.suites, config.user_files)
    data = Path(config.data) if config.data else default_data_dir()
    if not data.is_dir():
        raise DataError(f"data folder {data} does not exist (give it with --data DIR or $CREDO_DATA)")
    if not config.layers and config.reference is None:
        raise CredoError("nothing to evaluate: give layer folders (--layers) or a manifesto (--manifesto)")

    # 1. layer folders: cheap checks, and one base for all, before anything is loaded
    infos = [read_info(folder) for folder in config.layers]
    shas = {i.base["sha256"] for i in infos}
    if len(shas) > 1:
        listing = ", ".join(f"{f} ({i.base.get('name', '?')} {i.base['sha256'][:12]})" for f, i in zip(config.layers, infos))
        raise CredoError(f"the layers were compiled for different bases: {listing}; evaluate each base's layers separately")
    reference = Manifesto.from_file(config.reference) if config.reference else None

    # 2. the manifestos each layer is measured against, and every data file, checked before the model loads
    own = [Manifesto.from_file(Path(f) / "manifesto.md") for f in config.layers]
    sources = {str(i.manifesto.get("source", "")): str(f) for i, f in zip(infos, config.layers)}
    refs: list[Manifesto] = []
    controls: list[bool] = []
    for info, m in zip(infos, own):
        if reference is not None:
            refs.append(reference)
            controls.append(m.sha256 != reference.sha256)
            continue
        original, is_control = _group_key(info.manifesto, sources)
        if is_control and original in sources:
            refs.append(Manifesto.from_file(Path(sources[original]) / "manifesto.md"))
        elif is_control:
            refs.append(Manifesto.from_file(original))
        else:
            refs.append(m)
        controls.append(is_control)
    manifestos = list({m.sha256: m for m in (refs or [reference])}.values())  # one group per manifesto, in order
    ctx = SuiteContext(data=data, limit=config.limit, user_files=[Path(p) for p in config.user_files], progress=config.progress,
                       size=config.size, realistic=realistic_sets(config, manifestos, infos, refs))
    suites: list[Suite] = []
    for n in names:
        suite = get_suite(n)(ctx)
        suite.load(manifestos)
        suites.append(suite)

    # 3. the base, and each layer checked against it before any scoring
    spec = config.base or (infos[0].base.get("spec") if infos else None)
    base: Base = load_base(spec)
    for folder, info in zip(config.layers, infos):
        check_base(info, base, folder)
    layers = [load_layer(folder, base) for folder in config.layers]
    log(f"loaded base {base.name} ({base.short}) and {len(layers)} layer(s); data from {data}")

    # 4. rows and groups
    taken: set[str] = set()
    base_row = Row(_unique("base", taken), "base", base)
    groups: list[Group] = []
    by_sha: dict[str, Group] = {}
    gname: dict[str, str] = {}
    for m in manifestos:
        gname[m.sha256] = _unique(_slug(m), set(gname.values()))
    _stem = lambda m: gname[m.sha256]  # noqa: E731
    for m in manifestos:
        teacher = teacher_layer(m, base)
        name = "teacher" if len(manifestos) == 1 else f"teacher:{_stem(m)}"
        row = Row(_unique(name, taken), "teacher", base, teacher, group=m.sha256, compile_seconds=teacher.info.compile_seconds)
        by_sha[m.sha256] = Group(m, row, base_row, [])
        groups.append(by_sha[m.sha256])
    layer_rows = []
    for folder, info, layer, ref, control in zip(config.layers, infos, layers, refs, controls):
        row = Row(_unique(info.name, taken), "control" if control else "layer", base, layer, folder=Path(folder),
                  group=ref.sha256, compile_seconds=info.compile_seconds)
        by_sha[ref.sha256].layers.append(row)
        layer_rows.append(row)
    rows = [base_row] + [r for g in groups for r in [g.teacher, *g.layers]]
    twins = share_twins(rows)
    for names_ in twins:
        log(f"scored once for {', '.join(names_)}: same context state bitwise and no hooks")

    # 5. scoring: suite by suite, every row on the same items; each finished row (or group, or row-minor suite) is kept
    # in the output folder, so an interrupted run picks up after it
    results: dict[str, dict[str, Any]] = {r.name: {} for r in rows}
    by_manifesto: dict[str, dict[str, Any]] = {_stem(g.manifesto): {} for g in groups}
    timing: dict[str, float] = {}
    kept = Progress.open(config.resume, {
        "suites": names, "limit": config.limit, "size": config.size, "data": str(data), "base": base.sha256,
        "user_files": [sha256_file(Path(p)) for p in config.user_files],
        "reference": reference.sha256 if reference else None, "realistic": str(config.realistic or ""),
        "layers": [[str(f), sha256_file(Path(f) / "layer.json")] for f in config.layers]}, log)
    for suite in suites:
        t0 = time.perf_counter()
        if suite.per_manifesto:
            for g in groups:
                out = kept.get(suite.name, _stem(g.manifesto), lambda: suite.run(g.rows, g))
                for r in g.rows:
                    if r is base_row:
                        by_manifesto[_stem(g.manifesto)][suite.name] = out[r.name]
                    else:
                        results[r.name][suite.name] = out[r.name]
            if len(groups) == 1:
                results[base_row.name].update({suite.name: by_manifesto[_stem(groups[0].manifesto)][suite.name]})
        elif suite.row_by_row:
            for r in rows:
                results[r.name][suite.name] = kept.get(suite.name, r.name, lambda: suite.run([r])[r.name])
        else:
            for name, metrics in kept.get(suite.name, "*", lambda: suite.run(rows)).items():
                results[name][suite.name] = metrics
        timing[suite.name] = round(time.perf_counter() - t0, 2)
        log(f"{suite.name}: {timing[suite.name]:.1f}s")
    timing["total"] = round(time.perf_counter() - started, 2)

    return {
        "version": REPORT_VERSION,
        "base": {"name": base.name, "sha256": base.sha256, "spec": base.spec},
        "data": str(data),
        "limit": config.limit,
        "suites": {s.name: {"column": s.column, "help": s.help, "per_manifesto": s.per_manifesto} for s in suites},
        "manifestos": {_stem(g.manifesto): {"name": g.manifesto.name, "sha256": g.manifesto.sha256, "source": g.manifesto.source,
                                             "clauses": {c.id: c.text for c in g.manifesto.clauses}} for g in groups},
        "rows": [
            {"name": r.name, "role": r.role, "kind": r.layer.kind if r.layer is not None else "base",
             "manifesto": _stem(by_sha[r.group].manifesto) if r.group else None,
             "folder": str(r.folder) if r.folder else None}
            for r in rows
        ],
        "results": results,
        "base_by_manifesto": by_manifesto,
        "twins": twins,
        "timing": timing,
    }


def realistic_sets(config: EvalConfig, manifestos: list[Manifesto], infos: list[Any], refs: list[Manifesto]) -> dict[str, Path]:
    """Manifesto sha256 -> its realistic set: `config.realistic`, else the sidecar of the file the manifesto was compiled
    from (a layer folder keeps a copy of the manifesto, not its set), of `--manifesto`, or of the manifesto itself."""

    if config.realistic is not None:
        if len(manifestos) > 1:
            raise CredoError(f"--realistic gives one set, but the layers are measured against {len(manifestos)} manifestos; evaluate them apart")
        if not Path(config.realistic).is_file():
            raise CredoError(f"realistic set {config.realistic} does not exist or is not a file")
        return {m.sha256: Path(config.realistic) for m in manifestos}
    out: dict[str, Path] = {}
    for m in manifestos:
        sources = [config.reference] if config.reference is not None else []
        sources += [str(i.manifesto.get("source", "")).split("#shuffled", 1)[0] for i, r in zip(infos, refs) if r.sha256 == m.sha256]
        for src in [*sources, m.source]:
            found = find_set(m, src) if src else None
            if found is not None:
                out[m.sha256] = found
                break
    return out


def _slug(m: Manifesto) -> str:
    return "".join(c if c.isalnum() else "-" for c in m.name.lower()).strip("-") or "manifesto"
