"""The dry-run cost estimate counts AutoAttack by its version and budget, not as 10 steps."""
from robustkit.sweep.estimate import attack_steps, autoattack_steps


class _Attack:
    def __init__(self, name, params):
        self.attack, self.params = name, params


class _Cell:
    def __init__(self, name, params):
        self.attack = _Attack(name, params)


def test_autoattack_standard_costs_far_more_than_a_pgd_run():
    standard = attack_steps(_Cell("autoattack", {}))
    assert standard > 100 * attack_steps(_Cell("pgd", {}))  # 10 steps by default
    assert standard == autoattack_steps({"version": "standard"})


def test_versions_and_budget_order_the_estimate():
    full = autoattack_steps({})
    assert autoattack_steps({"version": "lean"}) < full
    assert autoattack_steps({"version": "fast"}) < full
    assert autoattack_steps({"steps": 25, "queries": 1000}) < full / 3
    assert autoattack_steps({"targets": 1}) < autoattack_steps({"targets": 9})
