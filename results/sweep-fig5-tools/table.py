"""The README's table for the Fig. 5/9/10 grid: the paper's final gain (read off its figures; paper_values.csv) beside
ours, per (e, η): the median [IQR] over seeds of the seeded sweep, the share of seeds worse than GD, and the gain
with the authors' draws (draw="paper", their seed 118, one run). Run from the repository root:

    python results/sweep-fig5-tools/table.py results/sweep-fig5 results/sweep-fig5-official
"""

import sys
from pathlib import Path

import pandas as pd

from ntkcheck.apps.sweep import load_sweep
from ntkcheck.report.sweep import summary_table, value


def main(seeded: str, official: str) -> None:
    paper = pd.read_csv(Path(__file__).with_name("paper_values.csv"))
    ours = summary_table(load_sweep(seeded).cells, ["e", "lr"])
    theirs = load_sweep(official).cells.set_index(["e", "lr"])
    print("| e | η | paper (figure) | ours, median [IQR] over seeds | worse than GD | ours, authors' draws (seed 118) |")
    print("|---|---|---|---|---|---|")
    for r in ours.sort_values(["e", "lr"], ascending=[True, False]).to_dict("records"):
        hit = paper[(paper.e == r["e"]) & (paper.lr.round(12) == round(r["lr"], 12))]
        published = f"{hit.gain.iloc[0]:.3f} ({hit.figure.iloc[0]})" if len(hit) else "—"
        compat = theirs.loc[(r["e"], r["lr"])]
        compat = f"{compat['gain_final']:.3f}" if compat["status"] == "completed" else compat["status"]
        print(f"| {value(r['e'])} | {value(r['lr'])} | {published} | {value(r['median'])} [{value(r['q25'])}, "
              f"{value(r['q75'])}] | {r['worse']}/{r['seeds']} | {compat} |")


if __name__ == "__main__":
    main(*sys.argv[1:3])
