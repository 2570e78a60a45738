"""The rules configuration (include/rules.yaml): typed, validated on load, with errors that name the key.

    python -m ledgerflow.core.config include/rules.yaml    # validate a file
"""

import re
import sys
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from ledgerflow.core.money import InvalidAmount, has_at_most_two_decimals, to_money

RiskLevel = Literal["LOW", "MEDIUM", "HIGH"]
Score = Annotated[int, msgspec.Meta(ge=0, le=100)]

DEFAULT_RULES_PATH = Path(__file__).resolve().parents[3] / "include" / "rules.yaml"


class RulesConfigError(ValueError):
    """The rules file is missing, malformed or holds a value that is out of range."""


class ConfigAmount(Decimal):
    """An amount the rules file gives as a quoted decimal string. YAML reads a bare 10000.10 as a float, which
    would reach the rules through binary floating point; the decoder refuses it (`_decode_amount`)."""


_PLAIN_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")


def _decode_amount(type_: type, value: object) -> object:
    if type_ is not ConfigAmount:
        raise NotImplementedError(type_)
    # YAML leaves 1e4 and 1_0000 as strings, which Decimal would read: only plain digits are money here
    if not isinstance(value, str) or not _PLAIN_DECIMAL.fullmatch(value):
        raise ValueError(f"must be a quoted decimal string such as \"5000.00\", got {value!r}")
    return ConfigAmount(value)


def _require_money(key: str, value: Decimal) -> None:
    try:
        to_money(value)
    except InvalidAmount as error:
        raise ValueError(f"{key}: {error}") from None
    if value < 0 or not has_at_most_two_decimals(value):
        raise ValueError(f"{key}: must be a non-negative amount with at most two decimals, got {value}")


class AmountTier(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    over: ConfigAmount
    points: Score


class RiskConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    amount_tiers: list[AmountTier]
    customer_risk_points: dict[RiskLevel, Score]
    max_score: Score

    def __post_init__(self):
        for index, tier in enumerate(self.amount_tiers):
            _require_money(f"risk.amount_tiers[{index}].over", tier.over)
        thresholds = [tier.over for tier in self.amount_tiers]
        if thresholds != sorted(set(thresholds), reverse=True):
            raise ValueError("risk.amount_tiers: thresholds must be distinct and listed highest first")
        points = [tier.points for tier in self.amount_tiers]
        if points != sorted(points, reverse=True):
            raise ValueError("risk.amount_tiers: a higher threshold must not add fewer points than a lower one")
        missing = {"LOW", "MEDIUM", "HIGH"} - set(self.customer_risk_points)
        if missing:
            raise ValueError(f"risk.customer_risk_points: missing {', '.join(sorted(missing))}")

    def highest_score(self) -> int:
        """The highest score these rules can give: the top tier's points plus the riskiest customer's, capped."""
        top_tier = max((tier.points for tier in self.amount_tiers), default=0)
        return min(top_tier + max(self.customer_risk_points.values()), self.max_score)


class ClearanceConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    manual_review_above_score: Score
    conditions_from_score: Score
    manual_review_above_amount: ConfigAmount

    def __post_init__(self):
        _require_money("clearance.manual_review_above_amount", self.manual_review_above_amount)
        if self.conditions_from_score > self.manual_review_above_score:
            raise ValueError("clearance.conditions_from_score: must not exceed clearance.manual_review_above_score")


class RulesConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    risk: RiskConfig
    clearance: ClearanceConfig


def parse_rules(text: bytes | str, source: str = "rules") -> RulesConfig:
    try:
        return msgspec.yaml.decode(text, type=RulesConfig, dec_hook=_decode_amount)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        raise RulesConfigError(f"{source}: {error}") from None


def load_rules(path: Path | str = DEFAULT_RULES_PATH) -> RulesConfig:
    try:
        text = Path(path).read_bytes()
    except OSError as error:
        raise RulesConfigError(f"{path}: cannot read the rules file ({error.strerror})") from None
    return parse_rules(text, source=str(path))


def unreachable_thresholds(rules: RulesConfig) -> list[str]:
    """What the rules can never do: a score threshold above the highest score they give. Valid, as the original
    system's own rules show (their highest score is 70, so no score is above 70), but worth saying."""
    highest, clearance = rules.risk.highest_score(), rules.clearance
    notes = []
    if highest <= clearance.manual_review_above_score:
        notes.append(f"the highest risk score these rules give is {highest}, so no score is above "
                     f"clearance.manual_review_above_score ({clearance.manual_review_above_score}): only amounts "
                     f"above {clearance.manual_review_above_amount} go to manual review")
    if highest < clearance.conditions_from_score:
        notes.append(f"the highest risk score these rules give is {highest}, below "
                     f"clearance.conditions_from_score ({clearance.conditions_from_score}): nothing is cleared "
                     "with conditions")
    return notes


def main(argv: list[str]) -> int:
    path = argv[0] if argv else DEFAULT_RULES_PATH
    try:
        rules = load_rules(path)
    except RulesConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{path}: valid")
    for note in unreachable_thresholds(rules):
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
