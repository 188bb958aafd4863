"""Claims reports: the cell marks and verdicts on hand-made numbers, and ``kdlab report --claims`` end to end on an
archived digits study."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from _cli import assert_user_error, kdlab_main
from kdlab.analysis.decisions import minimum_detectable_effect
from kdlab.analysis.verdicts import Cell, claim_verdict, evaluate_claim
from kdlab.analysis.runs import RunEntry

SEEDS = (0, 1, 2, 3, 4, 5)
NOISE = [0.004, -0.003, 0.001, -0.004, 0.003, -0.001]  # per-seed wobble of a paired difference (std 0.0033)


def entries(values: list[float], model: str = "m", val: list[float] | None = None, metric: str = "acc") -> list[RunEntry]:
    """Runs of one group: ``metric`` per seed (and val_acc)."""
    return [RunEntry(Path(f"run{seed}"), {"final": {"val_acc": (val or values)[i]}}, "g", seed,
                     metrics={metric: v}) for i, (seed, v) in enumerate(zip(SEEDS, values))]


def groups(**by_group) -> dict:
    return {("data", "m", name): members for name, members in by_group.items()}


BASE = [0.80, 0.82, 0.81, 0.80, 0.83, 0.81]


def shifted(shift: float, noise: float = 0.0) -> list[float]:
    return [b + shift + noise * n for b, n in zip(BASE, NOISE)]


def one(check: dict, g: dict, **claim) -> list[Cell]:
    return evaluate_claim({"checks": [check], **claim}, g)


@pytest.mark.parametrize("shift,noise,expect,delta,mark,reading", [
    (0.03, 1, "higher", 0.005, "+", "holds"),           # +3 points every seed, wobble 0.3: shown above 0
    (-0.03, 1, "higher", 0.005, "-", "fails"),          # shown below
    (0.001, 0.1, "higher", 0.005, "=", "fails"),        # +0.1 point, tight: shown within ±0.5 point (and above 0)
    (0.002, 5, "higher", 0.005, "not detectable", "not detectable"),  # wobble 1.7 points: interval wider than δ
    (-0.03, 1, "lower", 0.005, "+", "holds"),
    (-0.003, 0.2, "not_lower", 0.01, "=", "holds"),     # 0.3 points lower, shown within a point: reaches
    (-0.03, 1, "not_lower", 0.01, "-", "fails"),
    (0.03, 1, "not_lower", 0.01, "+", "holds"),
    (0.03, 1, "not_higher", 0.01, "-", "fails"),
])
def test_sub_claim_marks_and_readings(shift, noise, expect, delta, mark, reading):
    check = {"a": "new", "than": "base", "metric": "acc", "expect": expect, "delta": delta}
    cell, = one(check, groups(new=entries(shifted(shift, noise)), base=entries(BASE)))
    assert cell.mark.split(" (MDE")[0] == mark and cell.reading == reading
    assert f"δ {delta:g}" in cell.detail and "detectable at 80% power" in cell.detail
    if mark == "not detectable":  # the power statement travels with the mark
        assert cell.mark.startswith("not detectable (MDE ") and cell.numbers["mde"] > delta


def test_detectable_effect_is_the_noncentral_t_one():
    from kdlab.analysis import stats
    a, b = shifted(0.002, 5), BASE
    cell, = one({"a": "a", "than": "b", "metric": "acc", "expect": "higher", "delta": 0.005},
                groups(a=entries(a), b=entries(b)))
    diff = stats.paired_difference(a, b)
    assert cell.numbers["mde"] == pytest.approx(minimum_detectable_effect(diff["std"], 6))


def test_cross_metric_comparison_pairs_by_seed():
    a = entries([0.020, 0.030, 0.025, 0.022, 0.028, 0.024], metric="ece_ts")
    b = entries([0.100, 0.110, 0.090, 0.100, 0.105, 0.095], metric="ece")
    cell, = one({"a": "ce", "a_metric": "ece_ts", "than": "ls", "metric": "ece", "expect": "not_higher",
                 "delta": 0.01}, groups(ce=a, ls=b))
    assert cell.mark == "+" and cell.reading == "holds" and "ce (ece_ts)" in cell.check


def test_missing_groups_give_no_cell():
    assert one({"a": "x", "than": "base", "metric": "acc", "expect": "higher", "delta": 0.01},
               groups(base=entries(BASE))) == []


def test_holm_runs_across_the_sub_claims_of_a_cell():
    # a gain shown alone (p ~ 0.01) does not survive beside two sub-claims that are decided no better
    gain = [b + d for b, d in zip(BASE, [0.010, 0.002, 0.012, 0.001, 0.009, 0.003])]
    checks = [{"a": "gain", "than": "base", "metric": "acc", "expect": "higher", "delta": 0.001},
              {"a": "noise1", "than": "base", "metric": "acc", "expect": "higher", "delta": 0.001},
              {"a": "noise2", "than": "base", "metric": "acc", "expect": "higher", "delta": 0.001}]
    g = groups(gain=entries(gain), base=entries(BASE), noise1=entries(shifted(0.0, 3)),
               noise2=entries(shifted(0.001, 4)))
    alone, = evaluate_claim({"checks": checks[:1]}, g)
    family = evaluate_claim({"checks": checks}, g)
    assert alone.mark == "+" and alone.numbers["p_adjusted"] < 0.025
    assert family[0].numbers["p_adjusted"] == pytest.approx(min(1.0, 3 * alone.numbers["p_adjusted"]), rel=1e-9)
    assert family[0].mark.startswith("not detectable")


@pytest.mark.parametrize("first,last,reading", [
    (-0.05, 0.0005, "holds"),          # a shown gap at tau 1, equivalent at tau 20
    (-0.05, -0.03, "fails"),           # still a shown gap at the last setting
    (-0.003, 0.0005, "not detectable"),  # no gap shown at the first setting to close
])
def test_approaches_needs_a_shown_gap_that_closes(first, last, reading):
    g = groups(t1=entries(shifted(first, 0.3)), t4=entries(shifted((first + last) / 2, 0.3)),
               t20=entries(shifted(last, 0.3)), mse=entries(BASE))
    cell, = one({"approaches": "mse", "groups": ["t1", "t4", "t20"], "metric": "acc", "delta": 0.005}, g)
    assert cell.reading == reading and "first gap" in cell.detail and set(cell.numbers) == {"first", "last"}


def transfer_groups(best_a: str, best_b: str, regret: float) -> dict:
    """Two models x two settings of family f; each model's best (by val) setting is given; on model b the other
    setting is worse by ``regret`` on test."""
    result = {}
    for model, best in (("a", best_a), ("b", best_b)):
        for setting in ("f-x", "f-y"):
            good = setting == best
            test = BASE if good or model == "a" else shifted(-regret, 1)
            result[("data", model, setting)] = entries(test, val=[0.95 if good else 0.94] * 6)
    return result


@pytest.mark.parametrize("best_b,regret,expect,reading", [
    ("f-x", 0.0, "transfers", "holds"),            # the same best setting on both models
    ("f-y", 0.05, "transfers", "fails"),           # the other model's best costs 5 points here
    ("f-y", 0.002, "transfers", "holds"),          # ... 0.2 points, shown within δ = 1 point
    ("f-y", 0.05, "model_dependent", "holds"),
    ("f-y", 0.002, "model_dependent", "fails"),    # a cost shown below δ: the setting transfers
    ("f-x", 0.0, "model_dependent", "fails"),
])
def test_transfer_reads_best_settings_from_validation_and_regret_from_test(best_b, regret, expect, reading):
    g = transfer_groups("f-x", best_b, regret)
    cells = one({"transfer": "f", "expect": expect, "delta": 0.01}, g)
    assert {c.model for c in cells} == {"a", "b"}
    assert {c.reading for c in cells if c.model == "b"} == {reading}
    assert {c.source for c in cells} == {0}  # every cell names the check it reads


@pytest.mark.parametrize("teacher_acc,untestable", [(0.83, True), (0.90, False)])
def test_the_teacher_gate_marks_its_students_sub_claims_untestable(teacher_acc, untestable):
    g = groups(ce=entries(BASE), ls=entries(shifted(0.01, 1)), kd=entries(shifted(0.03, 1)))
    g[("data", "big", "teacher")] = entries([teacher_acc] * 6, model="big")
    claim = {"checks": [{"a": "kd", "than": "ce", "metric": "acc", "expect": "higher", "delta": 0.005},
                        {"a": "ls", "than": "ce", "metric": "acc", "expect": "higher", "delta": 0.005}],
             "teachers": {"teacher": ["kd"]}}
    cells = evaluate_claim(claim, g, {"gap": 0.03, "against": ["ce", "ls"]})
    kd = [c for c in cells if c.check.startswith("kd")]
    assert [c.reading for c in kd] == (["untestable"] if untestable else ["holds"])
    if untestable:  # the best student trained without it is ls (0.8217 on average): the teacher is 0.83 above
        assert "+0.83 points" in kd[0].detail and "(0.8217; gate 3)" in kd[0].detail
    ls, = [c for c in cells if c.check.startswith("ls")]
    assert ls.reading == "holds"  # teacher-free sub-claims stay testable
    assert claim_verdict(cells) == "supported"


def test_verdict_rule():
    cell = lambda reading: Cell("d", "m", "c", "", reading, "")
    assert claim_verdict([cell("holds"), cell("holds"), cell("not detectable")]) == "supported"
    assert claim_verdict([cell("holds"), cell("not detectable"), cell("not detectable")]) == "not detectable here"
    assert claim_verdict([cell("holds"), cell("holds"), cell("fails")]) == "mixed"
    assert claim_verdict([cell("fails"), cell("not detectable")]) == "not supported"
    assert claim_verdict([cell("untestable"), cell("fails")]) == "not supported"
    assert claim_verdict([cell("untestable")]) == "untestable here"
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
                          "checks": [{"a": "ls", "than": "ce", "metric": "acc", "expect": "higher", "delta": 0.01,
                                      "published": "+0.5 (a paper)"},
                                     {"a": "ce", "a_metric": "ece_ts", "than": "ls", "metric": "ece",
                                      "expect": "not_higher", "delta": 0.01}],
                          "context": [{"a": "ls", "than": "ce", "metric": "nll", "expect": "lower", "delta": 0.01}]}]}
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(claims, sort_keys=False))
    result = kdlab_main("report", "--claims", path, "--out", tmp_path / "reports")
    assert result.returncode == 0, result.stderr
    md = (tmp_path / "reports" / "claims.md").read_text()
    record = json.loads((tmp_path / "reports" / "claims.json").read_text())
    verdict = record["claims"][0]["verdict"]
    assert verdict in ("supported", "not supported", "mixed", "not detectable here")
    assert f"**Verdict: {verdict} on this data**" in md and "## Regenerate every number" in md
    context = record["claims"][0]["context"]  # shown, marked in brackets, and outside the verdict
    assert len(context) == 1 and f"| context: ls lower than ce, nll |  | ({context[0]['mark']}) |" in md
    assert "| +0.5 (a paper) |" in md and "Verdict rule v2" in md and "sub-claims decided" in md
    assert len(record["claims"][0]["cells"]) == 2 and "spread ratio (test)" in md and "train acc (last epoch)" in md
    assert "| nan" not in md and "| – |" not in md.split("| dataset | model | sub-claim")[0]
    for name in ("claim1_reliability.png", "claim1_projection.png", "claim1_curves.png"):
        assert (tmp_path / "reports" / "claims" / name).is_file() and f"claims/{name}" in md


@pytest.mark.parametrize("change,fragment", [
    ({"claims": []}, "'claims' must be a non-empty list"),
    ({"nope": 1}, "unknown key 'nope'"),
    ({"claims": [{"id": 1, "title": "t", "studies": ["digits"], "checks": [{"a": "ls", "than": "ce", "metric": "acc",
      "expect": "higher", "delta": 0.01}], "context": [{"a": "ls", "than": "ce", "metric": "acc", "expect": "more",
      "delta": 0.01}]}]},
     "expect is one of"),
    ({"schedule": {"studies": ["digits"], "short": "ce"}, "claims": [{"id": 1}]}, "schedule: 'long' is missing"),
    ({"schedule": {"studies": ["digits"], "short": "ce", "long": "x", "tolerance": 3}}, "tolerance is an accuracy gap"),
    ({"claims": [{"id": 1, "title": "t", "studies": ["digits"], "checks": [{"a": "ls", "than": "ce"}]}]},
     "'metric' is missing"),
    ({"claims": [{"id": 1, "title": "t", "studies": ["digits"],
                  "checks": [{"a": "ls", "than": "ce", "metric": "acc", "expect": "better", "delta": 0.01}]}]},
     "expect is one of"),
    ({"claims": [{"id": 1, "title": "t", "studies": ["digits"],
                  "checks": [{"a": "ls", "than": "ce", "metric": "acc", "expect": "not_lower", "margin": 0.01}]}]},
     "'margin' was the v1 rule's"),
    ({"claims": [{"id": 1, "title": "t", "studies": ["digits"],
                  "checks": [{"a": "ls", "than": "ce", "metric": "acc", "expect": "lower"}]}]}, "needs its delta"),
    ({"claims": [{"id": 1, "title": "t", "studies": ["digits"],
                  "checks": [{"transfer": "ls", "expect": "transfers", "delta": -0.01}]}]}, "needs its delta"),
    ({"claims": [{"id": 1, "title": "t", "studies": ["digits"], "checks": [{"a": "ls", "than": "ce", "metric": "acc",
      "expect": "higher", "delta": 0.01, "margn": 1}]}]}, "unknown check key 'margn'"),
    ({"claims": [{"id": 1, "title": "t", "studies": ["digits"], "teachers": ["t"], "checks": [{"a": "ls", "than": "ce",
      "metric": "acc", "expect": "higher", "delta": 0.01}]}]}, "'teachers' maps each teacher group"),
    ({"teacher_gate": {"gap": 3}}, "gap is an accuracy difference"),
])
def test_bad_claims_files_are_one_line_errors(archived, tmp_path, change, fragment):
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump({"results": str(archived / "results"), **change}))
    assert_user_error(kdlab_main("report", "--claims", path, "--out", tmp_path / "reports"), fragment)
    assert not (tmp_path / "reports").exists()


def test_studies_not_run_yet_are_named_and_give_no_data(archived, tmp_path):
    claims = {"results": str(archived / "results"),
              "claims": [{"id": 4, "title": "later", "studies": ["digits", "missing"],
                          "checks": [{"a": "ls", "than": "ce", "metric": "acc", "expect": "higher", "delta": 0.01},
                                     {"a": "kd", "than": "ce", "metric": "acc", "expect": "higher", "delta": 0.01}]},
                         {"id": 5, "title": "never", "studies": ["missing"],
                          "checks": [{"a": "ls", "than": "ce", "metric": "acc", "expect": "higher", "delta": 0.01}]}]}
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(claims, sort_keys=False))
    assert kdlab_main("report", "--claims", path, "--out", tmp_path / "reports").returncode == 0
    record = json.loads((tmp_path / "reports" / "claims.json").read_text())
    assert [c["pending"] for c in record["claims"]] == [["missing"], ["missing"]]
    assert record["claims"][1]["verdict"] == "no data" and len(record["claims"][0]["cells"]) == 1
    # half the claim has no data yet (kd is in the missing study): its verdict says so
    assert record["claims"][0]["verdict"].endswith(" so far (1 of 2 sub-claims have no data yet)")
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
                          "checks": [{"a": "ls", "than": "ce", "metric": "acc", "expect": "higher", "delta": 0.01}]}]}
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
             ["evaluation"]["test"]["acc"] for s in range(3)]
    long = [json.loads((results / "long" / f"ce_x2-s{s}" / "summary.json").read_text())
            ["evaluation"]["test"]["acc"] for s in range(3)]
    gain = sum(b - a for a, b in zip(short, long)) / 3
    assert cells[8].startswith(f"{gain:+.4f}") and cells[9] == ("yes" if gain <= 0.02 else "no")


ROOT = Path(__file__).resolve().parents[1]
PROFILES = {"claims/fsdd": "fsdd_speakers", "claims/fashion_mnist": "fashion_mnist_5k",
            "claims_v2/cifar10": "cifar10_jpeg_10k", "claims_v2/fashion_mnist": "fashion_mnist_5k"}
RECIPES = {"claims": "{}", "claims_v2": "{}_v2"}  # results/claims_v2/<data>/offline ran studies/claims/offline_v2.yaml


def test_the_projects_claims_name_groups_their_studies_have_on_every_profile():
    from kdlab.analysis.claims import _groups_named, _validated
    from kdlab.experiments.study import plan_study

    path = ROOT / "studies" / "claims.yaml"
    spec = yaml.safe_load(path.read_text())
    claims = _validated(path, spec)
    assert [c["id"] for c in claims] == list(range(1, 10))
    schedule = spec["schedule"]
    for data in ("claims/fsdd", "claims/fashion_mnist"):  # the schedule check's two groups, and its study
        runs = {}
        for recipe in ("offline", "schedule"):
            assert f"{data}/{recipe}" in schedule["studies"] and f"runs/{data}/{recipe}" in spec["commands"]
            runs[recipe] = plan_study(ROOT / "studies" / "claims" / f"{recipe}.yaml",
                                      profiles=[ROOT / "studies" / "profiles" / f"{PROFILES[data]}.yaml"])[0]
        assert schedule["short"] in {r.group for r in runs["offline"]}
        assert schedule["long"] in {r.group for r in runs["schedule"]}
    planned = {}
    gate = spec["teacher_gate"]
    for claim in claims:
        for study in claim["studies"]:
            assert f"--out runs/{study}" in spec["commands"], study  # every number can be regenerated
            family, data, recipe = study.split("/")
            recipe = RECIPES[family].format(recipe)
            for profile in (PROFILES[f"{family}/{data}"], "cifar100"):  # the CIFAR-100 profile plans the same groups
                key = (recipe, profile)
                if key not in planned:
                    runs, _, _ = plan_study(ROOT / "studies" / "claims" / f"{recipe}.yaml",
                                            profiles=[ROOT / "studies" / "profiles" / f"{profile}.yaml"])
                    planned[key] = {run.group for run in runs}
                groups = planned[key]
                named = {g for check in claim["checks"] for g in _groups_named(check)}
                assert named <= groups, (claim["id"], study, named - groups)
                assert set(claim["groups"]) & groups, (claim["id"], study)
                assert set(claim["teachers"]) <= groups
                for teacher, students in claim["teachers"].items():  # a gated student is never a gate reference
                    assert not set(students) & set(gate["against"]), (claim["id"], teacher)
                for check in claim["checks"]:
                    assert 0 < check["delta"] < 1 and check.get("published") is not None, (claim["id"], check)
        unions = [set().union(*(planned[(RECIPES[s.split("/")[0]].format(s.split("/")[2]),
                                         PROFILES["/".join(s.split("/")[:2])])]
                                for s in claim["studies"] if s.split("/")[1] == data))
                  for data in {study.split("/")[1] for study in claim["studies"]}]  # a family may come from a sibling
        for check in [*claim["checks"], *claim["context"]]:  # study; each has two settings on some dataset
            if "transfer" in check:
                assert any(sum(g.startswith(check["transfer"] + "-") for g in union) >= 2 for union in unions)


def test_provenance_names_every_machine_with_its_run_count():
    from kdlab.analysis.runs import provenance

    a = {"machine": "Intel Xeon, 2 cores", "torch_version": "2.14.1", "precision": "bf16"}
    b = {"machine": "AMD EPYC, 2 cores", "torch_version": "2.13.0", "precision": "bf16"}
    assert provenance([a, b, b]) == ("AMD EPYC, 2 cores with torch 2.13.0, precision bf16 (2 runs); "
                                     "Intel Xeon, 2 cores with torch 2.14.1, precision bf16 (1 run)")
    assert provenance([]) == "?"
