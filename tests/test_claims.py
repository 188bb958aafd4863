"""Claims reports: the cell marks and verdicts on hand-made numbers, and ``kdlab report --claims`` end to end on an
archived digits study."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from _cli import assert_user_error, kdlab_main
from kdlab.analysis.verdicts import Cell, claim_verdict, evaluate
from kdlab.analysis.runs import RunEntry

SEEDS = (0, 1, 2)


def entries(values: list[float], model: str = "m", val: list[float] | None = None, metric: str = "acc") -> list[RunEntry]:
    """Runs of one group: ``metric`` per seed (and val_acc)."""
    return [RunEntry(Path(f"run{seed}"), {"final": {"val_acc": (val or values)[i]}}, "g", seed,
                     metrics={metric: v}) for i, (seed, v) in enumerate(zip(SEEDS, values))]


def groups(**by_group) -> dict:
    return {("data", "m", name): members for name, members in by_group.items()}


BASE = [0.80, 0.82, 0.81]


@pytest.mark.parametrize("better,expect,margin,mark", [
    ([0.83, 0.85, 0.84], "higher", None, "+"),      # +0.03 every seed: the interval lies above 0
    ([0.77, 0.79, 0.78], "higher", None, "−"),      # −0.03: below
    ([0.81, 0.81, 0.81], "higher", None, "0"),      # +0.01, −0.01, 0: contains 0
    ([0.77, 0.79, 0.78], "lower", None, "+"),
    ([0.83, 0.85, 0.84], "not_higher", None, "−"),  # significantly higher: does not "reach" from below
    ([0.83, 0.85, 0.84], "not_higher", 0.05, "+"),  # ... but by less than a margin of 0.05
    ([0.83, 0.85, 0.84], "not_higher", 0.02, "−"),  # wholly above the margin too
    ([0.81, 0.81, 0.81], "not_higher", None, "0"),  # interval [−0.025, +0.025]: too wide to tell at margin 0
    ([0.81, 0.81, 0.81], "not_higher", 0.02, "0"),  # ... and at 0.02
    ([0.81, 0.81, 0.81], "not_higher", 0.05, "+"),  # within a margin of 0.05
    ([0.77, 0.79, 0.78], "not_higher", None, "+"),
    ([0.77, 0.79, 0.78], "not_lower", None, "−"),
    ([0.77, 0.79, 0.78], "not_lower", 0.04, "+"),
    ([0.83, 0.85, 0.84], "not_lower", None, "+"),
])
def test_comparison_marks_follow_the_interval(better, expect, margin, mark):
    check = {"a": "new", "than": "base", "metric": "acc", "expect": expect}
    if margin is not None:
        check["margin"] = margin
    cells = evaluate(check, groups(new=entries(better), base=entries(BASE)))
    assert [c.mark for c in cells] == [mark]
    assert cells[0].detail.startswith("Δ ")
    assert ("margin" in cells[0].check) == bool(margin)


def test_cross_metric_comparison_pairs_by_seed():
    a = entries([0.02, 0.03, 0.025], metric="ece_ts")
    b = entries([0.10, 0.11, 0.09], metric="ece")
    cells = evaluate({"a": "ce", "a_metric": "ece_ts", "than": "ls", "metric": "ece", "expect": "not_higher"},
                      groups(ce=a, ls=b))
    assert cells[0].mark == "+" and "ce (ece_ts)" in cells[0].check


def test_missing_groups_give_no_cell():
    assert evaluate({"a": "x", "than": "base", "metric": "acc", "expect": "higher"}, groups(base=entries(BASE))) == []


@pytest.mark.parametrize("values,mark", [
    ([[0.70, 0.72, 0.71], [0.76, 0.78, 0.77], [0.80, 0.82, 0.81]], "+"),  # gaps 0.1, 0.04, 0 and the last is 0
    ([[0.70, 0.72, 0.71], [0.76, 0.78, 0.77], [0.78, 0.80, 0.79]], "0"),  # shrinking, but the last still differs
    ([[0.78, 0.80, 0.79], [0.76, 0.78, 0.77], [0.70, 0.72, 0.71]], "−"),  # growing
])
def test_approaches_needs_shrinking_gaps_and_an_indistinguishable_last(values, mark):
    g = groups(t1=entries(values[0]), t4=entries(values[1]), t20=entries(values[2]), mse=entries(BASE))
    cells = evaluate({"approaches": "mse", "groups": ["t1", "t4", "t20"], "metric": "acc"}, g)
    assert [c.mark for c in cells] == [mark]


def transfer_groups(best_a: str, best_b: str, regret: float) -> dict:
    """Two models x two settings of family f; each model's best (by val) setting is given; on model b the other
    setting is worse by ``regret`` on test."""
    result = {}
    for model, best in (("a", best_a), ("b", best_b)):
        for setting in ("f-x", "f-y"):
            good = setting == best
            test = [0.9, 0.91, 0.905] if good or model == "a" else [0.9 - regret, 0.91 - regret, 0.9 - regret]
            result[("data", model, setting)] = entries(test, val=[0.95 if good else 0.94] * 3)
    return result


@pytest.mark.parametrize("best_b,regret,expect,margin,marks", [
    ("f-x", 0.0, "transfers", 0, {"+"}),           # the same best setting on both models
    ("f-y", 0.05, "transfers", 0, {"−"}),          # the other model's best costs 5 points here (and there)
    ("f-y", 0.05, "transfers", 0.1, {"+"}),        # ... less than a margin of 10 points
    ("f-y", 0.05, "model_dependent", 0, {"+"}),
    ("f-y", 0.05, "model_dependent", 0.1, {"−"}),  # a cost within the margin: the setting transfers
    ("f-y", 0.05, "model_dependent", 0.045, {"0"}),  # regret interval straddles −0.045
    ("f-x", 0.0, "model_dependent", 0, {"−"}),
])
def test_transfer_reads_best_settings_from_validation_and_regret_from_test(best_b, regret, expect, margin, marks):
    g = transfer_groups("f-x", best_b, regret)
    cells = evaluate({"transfer": "f", "expect": expect, "margin": margin}, g)
    assert {c.model for c in cells} == {"a", "b"}
    assert {c.mark for c in cells if c.model == "b"} == marks


def test_verdict_rule():
    cell = lambda mark: Cell("d", "m", "c", mark, "")
    assert claim_verdict([cell("+"), cell("+"), cell("0")]) == "supported"
    assert claim_verdict([cell("+"), cell("0"), cell("0")]) == "mixed"
    assert claim_verdict([cell("+"), cell("+"), cell("−")]) == "mixed"
    assert claim_verdict([cell("0"), cell("−")]) == "not supported"
    assert claim_verdict([]) == "no data"


# ------------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def archived(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("claims")
    spec = {"seeds": 3, "baseline": "ce",
            "base": {"data": {"source": "digits", "val_size": 0.1, "train_size": 600}, "model": {"name": "cnn_small8"},
                     "train": {"epochs": 2}, "runtime": {"progress": False, "threads": 1}},
            "stages": {"ce": {"method": {"name": "ce"}}, "ls": {"method": {"name": "ls", "eps": 0.1}}}}
    (root / "study.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    assert kdlab_main("study", root / "study.yaml", "--out", root / "runs", "--quiet").returncode == 0
    assert kdlab_main("archive", root / "runs", "--out", root / "results" / "digits").returncode == 0
    return root


def test_claims_report_end_to_end(archived, tmp_path):
    claims = {"results": str(archived / "results"), "commands": "kdlab study study.yaml --out runs",
              "datasets": {"digits": "cnn_small8, 2 epochs"},
              "claims": [{"id": 1, "title": "LS lowers NLL... or not", "source": "a test", "studies": ["digits"],
                          "plots": ["reliability", "projection", "curves"], "metrics": ["acc", "train_acc", "spread_test"],
                          "checks": [{"a": "ls", "than": "ce", "metric": "acc", "expect": "higher"},
                                     {"a": "ce", "a_metric": "ece_ts", "than": "ls", "metric": "ece",
                                      "expect": "not_higher"}],
                          "context": [{"a": "ls", "than": "ce", "metric": "nll", "expect": "lower"}]}]}
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(claims, sort_keys=False))
    result = kdlab_main("report", "--claims", path, "--out", tmp_path / "reports")
    assert result.returncode == 0, result.stderr
    md = (tmp_path / "reports" / "claims.md").read_text()
    record = json.loads((tmp_path / "reports" / "claims.json").read_text())
    verdict = record["claims"][0]["verdict"]
    assert verdict in ("supported", "not supported", "mixed")
    assert f"**Verdict: {verdict} on this data**" in md and "## Regenerate every number" in md
    context = record["claims"][0]["context"]  # shown, marked in brackets, and outside the verdict
    assert len(context) == 1 and f"| context: ls lower than ce, nll | ({context[0]['mark']}) |" in md
    assert len(record["claims"][0]["cells"]) == 2 and "spread ratio (test)" in md and "train acc (last epoch)" in md
    assert "| nan" not in md and "| – |" not in md.split("| dataset | model | comparison")[0]
    for name in ("claim1_reliability.png", "claim1_projection.png", "claim1_curves.png"):
        assert (tmp_path / "reports" / "claims" / name).is_file() and f"claims/{name}" in md


@pytest.mark.parametrize("change,fragment", [
    ({"claims": []}, "'claims' must be a non-empty list"),
    ({"nope": 1}, "unknown key 'nope'"),
    ({"claims": [{"id": 1, "title": "t", "studies": ["digits"], "checks": [{"a": "ls", "than": "ce", "metric": "acc",
      "expect": "higher"}], "context": [{"a": "ls", "than": "ce", "metric": "acc", "expect": "more"}]}]},
     "expect is one of"),
    ({"schedule": {"studies": ["digits"], "short": "ce"}, "claims": [{"id": 1}]}, "schedule: 'long' is missing"),
    ({"schedule": {"studies": ["digits"], "short": "ce", "long": "x", "tolerance": 3}}, "tolerance is an accuracy gap"),
    ({"claims": [{"id": 1, "title": "t", "studies": ["digits"], "checks": [{"a": "ls", "than": "ce"}]}]},
     "'metric' is missing"),
    ({"claims": [{"id": 1, "title": "t", "studies": ["digits"],
                  "checks": [{"a": "ls", "than": "ce", "metric": "acc", "expect": "better"}]}]}, "expect is one of"),
    ({"claims": [{"id": 1, "title": "t", "studies": ["digits"],
                  "checks": [{"a": "ls", "than": "ce", "metric": "acc", "expect": "higher", "margin": 0.01}]}]},
     "a margin belongs to a not_higher, not_lower or transfer check"),
    ({"claims": [{"id": 1, "title": "t", "studies": ["digits"],
                  "checks": [{"transfer": "ls", "expect": "transfers", "margin": -0.01}]}]}, "margin is a difference"),
])
def test_bad_claims_files_are_one_line_errors(archived, tmp_path, change, fragment):
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump({"results": str(archived / "results"), **change}))
    assert_user_error(kdlab_main("report", "--claims", path, "--out", tmp_path / "reports"), fragment)
    assert not (tmp_path / "reports").exists()


def test_studies_not_run_yet_are_named_and_give_no_data(archived, tmp_path):
    claims = {"results": str(archived / "results"),
              "claims": [{"id": 4, "title": "later", "studies": ["digits", "missing"],
                          "checks": [{"a": "ls", "than": "ce", "metric": "acc", "expect": "higher"}]},
                         {"id": 5, "title": "never", "studies": ["missing"],
                          "checks": [{"a": "ls", "than": "ce", "metric": "acc", "expect": "higher"}]}]}
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(claims, sort_keys=False))
    assert kdlab_main("report", "--claims", path, "--out", tmp_path / "reports").returncode == 0
    record = json.loads((tmp_path / "reports" / "claims.json").read_text())
    assert [c["pending"] for c in record["claims"]] == [["missing"], ["missing"]]
    assert record["claims"][1]["verdict"] == "no data" and len(record["claims"][0]["cells"]) == 1
    assert "Not run yet: `missing`." in (tmp_path / "reports" / "claims.md").read_text()


def test_schedule_section_pairs_the_longer_baseline_by_seed(archived, tmp_path):
    spec = yaml.safe_load((archived / "study.yaml").read_text())
    spec["stages"] = {"ce_x2": {"method": {"name": "ce"}, "train": {"epochs": 4}}}
    del spec["baseline"]
    (tmp_path / "long.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    assert kdlab_main("study", tmp_path / "long.yaml", "--out", tmp_path / "runs", "--quiet").returncode == 0
    assert kdlab_main("archive", tmp_path / "runs", "--out", tmp_path / "results" / "long").returncode == 0
    results = tmp_path / "results"
    (results / "digits").symlink_to(archived / "results" / "digits")
    claims = {"results": str(results),
              "schedule": {"studies": ["digits", "long", "later"], "short": "ce", "long": "ce_x2", "tolerance": 0.02},
              "claims": [{"id": 1, "title": "t", "studies": ["digits"],
                          "checks": [{"a": "ls", "than": "ce", "metric": "acc", "expect": "higher"}]}]}
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(claims, sort_keys=False))
    assert kdlab_main("report", "--claims", path, "--out", tmp_path / "reports").returncode == 0
    md = (tmp_path / "reports" / "claims.md").read_text()
    section = md.split("## Is the schedule long enough?")[1].split("## Claim 1")[0]
    assert "Not run yet: `later`." in section and "at most 0.02 (2 points) counts as near" in section
    row = [line for line in section.splitlines() if line.startswith("| digits |")]
    assert len(row) == 1
    cells = [c.strip() for c in row[0].strip("|").split("|")]
    assert cells[1] == "cnn_small8" and cells[2] == "2" and cells[5] == "4"

    short = [json.loads((archived / "results" / "digits" / f"ce-s{s}" / "summary.json").read_text())
             ["evaluation"]["test"]["acc"] for s in SEEDS]
    long = [json.loads((results / "long" / f"ce_x2-s{s}" / "summary.json").read_text())
            ["evaluation"]["test"]["acc"] for s in SEEDS]
    gain = sum(b - a for a, b in zip(short, long)) / 3
    assert cells[8].startswith(f"{gain:+.4f}") and cells[9] == ("yes" if gain <= 0.02 else "no")


ROOT = Path(__file__).resolve().parents[1]
PROFILES = {"fsdd": "fsdd_speakers", "fashion_mnist": "fashion_mnist_5k"}


def test_the_projects_claims_name_groups_their_studies_have_on_every_profile():
    from kdlab.analysis.claims import _groups_named, _validated
    from kdlab.experiments.study import plan_study

    path = ROOT / "studies" / "claims.yaml"
    claims = _validated(path, yaml.safe_load(path.read_text()))
    assert [c["id"] for c in claims] == list(range(1, 10))
    spec = yaml.safe_load(path.read_text())
    schedule = spec["schedule"]
    for data, profile in PROFILES.items():  # the schedule check's two groups, and its study in the commands
        runs = {}
        for recipe in ("offline", "schedule"):
            assert f"{data}/{recipe}" in schedule["studies"] and f"runs/claims/{data}/{recipe}" in spec["commands"]
            runs[recipe] = plan_study(ROOT / "studies" / "claims" / f"{recipe}.yaml",
                                      profiles=[ROOT / "studies" / "profiles" / f"{profile}.yaml"])[0]
        assert schedule["short"] in {r.group for r in runs["offline"]}
        assert schedule["long"] in {r.group for r in runs["schedule"]}
    planned = {}
    for claim in claims:
        for study in claim["studies"]:
            assert f"--out runs/claims/{study} " in spec["commands"], study  # every number can be regenerated
            data, recipe = study.split("/")
            for profile in (PROFILES[data], "cifar100"):  # the CIFAR-100 profile plans the same groups
                key = (recipe, profile)
                if key not in planned:
                    runs, _, _ = plan_study(ROOT / "studies" / "claims" / f"{recipe}.yaml",
                                            profiles=[ROOT / "studies" / "profiles" / f"{profile}.yaml"])
                    planned[key] = {run.group for run in runs}
                groups = planned[key]
                named = {g for check in claim["checks"] for g in _groups_named(check)} | set(claim["groups"])
                assert named <= groups, (claim["id"], study, named - groups)
                for check in claim["checks"]:
                    if "transfer" in check:
                        assert sum(g.startswith(check["transfer"] + "-") for g in groups) >= 2
