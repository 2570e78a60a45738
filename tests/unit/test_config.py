"""The rules file is validated on load; a bad value stops with a message that names the key."""

from decimal import Decimal
from itertools import product

import pytest

from ledgerflow.core.config import DEFAULT_RULES_PATH, RulesConfigError, load_rules, main
from ledgerflow.core.rules import risk_score

VALID = DEFAULT_RULES_PATH.read_text()


def test_the_shipped_rules_are_the_original_systems():
    rules = load_rules()
    assert [(str(t.over), t.points) for t in rules.risk.amount_tiers] == [("10000.00", 30), ("5000.00", 15)]
    assert rules.risk.customer_risk_points == {"HIGH": 40, "MEDIUM": 20, "LOW": 0}
    assert (rules.clearance.manual_review_above_score, rules.clearance.conditions_from_score,
            str(rules.clearance.manual_review_above_amount)) == (70, 40, "100000.00")


@pytest.mark.parametrize(("old", "new", "names"), [
    ("max_score: 100", "max_score: lots", "$.risk.max_score"),
    ("max_score: 100", "max_score: 101", "$.risk.max_score"),
    ("points: 30", "points: -1", "$.risk.amount_tiers[0].points"),
    ("HIGH: 40", "HIHG: 40", "$.risk.customer_risk_points"),
    ("    LOW: 0\n", "", "risk.customer_risk_points: missing LOW"),
    ('over: "5000.00"', 'over: "5000.001"', "risk.amount_tiers[1].over"),
    ('over: "5000.00"', 'over: "20000.00"', "risk.amount_tiers: thresholds must be distinct and listed highest first"),
    ("points: 15", "points: 35", "risk.amount_tiers: a higher threshold must not add fewer points"),
    ("conditions_from_score: 40", "conditions_from_score: 80", "clearance.conditions_from_score"),
    ('manual_review_above_amount: "100000.00"', 'manual_review_above_amount: "-1.00"',
     "clearance.manual_review_above_amount"),
    ('over: "5000.00"', "over: 5000.10", 'must be a quoted decimal string such as "5000.00", got 5000.1 - at '
                                          "`$.risk.amount_tiers[1].over`"),
    ('manual_review_above_amount: "100000.00"', "manual_review_above_amount: 100000",
     "must be a quoted decimal string such as \"5000.00\", got 100000 - at `$.clearance.manual_review_above_amount`"),
    ('over: "5000.00"', 'over: "lots"', "got 'lots' - at `$.risk.amount_tiers[1].over`"),
    ('over: "5000.00"', 'over: 1e4', "got '1e4' - at `$.risk.amount_tiers[1].over`"),  # YAML 1.1 leaves it a string
    ('over: "5000.00"', 'over: "5_000"', "got '5_000' - at `$.risk.amount_tiers[1].over`"),
    ("clearance:\n", "clearance:\n  typo: 1\n", "unknown field `typo` - at `$.clearance`"),
    ("  manual_review_above_score: 70", "  # gone", "missing required field `manual_review_above_score`"),
])
def test_a_bad_value_names_its_key(tmp_path, old, new, names):
    assert old in VALID
    path = tmp_path / "rules.yaml"
    path.write_text(VALID.replace(old, new, 1))

    with pytest.raises(RulesConfigError) as error:
        load_rules(path)

    assert names in str(error.value)
    assert str(path) in str(error.value)


def test_the_check_command_prints_the_error_without_a_traceback(tmp_path, capsys):
    path = tmp_path / "rules.yaml"
    path.write_text(VALID.replace("max_score: 100", "max_score: lots"))

    assert main([str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "$.risk.max_score" in err and "Traceback" not in err


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(RulesConfigError, match="cannot read the rules file"):
        load_rules(tmp_path / "nope.yaml")


@pytest.mark.parametrize("changes", [
    {},
    {"points: 30": "points: 60", "max_score: 100": "max_score: 90"},  # capped
    {"HIGH: 40": "HIGH: 10"},  # MEDIUM is then the riskiest customer's
])
def test_the_highest_score_is_the_highest_any_transfer_gets(tmp_path, changes):
    rules = load_rules(write_rules(tmp_path, changes)).risk
    amounts = [Decimal("0.01"), *(tier.over + Decimal("0.01") for tier in rules.amount_tiers)]

    scores = {risk_score(amount, a, b, rules) for amount, a, b in product(amounts, *[["LOW", "MEDIUM", "HIGH"]] * 2)}

    assert rules.highest_score() == max(scores)


def write_rules(tmp_path, changes: dict[str, str]):
    text = VALID
    for old, new in changes.items():
        assert old in text
        text = text.replace(old, new, 1)
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


def test_the_check_command_says_which_thresholds_no_score_reaches(tmp_path, capsys):
    assert main([str(DEFAULT_RULES_PATH)]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "note: the highest risk score these rules give is 70, so no score is above "
        "clearance.manual_review_above_score (70): only amounts above 100000.00 go to manual review"]

    assert main([str(write_rules(tmp_path, {"manual_review_above_score: 70": "manual_review_above_score: 69"}))]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == []

    assert main([str(write_rules(tmp_path, {"points: 30": "points: 15", "HIGH: 40": "HIGH: 20"}))]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "note: the highest risk score these rules give is 35, so no score is above "
        "clearance.manual_review_above_score (70): only amounts above 100000.00 go to manual review",
        "note: the highest risk score these rules give is 35, below clearance.conditions_from_score (40): "
        "nothing is cleared with conditions"]
