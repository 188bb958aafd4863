"""The smallest effect each comparison of reports/claims.md detects with 80% power (issue 24's power check), from the
committed archives under results/claims/: python studies/tools/claims_power.py (from the project root)."""
from pathlib import Path

import numpy as np
import yaml

from kdlab.analysis.report import load_groups
from kdlab.analysis.verdicts import metric_value
from kdlab.analysis.decisions import minimum_detectable_effect
spec = yaml.safe_load(open("studies/claims.yaml"))
results = Path("results/claims")
cache = {}
rows = []
for claim in spec["claims"]:
    for check in claim.get("checks", []):
        if "than" not in check or check.get("kind") == "transfer":
            continue
        for study in claim["studies"]:
            if study not in cache:
                cache[study] = load_groups([results / study], spreads=False)[1]
            groups = cache[study]
            for (ds, model, g), members in groups.items():
                if g != check["a"]:
                    continue
                base = groups.get((ds, model, check["than"]))
                if not base:
                    continue
                by = {e.seed: e for e in base}
                metric = check.get("metric", "acc")
                d = [metric_value(e, metric) - metric_value(by[e.seed], check.get("metric_than", metric))
                     for e in members if e.seed in by]
                d = np.array(d)
                if len(d) < 2 or not np.all(np.isfinite(d)):
                    continue
                rows.append((claim["id"], study, model, f"{check['a']} vs {check['than']} ({metric})", len(d),
                             float(d.mean()), minimum_detectable_effect(float(d.std(ddof=1)), len(d))))
for r in rows:
    print(f"claim {r[0]} | {r[1]} | {r[2]} | {r[3]} | n={r[4]} | mean {r[5]:+.4f} | MDE {r[6]:.4f}")
acc = [r for r in rows if r[3].endswith("(acc)")]
for ds in ("fsdd", "fashion_mnist"):
    m = [r[6] for r in acc if r[1].startswith(ds)]
    print(ds, "accuracy MDE range", round(min(m), 4), round(max(m), 4), "median", round(float(np.median(m)), 4), len(m))
