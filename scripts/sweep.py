"""The sweep of conditions (`make sweep`): every chapter executed under several conditions, every check recorded.

A claim of the book must hold on any machine, not only where its margin was chosen. This script executes each
chapter notebook under each condition below, with ``RESNET_TUTORIAL_CHECKS=report`` (a claim that does not hold
is recorded instead of raised) and ``RESNET_TUTORIAL_CHECK_LOG`` (every check writes its claim, whether it held,
and its measured value), and writes one table, every check x every condition, to ``_build/sweep/`` as
``sweep.json`` and ``sweep.md``. It exits 1 when a check fails or a cell raises in any condition.

The conditions: threads per kernel (1, as nbval runs the chapters, and 2, as ``make book`` and Colab do); the
ATen and oneDNN kernels of a CPU with AVX2 only (no native bf16, so ``amp="auto"`` stays in fp32) and ATen's
unvectorised default kernels; and two other seeds (``RESNET_TUTORIAL_SEED`` shifts every seed a chapter uses).
Each condition changes training, so each trains its own models, in its own experiment cache (kept between runs
of the sweep in ``_build/sweep/cache/<condition>``: a second sweep of unchanged chapters only re-executes them).
Conditions combine with ``:`` (``threads=2:seed+1``); by default the sweep runs ``DEFAULT``, every setting at
least once in four runs.

    python scripts/sweep.py chapters/02_residual_connections.ipynb ... [--conditions base,seed+1] [--out DIR]
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import time

from resnet_tutorial.book import read_check_log

ROOT = pathlib.Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Condition:
    name: str
    what: str
    env: dict
    threads: int = 1

    @property
    def workers(self) -> int:
        """Chapters executed at once: one per core, each kernel on ``threads`` threads (2 cores here)."""
        return max(1, (os.cpu_count() or 2) // self.threads)


CONDITIONS = (
    Condition("base", "1 thread per kernel (nbval's setting), this CPU's kernels, seed offset 0", {}),
    Condition("threads=2", "2 threads per kernel (make book's and Colab's setting)", {}, threads=2),
    Condition("avx2", "ATen and oneDNN kernels of an AVX2 CPU: no native bf16, so amp='auto' runs fp32",
              {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}),
    Condition("default", "ATen's unvectorised default kernels, no native bf16",
              {"ATEN_CPU_CAPABILITY": "default", "RESNET_TUTORIAL_CPU_BF16": "0"}),
    Condition("seed+1", "every seed shifted by 1", {"RESNET_TUTORIAL_SEED": "1"}),
    Condition("seed+2", "every seed shifted by 2", {"RESNET_TUTORIAL_SEED": "2"}),
)


def combined(*names: str) -> Condition:
    """The conditions ``names`` at once (``"threads=2:seed+1"``): their settings merged, the most threads."""
    parts = [next(c for c in CONDITIONS if c.name == n) for n in names]
    return Condition(":".join(names), "; ".join(c.what for c in parts),
                     {k: v for c in parts for k, v in c.env.items()}, threads=max(c.threads for c in parts))


#: What `make sweep` runs: each setting above at least once, in four runs instead of six, so that the sweep fits
#: its 75 minutes on two cores (each run retrains every model: every condition changes the training). Two
#: threads with a shifted seed and AVX2 kernels with another are each what a reader's machine may well be.
CONDITIONS += (combined("threads=2", "seed+1"), combined("avx2", "seed+2"))
DEFAULT = ("base", "threads=2:seed+1", "avx2:seed+2", "default")


def execute(notebook: pathlib.Path, log: pathlib.Path, env: dict, timeout: int) -> dict:
    """Run one notebook in a fresh kernel with ``env`` (a child process, so the kernel inherits it); return
    its wall time and the errors of its cells."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--execute-one", str(notebook), "--timeout", str(timeout)],
        env={**os.environ, **env, "RESNET_TUTORIAL_CHECKS": "report", "RESNET_TUTORIAL_CHECK_LOG": str(log)},
        capture_output=True, text=True,
    )
    errors = []
    if proc.returncode != 0:
        errors.append(f"the notebook could not be executed: {proc.stderr.strip()[-2000:]}")
    else:
        errors = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"seconds": round(time.perf_counter() - start, 1), "errors": errors}


def execute_one(path: str, timeout: int) -> None:
    """In the child: execute the notebook in its own folder; print the list of cell errors as JSON."""
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                                     resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}})
    client.execute()
    errors = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                errors.append(f"cell {i}: {out.get('ename')}: {str(out.get('evalue'))[:500]}")
    print(json.dumps(errors))


def read_checks(log: pathlib.Path) -> list[dict]:
    """The checks a chapter made, in order; a claim made several times is numbered by its occurrence."""
    seen = collections.Counter()
    checks = []
    for c in read_check_log(log):
        seen[c["claim"]] += 1
        c["occurrence"] = seen[c["claim"]]
        checks.append(c)
    return checks


def run_condition(cond: Condition, notebooks: list[pathlib.Path], out: pathlib.Path, timeout: int) -> dict:
    folder = out / cond.name
    folder.mkdir(parents=True, exist_ok=True)
    env = {
        **cond.env,
        "OMP_NUM_THREADS": str(cond.threads),
        "MKL_NUM_THREADS": str(cond.threads),
        "RESNET_TUTORIAL_CACHE": str(out / "cache" / cond.name),
        "RESNET_TUTORIAL_PROFILE": "cpu",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }
    start = time.perf_counter()
    chapters = {}
    with concurrent.futures.ThreadPoolExecutor(cond.workers) as pool:
        futures = {}
        for nb in notebooks:
            log = folder / f"{nb.stem}.jsonl"
            log.unlink(missing_ok=True)
            futures[nb.stem] = (pool.submit(execute, nb, log, env, timeout), log)
        for stem, (future, log) in futures.items():
            chapters[stem] = {**future.result(), "checks": read_checks(log)}
            print(f"  {cond.name:<10} {stem:<28} {chapters[stem]['seconds']:7.1f} s  "
                  f"{len(chapters[stem]['checks'])} checks, "
                  f"{sum(not c['holds'] for c in chapters[stem]['checks'])} false, "
                  f"{len(chapters[stem]['errors'])} errors", flush=True)
    return {"what": cond.what, "env": env, "seconds": round(time.perf_counter() - start, 1), "chapters": chapters}


def table(results: dict) -> list[dict]:
    """One row per check (chapter, claim, occurrence), with its outcome in every condition."""
    rows = {}
    for cname, cres in results.items():
        for stem, ch in cres["chapters"].items():
            for c in ch["checks"]:
                key = (stem, c["claim"], c["occurrence"])
                row = rows.setdefault(key, {"chapter": stem, "claim": c["claim"], "occurrence": c["occurrence"],
                                            "conditions": {}})
                row["conditions"][cname] = {"holds": c["holds"], "detail": c["detail"]}
    ordered = sorted(rows.values(), key=lambda r: (r["chapter"], r["claim"], r["occurrence"]))
    for row in ordered:
        for cname in results:  # a check one condition made and another did not: that is a failure too
            row["conditions"].setdefault(cname, {"holds": False, "detail": "not made in this condition"})
        row["holds"] = all(v["holds"] for v in row["conditions"].values())
    return ordered


def markdown(results: dict, rows: list[dict]) -> str:
    names = list(results)
    lines = ["# The sweep of conditions", ""]
    lines += ["| condition | what | wall time | false checks | cell errors |", "|---|---|---|---|---|"]
    for n in names:
        chs = results[n]["chapters"].values()
        false = sum(not c["holds"] for ch in chs for c in ch["checks"])
        errors = sum(len(ch["errors"]) for ch in chs)
        seconds = results[n]["seconds"]
        wall = f"{seconds / 60:.1f} min" if seconds is not None else "updated"
        lines.append(f"| {n} | {results[n]['what']} | {wall} | {false} | {errors} |")
    failed = [r for r in rows if not r["holds"]]
    lines += ["", f"**{len(rows)} checks x {len(names)} conditions: {len(rows) - len(failed)} hold in every "
              f"condition, {len(failed)} do not.**", ""]
    errors = [(n, stem, e) for n in names for stem, ch in results[n]["chapters"].items() for e in ch["errors"]]
    if errors:
        lines += ["## Cell errors", ""] + [f"- {n}, {stem}: `{e}`" for n, stem, e in errors] + [""]
    stems = sorted({stem for n in names for stem in results[n]["chapters"]})
    lines += ["## Seconds per chapter (two chapters at a time, or one with 2 threads)", "",
              "| chapter | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for stem in stems:
        secs = [results[n]["chapters"].get(stem, {}).get("seconds") for n in names]
        lines.append(f"| {stem} | " + " | ".join("" if t is None else f"{t:.0f}" for t in secs) + " |")
    lines += ["", "## Every check", "", "| chapter | claim | " + " | ".join(names) + " |",
              "|---|---|" + "---|" * len(names)]
    for r in rows:
        cells = []
        for n in names:
            v = r["conditions"][n]
            cells.append(("✔ " if v["holds"] else "✘ ") + v["detail"].replace("|", "/").replace("\n", " "))
        claim = r["claim"].replace("|", "/") + (f" (#{r['occurrence']})" if r["occurrence"] > 1 else "")
        lines.append(f"| {r['chapter'][:2]} | {claim} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=pathlib.Path)
    parser.add_argument("--conditions", default=",".join(DEFAULT),
                        help="comma-separated names among: " + ", ".join(c.name for c in CONDITIONS))
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "_build" / "sweep")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    parser.add_argument("--update", action="store_true",
                        help="re-execute only these notebooks in these conditions, and replace their entries in "
                             "the existing sweep.json (after a chapter changed)")
    parser.add_argument("--execute-one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.execute_one:
        execute_one(args.execute_one, args.timeout)
        return 0
    args.out = args.out.resolve()  # the kernels run in the notebooks' folders
    known = {c.name: c for c in CONDITIONS}
    unknown = [n for n in args.conditions.split(",") if n not in known]
    if unknown or not args.notebooks:
        parser.error(f"unknown condition(s) {unknown}" if unknown else "name the notebooks to execute")
    results = {}
    if args.update:
        results = json.loads((args.out / "sweep.json").read_text(encoding="utf-8"))["conditions"]
    for name in args.conditions.split(","):
        print(f"{name}: {known[name].what}", flush=True)
        fresh = run_condition(known[name], args.notebooks, args.out, args.timeout)
        if name in results:
            results[name]["chapters"].update(fresh["chapters"])
            results[name]["seconds"] = None  # the condition's wall time is no longer one run's
        else:
            results[name] = fresh
    rows = table(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sweep.json").write_text(json.dumps({"conditions": results, "checks": rows}, indent=1,
                                                    ensure_ascii=False), encoding="utf-8")
    (args.out / "sweep.md").write_text(markdown(results, rows), encoding="utf-8")
    failed = [r for r in rows if not r["holds"]]
    errors = sum(len(ch["errors"]) for res in results.values() for ch in res["chapters"].values())
    print(f"{len(rows)} checks x {len(results)} conditions: {len(rows) - len(failed)} hold everywhere, "
          f"{len(failed)} do not; {errors} cell errors. Table: {args.out / 'sweep.md'}")
    for r in failed:
        bad = [f"{n}: {v['detail']}" for n, v in r["conditions"].items() if not v["holds"]]
        print(f"  ✘ {r['chapter']}: {r['claim']} [{'; '.join(bad)}]")
    return 1 if failed or errors else 0


if __name__ == "__main__":
    sys.exit(main())
