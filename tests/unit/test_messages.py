"""The versioned Kafka message contracts: typed decoding with precise errors, and checked-in JSON Schemas."""

import json
import re
from datetime import UTC, datetime
from decimal import Decimal

import msgspec
import pytest

from ledgerflow.core.messages import (ClearedV1, Customer, InvalidMessage, TransactionV1, decode_cleared,
                                      decode_transaction, encode, json_schema_documents)
from ledgerflow.core.reasons import ReasonCode
from ledgerflow.core.states import Status
from tests.conftest import REPO_ROOT

JOHN = Customer("CUST001", "John Doe", "LOW")
JANE = Customer("CUST002", "Jane Smith", "MEDIUM")


def transaction(**override) -> TransactionV1:
    fields = dict(transaction_id="TXN001", amount=Decimal("1000.00"), from_account="ACC001", to_account="ACC002",
                  transaction_type="TRANSFER", description="Monthly payment",
                  created_at=datetime(2026, 11, 25, 9, 30, tzinfo=UTC), from_customer=JOHN, to_customer=JANE,
                  from_account_type="CHECKING", to_account_type="SAVINGS", from_balance=Decimal("50000.00"),
                  to_balance=Decimal("25000.00"), risk_score=20)
    return TransactionV1(**{**fields, **override})


def as_json(message) -> dict:
    return json.loads(encode(message))


def test_a_transaction_round_trips_with_amounts_as_decimal_strings():
    message = transaction()
    data = encode(message)

    assert decode_transaction(data) == message
    assert as_json(message)["schema"] == "ledgerflow.transaction.v1"
    assert as_json(message)["amount"] == "1000.00"
    assert as_json(message)["from_balance"] == "50000.00"


def test_an_amount_written_as_a_json_number_is_read_exactly_never_as_a_float():
    document = as_json(transaction())
    data = json.dumps(document).replace('"amount": "1000.00"', '"amount": 0.1000000000000000000000000001')
    assert '"amount": 0.1' in data
    assert decode_transaction(data.encode()).amount == Decimal("0.1000000000000000000000000001")


def test_a_cleared_message_round_trips():
    message = ClearedV1(transaction_id="TXN001", status=Status.CLEARED_WITH_CONDITIONS,
                        reason_code=ReasonCode.CLEARED_WITH_CONDITIONS, reason="risk score 45 is between 40 and 70",
                        amount=Decimal("6000.00"), from_account="ACC001", to_account="ACC002", risk_score=45,
                        from_customer=JOHN, to_customer=JANE, available_balance=Decimal("50000.00"),
                        cleared_at=datetime(2026, 11, 25, 9, 31, tzinfo=UTC))
    assert decode_cleared(encode(message)) == message


@pytest.mark.parametrize(("change", "reason"), [
    (lambda d: d.pop("transaction_id"), "missing required field `transaction_id`"),
    (lambda d: d.update(amount="ten"), "Invalid decimal string - at `$.amount`"),
    (lambda d: d.update(amount="NaN"), "`amount`: NaN is not a finite amount"),
    (lambda d: d.update(amount="1e20"), "exceeds the largest amount"),
    # past the decimal context's exponent range: abs() would raise Overflow, and the batch would fail for good
    (lambda d: d.update(amount="1E+1000000"), "`amount`: 1E+1000000 exceeds the largest amount"),
    (lambda d: d.update(from_balance="-1E+1000000"), "`from_balance`: -1E+1000000 exceeds the largest amount"),
    (lambda d: d.update(risk_score=101), "Expected `int` <= 100 - at `$.risk_score`"),
    (lambda d: d.update(transaction_id=""), "Expected `str` of length >= 1 - at `$.transaction_id`"),
    (lambda d: d.update(created_at="2026-11-25T09:30:00"), "Expected `datetime` with a timezone component - at `$.created_at`"),
    (lambda d: d["from_customer"].update(risk_level="EXTREME"), "at `$.from_customer.risk_level`"),
    (lambda d: d.update(schema="ledgerflow.transaction.v9"), "Invalid value 'ledgerflow.transaction.v9'"),
])
def test_an_invalid_transaction_gives_a_precise_reason(change, reason):
    document = as_json(transaction())
    change(document)

    result = decode_transaction(json.dumps(document).encode())

    assert isinstance(result, InvalidMessage)
    assert reason in result.reason


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("status", "settled", "`status` settled is not a published clearance outcome"),
    # past the decimal context's exponent range: abs() would raise Overflow, and the batch would fail for good
    ("available_balance", "1E+1000000", "`available_balance`: 1E+1000000 exceeds the largest amount, 9999999999999.99"),
])
def test_an_invalid_cleared_message_gives_a_precise_reason(field, value, reason):
    document = json.loads(encode(ClearedV1(
        transaction_id="T", status=Status.REJECTED, reason_code=ReasonCode.INSUFFICIENT_FUNDS, reason="r",
        amount=Decimal("1.00"), from_account="A", to_account="B", risk_score=0, from_customer=JOHN,
        to_customer=JANE, available_balance=None, cleared_at=datetime(2026, 1, 1, tzinfo=UTC))))
    document[field] = value

    result = decode_cleared(json.dumps(document).encode())

    assert result == InvalidMessage(reason)


@pytest.mark.parametrize(("override", "reason"), [
    ({"created_at": datetime(2026, 11, 25, 9, 30)}, "`created_at` must carry a UTC offset"),
    ({"amount": Decimal("Infinity")}, "`amount`: Infinity is not a finite amount"),
    ({"to_balance": Decimal("1e13")}, "`to_balance`: 1E+13 exceeds the largest amount"),
])
def test_a_message_built_in_python_is_checked_as_a_decoded_one_is(override, reason):
    with pytest.raises(ValueError, match=re.escape(reason)):
        transaction(**override)


@pytest.mark.parametrize("data", [b"", b"not json", b"\xff\xfe\x00", b"[]", b"{}", b'{"schema": 1}',
                                  b'{"unknown": ' + b"[" * 1000 + b"]" * 1000 + b"}"])  # 2 KB, too deep to decode
def test_garbage_is_an_invalid_message_not_an_exception(data):
    assert isinstance(decode_transaction(data), InvalidMessage)
    assert isinstance(decode_cleared(data), InvalidMessage)


def test_invalid_utf8_inside_a_string_is_an_invalid_message_not_an_exception():
    # msgspec raises UnicodeDecodeError, not a DecodeError, for bytes that are not UTF-8 inside a string
    data = encode(transaction(description="caf\u00e9")).replace("caf\u00e9".encode(), b"caf\xff")

    decoded = decode_transaction(data)

    assert isinstance(decoded, InvalidMessage) and "UTF-8" in decoded.reason


@pytest.mark.parametrize(("identifier", "where"), [
    (b'"TXN001"', "transaction_id"), (b'"ACC001"', "from_account"), (b'"ACC002"', "to_account"),
    (b'"CUST002"', "customer_id")])
def test_an_identifier_with_nul_is_invalid_as_postgresql_cannot_store_it(identifier, where):
    data = encode(transaction()).replace(identifier, identifier[:-1] + b'\\u0000"')

    decoded = decode_transaction(data)

    nested = " - at `$.to_customer`" if where == "customer_id" else ""
    assert decoded == InvalidMessage(f"`{where}` contains NUL, which PostgreSQL cannot store{nested}")


def test_a_transaction_message_is_not_a_cleared_message():
    assert isinstance(decode_cleared(encode(transaction())), InvalidMessage)


def test_the_checked_in_json_schemas_match_the_message_definitions():
    for name, text in json_schema_documents().items():
        checked_in = REPO_ROOT / "include" / "schemas" / name
        assert checked_in.read_text() == text, f"{name} is stale: run `make schemas`"


def test_the_json_schema_describes_amounts_as_decimal_strings():
    schema = msgspec.json.schema(TransactionV1)
    amount = schema["$defs"]["TransactionV1"]["properties"]["amount"]
    assert amount == {"type": "string", "format": "decimal"}
