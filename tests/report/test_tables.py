"""Pivot correctness and best-value marking against hand-made CSVs; escaping in tables."""
from __future__ import annotations

import io
import math

import pandas as pd
import pytest

from robustkit.report import tables
from robustkit.report.data import fmt_pct, fmt_seconds, read_results

# Models b and a: fgsm at two eps and two seeds (means: a 0.8/0.5, b 0.6/0.5), pgd at one eps,
# a failed row; c with one seed. Rows in CSV order b-before-a to check that order is kept.
CSV = """dataset,model,family,defense,attack,eps,seed,status,error,clean_accuracy,robust_accuracy
digits,b,mlp,none,fgsm,0.1,0,ok,,0.90,0.70
digits,b,mlp,none,fgsm,0.1,1,ok,,0.90,0.50
digits,b,mlp,none,fgsm,0.3,0,ok,,0.90,0.50
digits,b,mlp,none,fgsm,0.3,1,ok,,0.90,0.50
digits,a,cnn,none,fgsm,0.1,0,ok,,0.98,0.80
digits,a,cnn,none,fgsm,0.1,1,ok,,0.96,0.80
digits,a,cnn,none,fgsm,0.3,0,ok,,0.98,0.50
digits,a,cnn,none,fgsm,0.3,1,ok,,0.96,0.50
digits,a,cnn,none,pgd,0.3,0,ok,,0.98,0.10
digits,b,mlp,none,pgd,0.3,0,error,RuntimeError: boom,,
digits,c,svm,none,fgsm,0.1,0,ok,,0.80,0.30
digits,c,svm,none,fgsm,0.3,0,ok,,0.80,0.20
"""


def _ok(text: str) -> pd.DataFrame:
    df = read_results(io.StringIO(text))
    return df[df["status"] == "ok"].reset_index(drop=True)


def test_summary_pivot_means_over_seeds_and_keeps_order() -> None:
    frame = tables.summary_frame(_ok(CSV))
    assert list(frame.index) == ["b", "a", "c"]
    assert list(frame.columns) == [("clean", ""), ("fgsm", 0.1), ("fgsm", 0.3), ("pgd", 0.3)]
    assert frame.at["a", ("fgsm", 0.1)] == pytest.approx(0.8)
    assert frame.at["b", ("fgsm", 0.1)] == pytest.approx(0.6)
    assert frame.at["a", ("clean", "")] == pytest.approx(0.97)
    assert math.isnan(frame.at["b", ("pgd", 0.3)])  # the failed cell is not a zero


def test_best_mask_marks_column_maximum_and_ties() -> None:
    frame = tables.summary_frame(_ok(CSV))
    mask = tables.best_mask(frame)
    assert mask.at["a", ("fgsm", 0.1)] and not mask.at["b", ("fgsm", 0.1)]
    assert mask.at["a", ("fgsm", 0.3)] and mask.at["b", ("fgsm", 0.3)]  # tie: both best
    assert not mask.at["c", ("fgsm", 0.3)]
    assert not mask[("pgd", 0.3)].any()  # one value only: nothing to compare with
    assert mask.at["a", ("clean", "")] and not mask.at["b", ("clean", "")]


def test_best_mask_never_marks_a_single_row() -> None:
    frame = tables.summary_frame(_ok(CSV)[lambda d: d["model"] == "a"])
    assert not tables.best_mask(frame).to_numpy().any()


def test_summary_html_marks_best_cells_and_formats_percent() -> None:
    html = tables.frame_html(tables.summary_frame(_ok(CSV)), caption="c")
    assert html.count('class="best"') == 4  # a@0.1, a@0.3, b@0.3, a clean
    assert ">80.0</td>" in html and ">97.0</td>" in html
    assert html.index(">b</th>") < html.index(">a</th>")


DEFENSE_CSV = """dataset,model,family,defense,defense_method,attack,eps,seed,status,adaptive,clean_accuracy,robust_accuracy,system_accuracy,clean_system_accuracy,detection_auc,train_seconds,train_ratio,masking_flags
digits,cnn,cnn,none,none,pgd,0.1,0,ok,false,0.98,0.20,,,,,,
digits,cnn,cnn,none,none,pgd,0.2,0,ok,false,0.98,0.05,,,,,,large_eps: PGD accuracy 0.05
digits,cnn,cnn,adv,pgd,pgd,0.1,0,ok,false,0.97,0.80,,,,30,3.0,iterative_not_weaker: a; noise: b
digits,cnn,cnn,det,detector,pgd,0.1,0,ok,false,0.98,0.20,0.90,0.95,0.99,10,1.2,
digits,cnn,cnn,det,detector,pgd,0.1,0,ok,true,0.98,0.10,0.30,0.95,0.60,10,1.2,
"""


def test_defense_frame_baseline_adaptive_and_system_accuracy() -> None:
    frame = tables.defense_frame(_ok(DEFENSE_CSV))
    assert list(frame.index) == ["cnn", "cnn + adv", "cnn + det"]
    cols = list(frame.columns)
    # The baseline's eps=0.2 row is not shown: no defense was scored there.
    assert ("pgd", 0.2) not in cols
    assert frame.at["cnn + det", ("pgd", 0.1)] == pytest.approx(0.90)  # system accuracy
    assert frame.at["cnn + adv", ("pgd", 0.1)] == pytest.approx(0.80)  # robust accuracy
    assert frame.at["cnn + det", ("pgd (adaptive)", 0.1)] == pytest.approx(0.30)
    assert frame.at["cnn + det", ("mean AUC", "")] == pytest.approx(0.99)
    assert frame.at["cnn + det", ("mean AUC (adaptive)", "")] == pytest.approx(0.60)
    assert frame.at["cnn + adv", ("train ratio", "")] == pytest.approx(3.0)
    assert frame.at["cnn + adv", ("flags", "")] == "eps=0.1: iterative_not_weaker: a; eps=0.1: noise: b"
    assert frame.at["cnn + det", ("clean", "")] == pytest.approx(0.95)  # clean system accuracy
    assert frame.at["cnn + det", ("flags", "")] == ""
    assert pd.isna(frame.at["cnn", ("flags", "")])  # a baseline is not scored as a defense


def test_defense_html_shows_flags_and_adaptive_header() -> None:
    html = tables.frame_html(tables.defense_frame(_ok(DEFENSE_CSV)), caption="d")
    assert "&#9888; eps=0.1: iterative_not_weaker: a" in html
    assert 'class="grp adaptive"' in html and "0.990" in html and "3&times;" in html


def test_no_defense_rows_give_no_defense_table() -> None:
    assert tables.defense_frame(_ok(CSV)).empty
    assert tables.frame_html(tables.defense_frame(_ok(CSV)), caption="x") == ""


def test_tables_escape_text_from_the_csv() -> None:
    evil = CSV.replace(",a,", ',"<b onmouseover=x>a&",').replace(
        "RuntimeError: boom", "<script>alert(1)</script>")
    df = read_results(io.StringIO(evil))
    html = tables.frame_html(tables.summary_frame(df[df["status"] == "ok"]), caption="c")
    assert "<b onmouseover" not in html and "&lt;b onmouseover=x&gt;a&amp;" in html
    failures = tables.failures_html(df[df["status"] != "ok"])
    assert "<script>" not in failures and "&lt;script&gt;alert(1)&lt;/script&gt;" in failures


def test_formatters() -> None:
    assert fmt_pct(0.9234) == "92.3%" and fmt_pct(float("nan")) == "–"
    assert fmt_seconds(3.2) == "3.2 s" and fmt_seconds(125) == "2 min 5 s"
    assert fmt_seconds(4000) == "1 h 7 min"


def test_wide_tables_are_cut_between_attacks() -> None:
    rows = [{"dataset": "d", "model": m, "defense": "none", "attack": a, "eps": e / 10,
             "seed": 0, "status": "ok", "clean_accuracy": 0.9, "robust_accuracy": 0.5}
            for m in ("a", "b") for a in ("fgsm", "pgd", "noise") for e in range(10)]
    df = read_results(io.StringIO(pd.DataFrame(rows).to_csv(index=False)))
    html = tables.frame_html(tables.summary_frame(df), caption="wide", max_width=1100)
    assert html.count("<table") == 2 and "(continued)" in html
    first, second = html.split("(continued)")
    assert ">pgd</th>" in first and ">noise</th>" not in first and ">noise</th>" in second
    assert second.count(">a</th>") == 1  # the model column is repeated


def test_best_mask_skips_columns_where_all_models_tie() -> None:
    frame = pd.DataFrame({("pgd", 1.0): [0.0, 0.0], ("pgd", 0.1): [0.2, 0.3]}, index=["a", "b"])
    mask = tables.best_mask(frame)
    assert not mask[("pgd", 1.0)].any() and mask.at["b", ("pgd", 0.1)]


def test_attack_norms_from_params_then_registry() -> None:
    from robustkit.report.data import attack_norms

    text = ("dataset,model,defense,attack,attack_method,attack_params,eps,seed,status,robust_accuracy\n"
            'd,a,none,df-inf,deepfool,"{""norm"": ""linf""}",0.1,0,ok,0.5\n'
            "d,a,none,deepfool,deepfool,{},0.5,0,ok,0.5\n"
            "d,a,none,mine,not-an-attack,{},0.5,0,ok,0.5\n")
    ok = _ok(text)
    assert attack_norms(ok) == {"df-inf": "L\u221e", "deepfool": "L2", "mine": ""}
    html = tables.frame_html(tables.summary_frame(ok), caption="c", norms=attack_norms(ok))
    assert '>deepfool <span class="norm">L2</span></th>' in html


def test_flags_html_lists_failed_checks_per_model() -> None:
    ok = _ok(DEFENSE_CSV)
    html = tables.flags_html(ok[ok["undefended"]])
    assert "possible gradient masking" in html
    assert "<li><b>cnn</b>, pgd eps=0.2: large_eps: PGD accuracy 0.05</li>" in html
    assert tables.flags_html(_ok(CSV)) == ""


def test_failures_are_grouped_per_cell_and_error() -> None:
    text = ("dataset,model,defense,attack,eps,seed,status,error,adaptive\n"
            "d,m,det,pgd,0.1,0,error,boom,false\nd,m,det,pgd,0.3,0,error,boom,false\n"
            "d,m,det,pgd,0.1,0,error,boom,true\n")
    html = tables.failures_html(read_results(io.StringIO(text)))
    assert html.count("<tr>") == 3  # header + two lines
    assert "<td>pgd</td><td>0.1, 0.3</td>" in html and "<td>pgd (adaptive)</td><td>0.1</td>" in html
    assert "3 result row(s) failed" in html


def test_rows_follow_the_spec_order_not_completion_order() -> None:
    from robustkit.report.data import spec_order

    spec = ('[[models]]\nname = "zeta"\nfamily = "mlp"\n[[models]]\nname = "alpha"\nfamily = "cnn"\n'
            '[[attacks]]\nname = "pgd"\n[[attacks]]\nname = "fgsm"\n')
    text = ("dataset,model,defense,attack,eps,seed,status,robust_accuracy\n"
            "d,alpha,none,fgsm,0.3,0,ok,0.1\nd,alpha,none,pgd,0.1,0,ok,0.2\n"
            "d,zeta,none,fgsm,0.1,0,ok,0.3\nd,other,none,fgsm,0.1,0,ok,0.3\n")
    import tomllib

    df = spec_order(read_results(io.StringIO(text)), [tomllib.loads(spec)])
    assert list(zip(df["model"], df["attack"])) == [
        ("zeta", "fgsm"), ("alpha", "pgd"), ("alpha", "fgsm"), ("other", "fgsm")]
    assert list(tables.summary_frame(df).index) == ["zeta", "alpha", "other"]


def test_detection_frame_auc_and_tpr_per_eps_with_adaptive_rows() -> None:
    frame = tables.detection_frame(_ok(DEFENSE_CSV))
    assert list(frame.index) == ["cnn + det · pgd", "cnn + det · pgd (adaptive)"]
    assert frame.at["cnn + det · pgd", ("ROC AUC", 0.1)] == pytest.approx(0.99)
    assert frame.at["cnn + det · pgd (adaptive)", ("ROC AUC", 0.1)] == pytest.approx(0.60)
    assert tables.detection_frame(_ok(CSV)).empty
