"""The report's answer first: headline attack per cell, ranking order, defended systems,
no-hole axes, outranked non-adaptive cells, honoured gallery counts."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from robustkit.report import gallery, ranking, tables
from robustkit.report.data import read_results, run_axis

HEAD = ("dataset,model,family,defense,defense_method,attack,attack_method,adaptive,eps,seed,"
        "status,error,clean_accuracy,robust_accuracy,system_accuracy,clean_system_accuracy\n")


def _ok(lines: list[str]) -> pd.DataFrame:
    df = read_results(io.StringIO(HEAD + "\n".join(lines) + "\n"))
    return df[df["status"] == "ok"].reset_index(drop=True)


def _row(model: str, attack: str, eps: float, robust: float, *, clean: float = 0.9,
         defense: str = "none", adaptive: bool = False, method: str | None = None,
         system: str = "", clean_system: str = "", status: str = "ok") -> str:
    return (f"digits,{model},mlp,{defense},{defense},{attack},{method or attack},{adaptive},"
            f"{eps},0,{status},,{clean},{robust},{system},{clean_system}")


# a: autoattack is the strongest; b: pgd beats a weak autoattack run; c: a tie at 0.1.
SYNTH = [
    _row("a", "fgsm", 0.1, 0.6), _row("a", "pgd", 0.1, 0.5), _row("a", "autoattack", 0.1, 0.4),
    _row("a", "fgsm", 0.3, 0.3), _row("a", "pgd", 0.3, 0.2), _row("a", "autoattack", 0.3, 0.1),
    _row("b", "pgd", 0.1, 0.3), _row("b", "autoattack", 0.1, 0.35),
    _row("b", "pgd", 0.3, 0.05), _row("b", "autoattack", 0.3, 0.05),
    _row("c", "pgd", 0.1, 0.7, clean=0.95), _row("c", "autoattack", 0.1, 0.7, clean=0.95),
    _row("c", "pgd", 0.3, 0.4, clean=0.95), _row("c", "autoattack", 0.3, 0.35, clean=0.95),
    # Not headline attacks: an L2 attack at the same numbers, universal and noise.
    _row("a", "deepfool", 0.1, 0.0), _row("b", "uap", 0.3, 0.0), _row("c", "noise", 0.3, 0.0),
]


def test_headline_is_the_lowest_attack_with_autoattack_preferred_on_ties() -> None:
    r = ranking.ranking(_ok(SYNTH))
    assert r is not None and r.norm == "L\u221e"
    assert list(r.values.columns) == [0.1, 0.3]
    assert r.values.at["a", 0.1] == pytest.approx(0.4) and r.attacks.at["a", 0.1] == "autoattack"
    assert r.values.at["b", 0.1] == pytest.approx(0.3) and r.attacks.at["b", 0.1] == "pgd"
    assert r.attacks.at["b", 0.3] == "autoattack"  # tie: the preferred attack names it
    assert r.attacks.at["c", 0.1] == "autoattack"
    # Mean over eps: c 0.525, a 0.25, b 0.175.
    assert list(r.values.index) == ["c", "a", "b"]
    assert r.clean["c"] == pytest.approx(0.95)


def test_preference_list_order_and_non_headline_attacks() -> None:
    prefs = ranking.HEADLINE_ATTACKS
    assert prefs.index("autoattack") < prefs.index("apgd") < prefs.index("pgd") < prefs.index("fgsm")
    for name in ("deepfool", "uap", "uap_sgd", "noise", "patch"):
        assert name not in prefs
    rows, norm = ranking.headline_rows(_ok(SYNTH))
    assert set(rows["attack"]) == {"fgsm", "pgd", "autoattack"} and norm == "L\u221e"


def test_display_names_match_by_attack_method() -> None:
    lines = [_row("a", "aa-standard", 0.1, 0.2, method="autoattack"), _row("a", "pgd", 0.1, 0.2),
             _row("b", "pgd", 0.1, 0.5)]
    r = ranking.ranking(_ok(lines))
    assert r is not None and r.attacks.at["a", 0.1] == "aa-standard"


DEFENDED = [
    _row("cnn", "pgd", 0.0, 0.98, clean=0.98), _row("cnn", "pgd", 0.3, 0.0, clean=0.98),
    # A detector: non-adaptive PGD attacks the bare classifier and is mostly rejected; at
    # eps 0 its system accuracy counted rejected clean inputs as defended (0.98 vs 0.93).
    _row("cnn", "pgd", 0.0, 0.98, clean=0.98, defense="detector", system="0.98", clean_system="0.93"),
    _row("cnn", "pgd", 0.3, 0.0, clean=0.98, defense="detector", system="0.99", clean_system="0.93"),
    _row("cnn", "pgd", 0.3, 0.0, clean=0.98, defense="detector", adaptive=True, system="0.12",
         clean_system="0.93"),
    _row("cnn", "fgsm", 0.3, 0.0, clean=0.98, defense="detector", system="0.97", clean_system="0.93"),
    _row("cnn", "pgd", 0.0, 0.97, clean=0.97, defense="pgd-at"),
    _row("cnn", "pgd", 0.3, 0.70, clean=0.97, defense="pgd-at"),
]


def test_defended_systems_rank_by_their_adaptive_numbers() -> None:
    r = ranking.ranking(_ok(DEFENDED))
    assert r is not None
    assert list(r.values.index) == ["cnn + pgd-at", "cnn + detector", "cnn"]
    assert r.values.at["cnn + detector", 0.3] == pytest.approx(0.12)
    assert r.attacks.at["cnn + detector", 0.3] == "pgd (adaptive)"
    assert r.clean["cnn + detector"] == pytest.approx(0.93)  # rejected clean inputs are errors
    assert r.defended == {"cnn + detector", "cnn + pgd-at"}


def test_cells_without_autoattack_or_its_adaptive_form_are_marked_weak() -> None:
    lines = DEFENDED + [
        _row("cnn", "autoattack", 0.3, 0.0, clean=0.98),
        # The system's non-adaptive AutoAttack met the bare classifier: it does not count.
        _row("cnn", "autoattack", 0.3, 0.0, clean=0.98, defense="detector", system="0.95",
             clean_system="0.93")]
    r = ranking.ranking(_ok(lines))
    assert r is not None and r.weak is not None
    assert r.weak.to_dict()[0.3] == {"cnn + pgd-at": True, "cnn + detector": True, "cnn": False}
    html = ranking.ranking_html(r, caption="c")
    assert html.count("weak attack</span>") == 2
    adaptive = lines + [_row("cnn", "autoattack", 0.3, 0.05, clean=0.98, defense="detector",
                             adaptive=True, system="0.08", clean_system="0.93")]
    r2 = ranking.ranking(_ok(adaptive))
    assert r2 is not None and not bool(r2.weak.at["cnn + detector", 0.3])
    assert r2.values.at["cnn + detector", 0.3] == pytest.approx(0.08)
    assert r2.attacks.at["cnn + detector", 0.3] == "autoattack (adaptive)"


def test_defense_table_eps0_equals_clean_and_non_adaptive_never_starred() -> None:
    frame = tables.defense_frame(_ok(DEFENDED))
    det = "cnn + detector"
    assert frame.at[det, ("pgd", 0.0)] == pytest.approx(frame.at[det, ("clean", "")])
    assert frame.at[det, ("clean", "")] == pytest.approx(0.93)
    # Every non-adaptive number of a system with adaptive scores, FGSM too (eps 0 is clean).
    assert frame.attrs["no_best"] == {(det, ("pgd", 0.3)), (det, ("fgsm", 0.3))}
    html = tables.frame_html(frame, caption="c")
    cell = html.split(f"{det}</th>")[1].split("</tr>")[0]
    assert '<td data-col="pgd|0.3" class="outranked"' in cell
    # 0.99 (the detector's non-adaptive number) would win the column; pgd-at's 0.70 does.
    pgd_at = html.split("cnn + pgd-at</th>")[1].split("</tr>")[0]
    assert '<td data-col="pgd|0.3" class="best"' in pgd_at


def test_run_axis_drops_cells_only_some_models_ran_and_keeps_failures() -> None:
    lines = [_row(m, "pgd", e, 0.5) for m in ("a", "b", "c") for e in (0.1, 0.3)]
    lines += [_row("a", "pgd", 1.0, 0.0), _row("b", "pgd", 1.0, 0.0),  # c did not run eps 1
              _row("a", "fgsm", 0.5, 0.2), _row("b", "fgsm", 0.5, float("nan"), status="error")]
    df = read_results(io.StringIO(HEAD + "\n".join(lines) + "\n"))
    ok, failed = df[df["status"] == "ok"], df[df["status"] == "error"]
    kept = run_axis(ok, failed)
    assert sorted(set(kept.loc[kept["attack"] == "pgd", "eps"])) == [0.1, 0.3]
    assert list(kept.loc[kept["attack"] == "fgsm", "eps"]) == [0.5]  # b failed there: kept
    frame = tables.summary_frame(ok, failed)
    assert ("pgd", 1.0) not in frame.columns and ("fgsm", 0.5) in frame.columns
    assert pd.isna(frame.at["b", ("fgsm", 0.5)])


def test_fake_run_ranks_every_model_with_autoattack_absent(built_report) -> None:
    html = built_report.read_text(encoding="utf-8")
    table = html.split('id="ranking-table"')[1].split("</table>")[0]
    assert table.count("<tr><td class='rank'>") == 13  # 8 models + 5 defended
    assert "pgd (adaptive)" in table and "autoattack" not in table
    assert table.count("weak attack</span>") > 0  # no AutoAttack ran: every cell says so


def test_uap_gallery_one_attack_and_xi_per_dataset_and_count_honoured(tmp_path, run_factory) -> None:
    from robustkit.report import artifacts

    out = run_factory(tmp_path / "run")
    arts = artifacts.scan(out).of("uap")
    picked = gallery.pick_uaps(arts, [], None)
    assert len({(a.meta["attack"], a.meta["eps"]) for a in picked}) == 1
    assert len(picked) == 8
    html = gallery.uap_gallery(arts, [], None, limit=4)
    assert html.count("alt=\"clean input") == 4
    assert html.count("plus v\"") == 8 * 4
    assert gallery.uap_gallery(arts, [], None).count("alt=\"clean input") == 6  # all saved
    df = gallery.deepfool_gallery(artifacts.scan(out).of("deepfool"), [], limit=2)
    assert df.count('class="df-row"') == 2


def test_meta_durations_have_units_and_header_counts_the_rows_shown(tmp_path) -> None:
    from robustkit.report import meta
    from robustkit.report.data import RunData

    html = meta.kv_table({"setup": 0.010358485000324436, "sweep": 130.6}, seconds=True)
    assert "0.01 s" in html and "2 min 11 s" in html and "0.0103584" not in html
    assert "0.01036<" in meta.kv_table({"ratio": 0.010358485000324436})
    ok = _ok(DEFENDED)
    facts = dict(meta.header_facts(RunData(tmp_path, ok, ok.iloc[0:0], {})))
    assert facts["models"] == "1 + 2 defended"


def test_autoattack_rows_become_the_headline_of_a_built_report(tmp_path, run_factory) -> None:
    from robustkit import report

    out = run_factory(tmp_path / "run", artifacts=False)
    df = pd.read_csv(out / "results.csv")
    pgd = df[(df["attack"] == "pgd") & (df["defense"] == "none") & (df["status"] == "ok")]
    auto = pgd.assign(attack="autoattack", attack_method="autoattack",
                      robust_accuracy=pgd["robust_accuracy"] * 0.9)
    pd.concat([df, auto]).to_csv(out / "results.csv", index=False)
    html = report.build(out).read_text(encoding="utf-8")
    table = html.split('id="ranking-table"')[1].split("</table>")[0]
    rows = {r.split("</th>")[0].split("<")[0]: r for r in table.split("<th scope='row'>")[1:]}
    radii = table.count("<th>0.")  # the shared axis: 0.1 and 0.3
    assert radii == 2
    assert rows["linear"].count(">autoattack<") == radii and ">pgd<" not in rows["linear"]
    assert rows["cnn + pgd "].count(">pgd<") == radii  # no autoattack rows for it
    assert rows["cnn + detector "].count(">pgd (adaptive)<") == radii


def test_deepfool_tile_of_an_input_the_model_already_misclassifies(tmp_path) -> None:
    from robustkit.report.artifacts import Artifact

    x = np.random.default_rng(0).random((2, 1, 8, 8))
    delta = np.zeros_like(x)
    delta[1, 0, 3, 3] = 0.2
    art = Artifact("deepfool", {"dataset": "digits", "model": "cnn", "defense": "none",
                                "seed": "0"},
                   {"x": x, "delta": delta, "y": np.array([6, 3]),
                    "y_clean": np.array([5, 3]), "y_adv": np.array([5, 8])}, tmp_path)
    html = gallery.deepfool_gallery([art], [])
    first, second = html.split('class="df-row"')[1:]
    assert "misclassified, no perturbation needed" in first and "lbl good" not in first
    assert "no perturbation needed" not in second and "lbl bad" in second
