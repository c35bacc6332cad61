"""scripts/mutation.py's pure parts: how the modules are split into shards of `make mutation`, and how the
shards' summaries make one report."""

import importlib.util
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("mutation_script", ROOT / "scripts" / "mutation.py")
mutation = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mutation)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_shards_cover_every_module_once_in_the_tables_order(n):
    modules = list(mutation.MODULES)
    groups = mutation.shards(modules, n)
    assert len(groups) == n
    assert sorted(m for g in groups for m in g) == sorted(modules)
    for g in groups:
        assert g == [m for m in modules if m in g]


def test_shards_are_balanced_by_minutes():
    minutes = {"a": 30, "b": 20, "c": 20, "d": 10, "e": 5, "f": 5}
    groups = mutation.shards(list(minutes), 3, minutes)
    totals = sorted(sum(minutes[m] for m in g) for g in groups)
    assert totals == [30, 30, 30]
    # A module without a recorded time counts as a quarter of the limit, not as nothing.
    groups = mutation.shards(["new", "a"], 2, {"a": 1.0})
    assert sorted(map(len, groups)) == [1, 1]


def test_the_documented_number_of_shards_keeps_each_under_the_limit():
    """`make mutation` runs one shard of MUTATION_SHARDS: each must fit the hour the issue allows."""
    makefile = (ROOT / "Makefile").read_text()
    n = int(next(ln.split("?=")[1] for ln in makefile.splitlines() if ln.startswith("MUTATION_SHARDS")))
    for group in mutation.shards(mutation.units(list(mutation.MODULES)), n):
        assert sum(mutation.MINUTES[m] for m in group) <= mutation.LIMIT_MINUTES
    assert set(mutation.MINUTES) == set(mutation.units(list(mutation.MODULES)))


@pytest.mark.parametrize("text, expected", [("1/3", (1, 3)), (" 3 / 3 ", (3, 3))])
def test_parse_shard(text, expected):
    assert mutation.parse_shard(text) == expected


@pytest.mark.parametrize("text", ["0/3", "4/3", "3", "a/b", "1/0"])
def test_parse_shard_refuses(text):
    with pytest.raises(ValueError, match="K/N"):
        mutation.parse_shard(text)


def test_the_report_merges_the_shards_summaries(tmp_path):
    def row(module, killed, survived):
        survivors = [{"name": f"x.{i}", "status": "survived", "key": f"{i:010d}", "function": "f",
                      "lines": ["-a", "+b"]} for i in range(survived)]
        return {"module": module, "mutants": killed + survived, "killed": killed, "equivalent": 0, "gpu_only": 0,
                "survived": survived, "survivors": survivors}

    first, second = tmp_path / "1.json", tmp_path / "2.json"
    first.write_text(json.dumps({"rows": [row("data.py", 9, 1)], "seconds": {"data.py": 60.0}}))
    second.write_text(json.dumps({"rows": [row("checkpoint.py", 10, 0)], "seconds": {"checkpoint.py": 120.0}}))
    assert mutation.main(["--merge", str(first), str(second), "--out", str(tmp_path / "out")]) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    lines = [ln for ln in report.splitlines() if ln.startswith("| ")]
    assert [ln.split(" | ")[0] for ln in lines[1:]] == ["| checkpoint.py", "| data.py", "| **all**"]  # MODULES' order
    assert "| **all** | 20 | 19 | 0 | 0 | 1 | 95.0 % | 3.0 |" in report
    assert "## Survivors in data.py" in report and "`0000000000`" in report


def test_equivalent_keys_are_read_from_entries_and_their_wrapped_lines(tmp_path, monkeypatch):
    listed = tmp_path / "equivalent.md"
    listed.write_text(
        "# Title `aaaaaaaaaa` (not an entry)\n\n## Equivalent\n\n"
        "- `0123456789` f: a reason that wraps onto\n  `abcdef0123` a second key.\n\n"
        "Prose between entries: `bbbbbbbbbb` is not listed.\n\n"
        "## Only a GPU can kill them\n\n- `9876543210` g: CUDA only.\n"
    )
    monkeypatch.setattr(mutation, "EQUIVALENT_FILE", listed)
    assert mutation.equivalent_keys() == {"0123456789": "equivalent", "abcdef0123": "equivalent",
                                          "9876543210": "gpu_only"}


def test_the_large_nets_left_out_of_the_models_runs_are_registered_and_only_the_large_ones():
    import resnet_tutorial as rt

    assert set(mutation.LARGE_NETS) <= set(rt.list_models())
    assert {"resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2"}.isdisjoint(mutation.LARGE_NETS)
    config = mutation.mutmut_config("models/zoo.py", mutation.MODULES["models/zoo.py"])
    assert "test_outputs_equal_both_libraries_in_both_directions[resnet152]" in config
    assert "[resnet50]" not in config
    assert "resnet152" not in mutation.mutmut_config("training.py", mutation.MODULES["training.py"])


def test_a_mutant_belongs_to_its_function():
    assert mutation._function_of("resnet_tutorial.data.xǁImageDataǁaugment__mutmut_29") == \
        "resnet_tutorial.data.xǁImageDataǁaugment"
    assert mutation._function_of("resnet_tutorial.data.x__online__mutmut_1") == "resnet_tutorial.data.x__online"


def _functions(module: str) -> list[str]:
    """The functions of a module of the package, as mutmut names them (``f``, ``xǁClassǁmethod`` without the x)."""
    import ast

    tree = ast.parse((ROOT / mutation.PACKAGE / module).read_text())
    names = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.append(node.name)
        elif isinstance(node, ast.ClassDef):
            names += [f"ǁ{node.name}ǁ{f.name}" for f in node.body if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)]
    return names


@pytest.mark.parametrize("module", list(mutation.PARTS))
def test_each_function_of_a_split_module_is_in_exactly_one_part(module):
    """A function in no part would never be mutated by the shards; in two, tested twice. And each part's patterns
    (what mutmut is given) must match its own functions' mutants and no other function's."""
    functions = _functions(module)
    listed = [f for part in mutation.PARTS[module].values() for f in part]
    assert sorted(listed) == sorted(functions)
    dotted = mutation.PACKAGE + "." + module.removesuffix(".py").replace("/", ".")
    for part, own in mutation.PARTS[module].items():
        patterns = mutation.part_patterns(f"{module}:{part}")
        matched = {f for f in functions for p in patterns
                   if mutation.fnmatch.fnmatchcase(f"{dotted}.x_{f}__mutmut_12", p)}
        assert matched == set(own), part
    assert mutation.part_patterns(module) == []  # a whole module: no names, every mutant


def test_a_split_module_runs_and_shards_as_its_parts():
    parts = [f"cli.py:{p}" for p in mutation.PARTS["cli.py"]]
    assert mutation.units(["data.py", "cli.py", "gradflow.py"]) == ["data.py", *parts, "gradflow.py"]
    assert mutation.units(["cli.py:train"]) == ["cli.py:train"]
    assert mutation.split_unit("cli.py:train") == ("cli.py", "train")
    assert mutation.split_unit("models/zoo.py") == ("models/zoo.py", None)
    groups = mutation.shards(mutation.units(list(mutation.MODULES)), 5)
    assert sorted(u for g in groups for u in g) == sorted(mutation.units(list(mutation.MODULES)))


def test_a_part_names_its_mutants_to_mutmut_and_keeps_the_modules_work_folder(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(mutation.subprocess, "call", lambda cmd, **kw: calls.append((cmd, kw["cwd"])) or 0)
    work = mutation.workdir(tmp_path, "cli.py")
    (work / "mutants").mkdir(parents=True)
    (work / "mutants" / "from_the_other_parts").write_text("results")
    mutation.run_module("cli.py:train", tmp_path, jobs=2)
    [(cmd, cwd)] = calls
    assert cwd == work and cmd[1:4] == ["run", "--max-children", "2"]
    assert cmd[4:] == mutation.part_patterns("cli.py:train") and "resnet_tutorial.cli.x__cmd_train*" in cmd
    assert (work / "mutants" / "from_the_other_parts").exists()  # the other parts' results stay
    calls.clear()
    mutation.run_module("cli.py", tmp_path, jobs=2)  # the whole module: from scratch, every mutant
    assert calls[0][0][4:] == [] and not (work / "mutants").exists()


def test_a_parts_row_counts_its_own_functions_mutants(tmp_path):
    work = mutation.workdir(tmp_path, "cli.py")
    meta = work / "mutants" / mutation.PACKAGE / "cli.py.meta"
    meta.parent.mkdir(parents=True)
    codes = {"resnet_tutorial.cli.x__cmd_train__mutmut_1": 1, "resnet_tutorial.cli.x__cmd_train__mutmut_2": 1,
             "resnet_tutorial.cli.x_main__mutmut_1": 1, "resnet_tutorial.cli.x__cmd_predict__mutmut_1": None}
    meta.write_text(json.dumps({"exit_code_by_key": codes}))
    row = mutation.collect("cli.py:train", tmp_path)
    assert (row["module"], row["mutants"], row["killed"], row.get("not_tested", 0)) == ("cli.py:train", 2, 2, 0)
    assert (mutation.collect("cli.py:commands", tmp_path)["not_tested"], mutation.collect("cli.py", tmp_path)["mutants"]) \
        == (1, 4)


def test_rerun_takes_the_whole_module_of_a_part(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(mutation, "run_module", lambda unit, out, jobs, rerun=False: ran.append((unit, rerun)) or 1.0)
    assert mutation.main(["cli.py:train", "--rerun", "--out", str(tmp_path)]) == 0
    assert ran == [("cli.py", True)]
    ran.clear()
    assert mutation.main(["cli.py", "data.py", "--out", str(tmp_path)]) == 0
    assert ran == [(f"cli.py:{p}", False) for p in mutation.PARTS["cli.py"]] + [("data.py", False)]
