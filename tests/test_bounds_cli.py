"""`ntkcheck bounds`: the table of thresholds for a configuration; bad input exits 2 with one line."""

import pytest

from ntkcheck.cli import main

SMALL = ["--N", "2", "--d", "6", "--b", "4", "--width", "12"]


def run(capsys, *args):
    code = main(["bounds", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_table_lists_every_condition_the_configuration_decides(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    code, out, err = run(capsys, "--T", "100", "--L", "3", "--e", "100", "--lr", "1e-7", "--width", "5120")
    assert code == 0, err
    for key in ("gd.rate", "gd.rate_s", "step.descent", "width.nd", "lemma5_1.e", "lemma5_2.e", "lemma5_3.e",
                "lemma5_4.e", "eq14.eta_apriori", "corC1.e_eta"):
        assert key in out
    for column in ("condition", "measured", "threshold", "verdict"):  # the column order of every verdict table
        assert column in out
    assert "F_GD(X_T) ≤ β‖X_0 − X*‖²/(2T)" in out and "GD, standard" in out  # formula and source beneath the key
    assert "1428 (C=1)" in out and "1e+04 (C=1)" in out  # T^{306/194} and T^{4/2} at T = 100
    assert "undecided" in out and "C = 1" in err  # the unknown constant is shown, not hidden
    assert "stated" in out and "scaling" in out and "derived" in out and "NOTE" in out


def test_the_constant_decides_the_scaling_laws(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    code, out, _ = run(capsys, *SMALL, "--T", "10", "--e", "200", "--C", "1", "--no-data")
    assert code == 0
    lemma = {line.split()[1]: line for line in out.splitlines() if "lemma5_" in line}
    assert "holds" in lemma["lemma5_1.e"] and "holds" in lemma["lemma5_3.e"]  # 3.16, 100 ≤ 200
    assert "FAILS" in lemma["lemma5_2.e"] and "FAILS" in lemma["lemma5_4.e"]  # 373, 548 > 200
    assert "gd.rate" not in out  # needs the data


def test_lemma_5_2_is_undefined_when_its_denominator_is_not_positive(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    code, out, err = run(capsys, *SMALL, "--T", "3", "--L", "3", "--no-data")
    assert code == 0
    assert "TL − T − 4L + 6 = 0 ≤ 0" in err


@pytest.mark.parametrize(("args", "param"), [(["--T", "0"], "--T"), (["--L", "1"], "--L"), (["--e", "0"], "--e"),
                                             (["--lr", "-1"], "--lr"), (["--eta", "nan"], "--lr"),
                                             (["--width", "0"], "--width"), (["--C", "0"], "--C"),
                                             (["--step-scale", "2"], "--step-scale"), (["--b", "99"], "--b")])
def test_invalid_input_exits_2_with_one_line(args, param, capsys):
    code, _, err = run(capsys, *SMALL, *args)
    assert code == 2, err
    assert param in err and len(err.strip().splitlines()) == 1
