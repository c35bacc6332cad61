"""Mutation testing of the package's core with mutmut: which one-line bugs would the unit tests miss?

`make mutation` runs this script. For each core module it copies the package and the tests into
`_build/mutation/work/<module>/`, runs `mutmut run` there with only that module mutated and only the
test files that exercise it (MODULES below; mutmut then runs, for each mutant, only those of these tests
that call the mutated function), and writes `_build/mutation/report.md`: per module the number of
mutants, killed, equivalent and surviving, and every survivor as a diff.

A survivor is either a missing test (write one that asserts what a user depends on) or an equivalent
mutant, one that cannot change the behaviour: those are listed with the reason in
`tests/mutation_equivalent.md`, by the key the report gives each survivor (a hash of the function and
the changed lines, so it survives unrelated edits). Lines starting with `raise` are not mutated: the
wording of an error message is checked by its key phrase (`pytest.raises(..., match=...)`), not letter
by letter.

Every module from scratch takes about three hours on two cores (191 minutes by MINUTES; models/resnet.py 45),
more than the hour one run may take. `--shard K/N` runs the K-th of N groups of modules balanced by the minutes
each takes (MINUTES), each group under LIMIT_MINUTES; `make mutation` runs shard MUTATION_SHARD of 6. The shards
run in turn on one machine (each adds its modules to the same `_build/mutation/`, and the report covers every
module run so far) or at once on several, whose `summary.json` files `--merge` turns into one report. A module
that alone takes more than LIMIT_MINUTES (cli.py) is split into parts by function (PARTS): each part (`cli.py:train`)
is a unit of the shards, of MINUTES and of the report, tested by mutmut on its own functions' mutants.

    python scripts/mutation.py --shard 1/6         # the first of six groups of modules (under an hour)
    python scripts/mutation.py --list-shards 6     # which modules each group holds, and its minutes
    python scripts/mutation.py --merge */summary.json  # one report from the shards run on other machines
    python scripts/mutation.py checkpoint.py       # one module
    python scripts/mutation.py cli.py:train        # one part of a split module (`cli.py`: its parts in turn)
    python scripts/mutation.py                     # every core module (about three hours on 2 cores)
    python scripts/mutation.py --report-only       # rebuild the report from the last runs
    python scripts/mutation.py --rerun training.py # after new tests: only changed code and last survivors
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "resnet_tutorial"
EQUIVALENT_FILE = ROOT / "tests" / "mutation_equivalent.md"

#: Each core module and the test files that exercise it, smallest and most important first.
MODULES: dict[str, list[str]] = {
    "checkpoint.py": ["test_checkpoint.py", "test_weights_safety.py"],
    "experiments.py": ["test_cache_key.py", "test_training.py"],
    "gradflow.py": ["test_gradflow.py", "test_degradation.py"],
    "evaluation.py": ["test_evaluation.py"],
    "training.py": ["test_training.py", "test_recipe.py", "test_schedules.py", "test_amp_dtype.py"],
    "finetune.py": ["test_finetune.py"],
    "data.py": ["test_data.py"],
    "cli.py": ["test_cli_train.py", "test_folder.py", "test_reference.py",  # and test_resnext.py's test of the
               "test_resnext.py::test_cli_lists_them_with_parameters_and_macs"],  # command, not its nets' parity
    "models/blocks.py": ["test_models.py", "test_resnext.py"],
    "models/resnet.py": ["test_models.py", "test_model_face.py", "test_resnext.py"],
    "models/registry.py": ["test_models.py", "test_model_face.py"],
    "models/zoo.py": ["test_models.py", "test_resnext.py"],
    "models/weights.py": ["test_weights.py", "test_weights_safety.py", "test_model_face.py"],
}

#: Tests left out of every run: they start Python on a copy of the package in another folder, where the
#: copy's mutmut trampolines find no mutmut configuration and fail whatever the mutant. (They would seldom kill
#: a mutant anyway: the child inherits the mutant under test, so both sides of their comparison run it.)
DESELECT = ["tests/test_cache_key.py::test_a_docstring_edit_keeps_the_key",
            # reads the chapters, which the copy of the package and the tests does not hold
            "tests/test_degradation.py::test_chapters_2_5_and_6_load_the_same_data"]

#: The largest nets' runs of the parity and forward tests, left out where models/ is mutated: each takes 1 to 20
#: seconds, a surviving mutant pays for all of them (about a minute of the two minutes test_models.py and
#: test_resnext.py take), and the same code is checked on the 18-, 34- and 50-layer nets and on
#: resnext50_32x4d and wide_resnet50_2, which stay. Their stage tables (zoo.py) are checked by the parameter
#: counts and state_dict shapes, which run for every model.
LARGE_NETS = ("resnet101", "resnet152", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet101_2", "resnet1202")
MODULE_DESELECT: dict[str, list[str]] = {
    module: [f"tests/{file}::{test}[{name}]" for file, test in (
        ("test_models.py", "test_outputs_equal_both_libraries_in_both_directions"),
        ("test_models.py", "test_every_registered_model_runs_forward_and_backward"),
        ("test_resnext.py", "test_outputs_are_bit_identical_in_both_directions"),
    ) for name in LARGE_NETS]
    for module in MODULES if module.startswith("models/")
}
#: torch.compile of a model cannot trace mutmut's trampolines while mutmut records which tests call which function
#: (a ContextVar is set inside the compiled forward: "ContextVar mutation not supported"), so the recording run
#: fails and no mutant is tested. The eager and FX forward of the same functions are checked by the other tests.
MODULE_DESELECT["models/resnet.py"].append("tests/test_model_face.py::test_torch_compile_traces_the_checked_forward")
#: cli.py: the tests that run the command in another Python (`python -m resnet_tutorial`, 2 to 110 seconds each):
#: the child inherits the mutant, or imports the package from another folder, so they compare a mutant with itself.
#: What they check in one process (exit status, one-line errors, checkpoint, summary, metrics, predictions) the
#: in-process tests of the same files check too.
MODULE_DESELECT["cli.py"] = [
    "tests/test_cli_train.py::test_same_command_and_seed_give_identical_weights",
    "tests/test_cli_train.py::test_run_killed_after_its_first_epoch_resumes_to_the_uninterrupted_weights",
    "tests/test_cli_train.py::test_console_entry_point_prints_no_traceback",
    "tests/test_folder.py::test_train_pretrained_file_then_evaluate_then_predict",
]

#: Lines never mutated (regular expressions): an exception's message is checked by its key phrase.
DO_NOT_MUTATE = [r"^\s*raise\b"]

#: And per module. cli.py: the argparse help texts (`help=` and `description=`, each starting its own line, so
#: that the option's name, type, default and choices on the line above are still mutated): prose for a reader of
#: `--help`, about 600 of cli.py's 1,500 mutants, which no test should pin letter by letter.
MODULE_DO_NOT_MUTATE: dict[str, list[str]] = {
    "cli.py": [r"^\s*(help|description)="],
}

#: Modules whose whole run takes more than LIMIT_MINUTES, split into parts by function. A part (``cli.py:train``)
#: is a unit of its own for `--shard`, MINUTES and the report: it runs `mutmut run` on its functions' mutants only
#: (mutmut's names, ``resnet_tutorial.cli.x_<function>__mutmut_<n>``), in the module's work folder, which the parts
#: share: run in turn on one machine they add up to the module; on several, each reports its own part. Naming the
#: module runs its parts in turn; `--rerun` takes the whole module (changed functions and last survivors, whichever
#: part they are in). Each function is in one part (tests/test_mutation_script.py checks it against the source).
#: cli.py (1,264 mutants): the argparse parsers and `main` (406 mutants), which every test of the command calls (72
#: tests: a surviving mutant runs them all); the checks of `train`'s options (163); `train` itself (195) and the
#: model and folder options it trains with (69), whose mutants' tests train a model; the other commands (431).
PARTS: dict[str, dict[str, list[str]]] = {
    "cli.py": {
        "parsers": ["_add_models", "_add_compare", "_add_train", "_add_evaluate", "_add_predict", "build_parser",
                    "_show_warning", "main"],
        "checks": ["_check_device", "_check_out_dir", "_resolve_pretrained", "recipe_from_args", "check_train_args"],
        "train": ["_write_json_atomic", "_cmd_train"],
        "model": ["_folder_options", "_train_model"],
        "commands": ["_cmd_models", "_cmd_compare", "_cmd_evaluate", "_folder_preprocessing", "_checkpoint_folder",
                     "_cmd_predict", "_write_predictions"],
    },
}

KILLED = {"killed", "timeout", "caught by type check", "segfault"}

#: Seconds added to a mutant's expected test time before mutmut's time limit (the sum, times 15, in wall-clock
#: seconds; mutmut's default 1) stops its tests as a "timeout", which counts as killed. The expected time is the
#: tests' own, without their module fixtures: test_folder.py's model trained once per module takes 20 to 100 s
#: (niced beside other work), so with the default 34 of the first 301 mutants of cli.py tested on 2026-12-07 (of
#: `predict`, and of `evaluate` on a folder) timed out after 38 s, counted as killed before their tests had run;
#: with 10, none of them did. A mutant that really hangs (a loop that never ends) is still stopped, after (its
#: tests' seconds + 10) x 15. (A run starved of CPU by other work still times out: the limit is wall-clock.)
TIMEOUT_CONSTANT = 10

#: Minutes a whole run of each module takes on the 2-core development machine (`--jobs 2`, niced beside other
#: work, so an upper bound; `_build/mutation/seconds.json` records each run). `--shard` balances the modules by
#: these; a module missing here counts as LIMIT_MINUTES / 4. Measured: checkpoint.py to data.py and
#: models/blocks.py (data.py and models/blocks.py on 2026-12-06, gradflow.py and training.py on 2026-12-07,
#: the others in their first full runs); models/zoo.py, registry.py and weights.py on 2026-12-06 (registry.py's
#: first full run, paused for about a quarter of an hour beside other work; weights.py's run with its tests of
#: that day, which kill most mutants in their first, fast tests: the first full run, before them, took 68
#: minutes); models/resnet.py on
#: 2026-12-06 (its first full run, before that day's tests, beside other work: 85 survivors, each running all
#: its tests; the rerun of those with the new tests took 8.5 minutes). cli.py, in parts (PARTS), on 2026-12-07:
#: its whole run took 82 minutes (22.3, stopped after 301 mutants to raise TIMEOUT_CONSTANT, then 59.8 for the
#: other 963 and the 34 timeouts), about 25 of them with both cores taken by other work at normal priority; each
#: part's minutes are its mutants' share of that run's test time (mutmut's duration of each mutant, 132 minutes
#: of the two workers' time in all, so 66 of the 82), scaled to the 82, plus 2 for mutmut's start (its stats,
#: the clean run of the part's tests). The model part's 69 mutants ran while the cores were taken (47 to 59 s
#: each, 7.5 for train's: 38.6 by that share), so it was then run alone (`cli.py:model`, the same day, beside
#: the cli tests' pytest and other work): 17.1 minutes. Update them after a module's full run, or after its
#: tests change much.
MINUTES: dict[str, float] = {
    "checkpoint.py": 2.2,
    "experiments.py": 2.5,
    "gradflow.py": 0.7,
    "evaluation.py": 3.0,
    "training.py": 11.6,
    "finetune.py": 1.9,
    "data.py": 2.3,
    "cli.py:parsers": 10.2,
    "cli.py:checks": 8.3,
    "cli.py:train": 20.6,
    "cli.py:model": 17.1,
    "cli.py:commands": 14.4,
    "models/blocks.py": 4.2,
    "models/resnet.py": 45.3,
    "models/registry.py": 36.2,
    "models/zoo.py": 1.4,
    "models/weights.py": 10.6,
}

#: What one `make mutation` may take (the issue's bound): `--shard K/N` runs the K-th of N groups of modules,
#: each group within this many minutes by MINUTES.
LIMIT_MINUTES = 60.0


def units(modules: list[str]) -> list[str]:
    """What is run and reported: each module, or each part of a module split in PARTS (``cli.py:train``)."""
    return [u for m in modules for u in ([f"{m}:{part}" for part in PARTS[m]] if m in PARTS else [m])]


def split_unit(unit: str) -> tuple[str, str | None]:
    """``"cli.py:train"`` -> ``("cli.py", "train")``; ``"data.py"`` -> ``("data.py", None)``."""
    module, _, part = unit.partition(":")
    return module, part or None


def part_patterns(unit: str) -> list[str]:
    """mutmut's names of a part's mutants, as fnmatch patterns (one per function; none for a whole module).
    ``x_<function>*`` also matches the name mutmut files the function's tests under, so that mutmut's clean run
    before the mutants runs those tests only (the test checks that no pattern matches another part's function)."""
    module, part = split_unit(unit)
    if part is None:
        return []
    dotted = ".".join([PACKAGE, *module.removesuffix(".py").split("/")])
    return [f"{dotted}.x_{function}*" for function in PARTS[module][part]]


def unit_minutes(unit: str, minutes: dict[str, float] = MINUTES) -> float:
    """The minutes a whole run of a module (or part) takes by ``minutes``; LIMIT_MINUTES / 4 if it is missing."""
    return minutes.get(unit, LIMIT_MINUTES / 4)


def shards(modules: list[str], n: int, minutes: dict[str, float] = MINUTES) -> list[list[str]]:
    """Split ``modules`` into ``n`` groups of about equal minutes (longest first, each into the group with the
    fewest minutes so far); each group keeps the order of ``modules``. The same input gives the same groups on
    every machine, so the jobs of a CI matrix agree on who runs what."""
    cost = lambda m: unit_minutes(m, minutes)  # noqa: E731
    groups: list[list[str]] = [[] for _ in range(n)]
    totals = [0.0] * n
    for module in sorted(modules, key=lambda m: (-cost(m), modules.index(m))):
        k = totals.index(min(totals))
        groups[k].append(module)
        totals[k] += cost(module)
    return [sorted(g, key=modules.index) for g in groups]


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` (1 <= K <= N) as ``(K, N)``."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise ValueError(f"a shard is K/N with 1 <= K <= N, got {text!r}")
    return int(match[1]), int(match[2])


def mutmut_config(module: str, tests: list[str]) -> str:
    quote = lambda items: "[" + ", ".join(json.dumps(i) for i in items) + "]"  # noqa: E731
    deselect = DESELECT + MODULE_DESELECT.get(module, [])
    return (
        "[tool.mutmut]\n"
        f'source_paths = ["{PACKAGE}"]\n'
        f'only_mutate = ["{PACKAGE}/{module}"]\n'
        f"do_not_mutate_patterns = {quote(DO_NOT_MUTATE + MODULE_DO_NOT_MUTATE.get(module, []))}\n"
        f"pytest_add_cli_args_test_selection = {quote('tests/' + t for t in tests)}\n"
        f'pytest_add_cli_args = {quote(["-p", "no:cacheprovider", "-q", "-x", *(a for t in deselect for a in ("--deselect", t))])}\n'
        f"timeout_constant = {TIMEOUT_CONSTANT}\n"
        "\n[tool.pytest.ini_options]\n"
        'testpaths = ["tests"]\n'
        'markers = ["slow: tests that take more than a few seconds"]\n'
    )


def workdir(out: Path, module: str) -> Path:
    return out / "work" / module.replace("/", "_").removesuffix(".py")


def run_module(unit: str, out: Path, jobs: int, rerun: bool = False) -> float:
    """Run mutmut on one module in a fresh copy of the package and tests; return the seconds it took.

    A part of a module (PARTS) keeps the module's work folder and tests each of its mutants, whatever an
    earlier run found. ``rerun`` (whole modules): keep the last run's results, copy the changed sources and
    tests over them, let mutmut test the mutants of changed functions and test the last run's survivors
    again (after new tests)."""
    module, part = split_unit(unit)
    work = workdir(out, module)
    rerun = rerun and part is None and (work / "mutants").is_dir()
    survivors = [s["name"] for s in (collect(module, out) or {"survivors": []})["survivors"]] if rerun else []
    if not rerun and part is None:
        shutil.rmtree(work, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / PACKAGE, work / PACKAGE, ignore=ignore, dirs_exist_ok=True)
    shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore, dirs_exist_ok=True)
    (work / "pyproject.toml").write_text(mutmut_config(module, MODULES[module]))
    mutmut = Path(sys.executable).parent / "mutmut"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "RESNET_TUTORIAL_CACHE": str(work / "cache")}
    env.pop("PYTHONPATH", None)  # the copy in `mutants/` must be the package the tests import
    t0 = time.perf_counter()
    before = function_hashes(work)
    with open(out / f"{work.name}.log", "a" if rerun else "w") as log:
        for phase in ("changed", "survivors") if survivors else ("changed",):
            if phase == "survivors":  # those of functions mutmut has just tested again are done
                after = function_hashes(work)
                names = [n for n in survivors if before.get(_function_of(n)) == after.get(_function_of(n))]
                if not names:
                    break
            rc = subprocess.call([str(mutmut), "run", "--max-children", str(jobs),
                                  *(names if phase == "survivors" else part_patterns(unit))], cwd=work, env=env,
                                 stdout=log, stderr=subprocess.STDOUT)
            if rc != 0:
                print(f"  mutmut failed on {module} (exit {rc}); see {out / (work.name + '.log')}", file=sys.stderr)
    return time.perf_counter() - t0


def function_hashes(work: Path) -> dict[str, str]:
    """mutmut's hash of each mutated function's source, from its last run (empty before the first)."""
    stats = work / "mutants" / "mutmut-stats.json"
    return json.loads(stats.read_text()).get("function_hashes", {}) if stats.exists() else {}


def _function_of(mutant: str) -> str:
    """``"pkg.mod.x_f__mutmut_3"`` -> ``"pkg.mod.x_f"``: the function a mutant belongs to."""
    return mutant.split("__mutmut_")[0]


def changed_lines(work: Path, module: str, name: str) -> list[str]:
    """The changed lines of mutant ``name`` (what ``mutmut show`` prints, without starting mutmut again)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    cwd = os.getcwd()
    os.chdir(work)
    try:
        diff = get_diff_for_mutant(name, path=Path(PACKAGE) / module)
    finally:
        os.chdir(cwd)
    return [ln for ln in diff.splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]


def mutant_key(function: str, lines: list[str]) -> str:
    """A name for a mutant that does not depend on mutmut's numbering: function and changed lines."""
    text = function + "\n" + "\n".join(ln[0] + " ".join(ln[1:].split()) for ln in lines)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def equivalent_keys() -> dict[str, str]:
    """The keys listed in tests/mutation_equivalent.md (in its list entries, wrapped lines included):
    ``"equivalent"``, or ``"gpu_only"`` for those under the heading "Only a GPU ..." (mutants of CUDA-only
    lines, which the unit tests on CPUs never reach)."""
    if not EQUIVALENT_FILE.exists():
        return {}
    keys, kind, in_item = {}, "equivalent", False
    for line in EQUIVALENT_FILE.read_text().splitlines():
        if line.startswith("## "):
            kind = "gpu_only" if "GPU" in line else "equivalent"
        in_item = line.startswith("- ") or (in_item and line.startswith("  "))  # an entry and its wrapped lines
        for key in re.findall(r"`([0-9a-f]{10})`", line) if in_item else []:
            keys[key] = kind
    return keys


def collect(unit: str, out: Path) -> dict | None:
    """The row of the report for a module, or for a part of one (its functions' mutants only)."""
    from mutmut.stats import status_by_exit_code

    module, _ = split_unit(unit)
    work = workdir(out, module)
    meta = work / "mutants" / PACKAGE / (module + ".meta")
    if not meta.exists():
        return None
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    if patterns := part_patterns(unit):
        codes = {name: code for name, code in codes.items() if any(fnmatch.fnmatchcase(name, p) for p in patterns)}
    equivalent = equivalent_keys()
    row = {"module": unit, "mutants": len(codes), "killed": 0, "equivalent": 0, "gpu_only": 0, "survived": 0,
           "survivors": []}
    for name, code in sorted(codes.items(), key=lambda kv: _natural(kv[0])):
        status = status_by_exit_code[code]
        if status in KILLED:
            row["killed"] += 1
            continue
        if status == "not checked":  # a run still going, or stopped early
            row["not_tested"] = row.get("not_tested", 0) + 1
            continue
        function = name.split("__mutmut_")[0].rsplit(".", 1)[-1].removeprefix("x_")
        lines = changed_lines(work, module, name)
        key = mutant_key(function, lines)
        if key in equivalent:
            row[equivalent[key]] += 1
            continue
        row["survived"] += 1
        row["survivors"].append({"name": name, "status": status, "key": key, "function": function,
                                 "lines": lines})
    return row


def _natural(name: str):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def score(row: dict) -> float:
    tested = row["mutants"] - row["equivalent"] - row["gpu_only"] - row.get("not_tested", 0)
    return 100.0 * row["killed"] / tested if tested else float("nan")


def write_report(rows: list[dict], seconds: dict[str, float], out: Path) -> Path:
    total = {k: sum(r.get(k, 0) for r in rows)
             for k in ("mutants", "killed", "equivalent", "gpu_only", "survived", "not_tested")}
    lines = [
        "# Mutation testing of the core (mutmut)",
        "",
        "Score: killed / (mutants - equivalent - GPU-only), both listed with reasons in tests/mutation_equivalent.md.",
        "",
        "| module | mutants | killed | equivalent | GPU-only | survived | score | minutes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows + [{**total, "module": "**all**"}]:
        minutes = sum(seconds.values()) if r["module"] == "**all**" else seconds.get(r["module"])
        lines.append(f"| {r['module']} | {r['mutants']} | {r['killed']} | {r['equivalent']} | {r['gpu_only']} "
                     f"| {r['survived']} | {score(r):.1f} % | {'' if minutes is None else f'{minutes / 60:.1f}'} |")
        if r.get("not_tested"):
            lines[-1] += f" {r['not_tested']} mutants not tested yet: the run did not finish"
    for r in rows:
        if not r["survivors"]:
            continue
        lines += ["", f"## Survivors in {r['module']}", ""]
        for s in r["survivors"]:
            lines.append(f"- `{s['key']}` {s['function']} ({s['name'].rsplit('.', 1)[-1]}, {s['status']}):")
            lines += ["  ```diff", *(f"  {ln}" for ln in s["lines"]), "  ```"]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps({"rows": rows, "seconds": seconds}, indent=1))
    return report


def merge_summaries(paths: list[Path]) -> tuple[list[dict], dict[str, float]]:
    """The rows and seconds of several runs' ``summary.json`` (the shards of a CI matrix), in MODULES' order; a
    module in more than one takes the last file's row."""
    rows, seconds = {}, {}
    for path in paths:
        summary = json.loads(Path(path).read_text())
        rows.update({r["module"]: r for r in summary["rows"]})
        seconds.update({m: s for m, s in summary["seconds"].items() if m in rows})
    order = units(list(MODULES))
    ordered = sorted(rows.values(), key=lambda r: order.index(r["module"]) if r["module"] in order else len(order))
    return [{"survivors": [], **r} for r in ordered], seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*",
                        help=f"modules of {PACKAGE}/, or parts of one (cli.py:train; PARTS) (default: all of MODULES)")
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "mutation")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from the last runs")
    parser.add_argument("--rerun", action="store_true",
                        help="keep the last results; test changed functions and the last survivors again "
                             "(of whole modules: a part stands for its module)")
    parser.add_argument("--shard", metavar="K/N",
                        help=f"run only the K-th of N groups of the modules, balanced by their minutes (MINUTES): "
                             f"N such that each group is under {LIMIT_MINUTES:.0f} minutes (see --list-shards)")
    parser.add_argument("--list-shards", type=int, metavar="N", help="print the N groups and their minutes, run nothing")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="SUMMARY",
                        help="write one report from the summary.json of several runs (the shards), run nothing")
    args = parser.parse_args(argv)
    every = units(list(MODULES))
    unknown = [m for m in args.modules if m not in MODULES and m not in every]
    if unknown:
        parser.error(f"not a core module: {', '.join(unknown)}; choose from {', '.join(MODULES)} "
                     f"(or a part: {', '.join(u for u in every if u not in MODULES)})")
    todo = units(args.modules or list(MODULES))
    args.out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        rows, seconds = merge_summaries(args.merge)
        report = write_report(rows, seconds, args.out)
        print(report.read_text().split("\n## ")[0])
        print(f"report: {report}")
        return 0
    if args.list_shards:
        for k, group in enumerate(shards(todo, args.list_shards), 1):
            total = sum(unit_minutes(m) for m in group)
            print(f"{k}/{args.list_shards}: {total:.0f} minutes: {' '.join(group)}")
        return 0
    if args.shard:
        try:
            k, n = parse_shard(args.shard)
        except ValueError as err:
            parser.error(str(err))
        todo = shards(todo, n)[k - 1]
        print(f"shard {k}/{n}: {' '.join(todo)} (about {sum(unit_minutes(m) for m in todo):.0f} "
              "minutes)", flush=True)
    if args.rerun:  # whole modules: a split module's changed functions and survivors, whichever part they are in
        todo = list(dict.fromkeys(split_unit(u)[0] for u in todo))
    times_file = args.out / "seconds.json"
    seconds = json.loads(times_file.read_text()) if times_file.exists() else {}
    if not args.report_only:
        for unit in todo:
            print(f"mutating {unit} (tests: {', '.join(MODULES[split_unit(unit)[0]])}) ...", flush=True)
            took = run_module(unit, args.out, args.jobs, args.rerun)
            print(f"  {took / 60:.1f} minutes", flush=True)
            if not args.rerun or unit not in seconds:  # the report shows the time of a whole run
                seconds[unit] = took
            times_file.write_text(json.dumps(seconds, indent=1))
    rows = [row for u in every if (row := collect(u, args.out)) is not None]
    report = write_report(rows, {m: s for m, s in seconds.items() if m in {r["module"] for r in rows}}, args.out)
    print(report.read_text().split("\n## ")[0])
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
